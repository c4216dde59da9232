"""``python -m mdfast.experiments.mnist_demo``: the same as ``python -m
mdfast.experiments.mnist.demo`` (``make demo``), kept for the command documented before the MNIST
experiment became a package."""

from mdfast.experiments.mnist.demo import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    main()
