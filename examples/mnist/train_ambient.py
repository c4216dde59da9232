"""Train the ambient masked diffusion model on binarized MNIST (the seed README's
`train_ambient.py`).

    python examples/mnist/train_ambient.py --n_epochs 10 --device cpu --output_folder outputs

Checkpoints: `ambient_mnist_epoch{N}.pth` every 5 epochs and `ambient_mnist_final.pth`.
See `python examples/mnist/train_ambient.py --help` and `docs/mnist.md`.
"""

from mdfast.experiments.mnist import train_main

if __name__ == "__main__":
    train_main("ambient")
