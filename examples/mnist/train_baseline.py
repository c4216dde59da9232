"""Train the baseline masked diffusion model on binarized MNIST (the seed README's
`train_baseline.py`).

    python examples/mnist/train_baseline.py --n_epochs 10 --device cpu --output_folder outputs

Checkpoints: `baseline_mnist_epoch{N}.pth` every 5 epochs and `baseline_mnist_final.pth`.
See `python examples/mnist/train_baseline.py --help` and `docs/mnist.md`.
"""

from mdfast.experiments.mnist import train_main

if __name__ == "__main__":
    train_main("baseline")
