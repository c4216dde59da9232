"""``python -m mdfast.experiments.mnist_table``: the same as ``python -m
mdfast.experiments.mnist.table`` (the binarized-MNIST result table), kept for the command
documented before the MNIST experiment became a package."""

from mdfast.experiments.mnist.table import RUNS, main

__all__ = ["RUNS", "main"]

if __name__ == "__main__":
    main()
