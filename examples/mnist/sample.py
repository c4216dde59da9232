"""Sample binarized digits from a checkpoint (the seed README's `sample.py`, with `--checkpoint`
instead of editing the script).

    python examples/mnist/sample.py --checkpoint outputs/ambient_mnist_final.pth --steps 40 -b 16

Writes `<experiment>_generated.png` next to the checkpoint (or `--output`).
"""

from mdfast.experiments.mnist import sample_main

if __name__ == "__main__":
    sample_main()
