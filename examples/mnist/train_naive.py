"""Train the naive comparison model on binarized MNIST: plain MDLM on the corrupted digits, the
unobserved pixels treated as masked (not in the seed; added as the baseline the ambient
objective must beat).

    python examples/mnist/train_naive.py --n_epochs 10 --masked_fraction 0.9 --output_folder outputs

Checkpoints: `naive_mnist_epoch{N}.pth` every 5 epochs and `naive_mnist_final.pth`.
"""

from mdfast.experiments.mnist import train_main

if __name__ == "__main__":
    train_main("naive")
