"""Evaluation of a binarized-MNIST denoiser: exact-ELBO bits/pixel of held-out clean digits (over
the whole time range, and over t < t_d alone: the levels below a corrupted data set's, which only
a consistency loss trains), and the digit Fréchet score and classifier confidence of its
samples."""

from __future__ import annotations

import torch

from mdfast.experiments.mnist import frechet
from mdfast.experiments.mnist.data import MASK, BinarizedMNIST, source_args
from mdfast.experiments.mnist.device import pick_device
from mdfast.experiments.mnist.sampling import sample
from mdfast.metrics.elbo import nelbo_bits_per_token

__all__ = ["evaluate"]


def evaluate(
    model: torch.nn.Module,
    *,
    num_samples: int = 500,
    steps: int = 40,
    data: str | None = "shipped",
    device: str | None = None,
    seed: int = 0,
    elbo_repeats: int = 1,
    samples: torch.Tensor | None = None,
    below: tuple[float, ...] = (),
) -> dict:
    """``bits_per_pixel`` (± ``bits_per_pixel_se``) of the held-out clean digits, and on
    ``num_samples`` samples: ``frechet`` (digit-classifier features vs all held-out digits),
    ``confidence`` and ``class_entropy_bits``.

    ``below``: levels t_d in (0, 1]; for each, ``bits_per_pixel_below_{t_d}`` (± ``…_se``): the
    part of the NELBO from t < t_d (:func:`mdfast.metrics.elbo.nelbo_bits_per_token` with
    ``t_max``; a valid bound on the NLL of the pixels hidden at t_d given the others, still per
    pixel of the image, so it is the share of ``bits_per_pixel`` that the levels below t_d
    contribute)."""
    dev = pick_device(device)
    model = model.to(dev).eval()
    test = BinarizedMNIST(train=False, **source_args(data)).tokens
    bpp, se = nelbo_bits_per_token(
        model, test.to(dev), mask_index=MASK, repeats=elbo_repeats, seed=seed
    )
    parts = {}
    for t_d in below:
        part, part_se = nelbo_bits_per_token(
            model, test.to(dev), mask_index=MASK, repeats=elbo_repeats, seed=seed, t_max=t_d
        )
        parts[f"bits_per_pixel_below_{t_d:g}"] = part
        parts[f"bits_per_pixel_below_{t_d:g}_se"] = part_se
    if samples is None:
        samples = sample(model, num_samples, steps=steps, seed=seed, device=str(dev))
    clf = frechet.load_classifier()
    # All held-out digits as the reference (the shipped split is sorted by label: a prefix of it
    # would hold only the low digits).
    return {
        "bits_per_pixel": bpp,
        "bits_per_pixel_se": se,
        **parts,
        "frechet": frechet.digit_frechet(samples, test, clf),
        **frechet.classifier_confidence(samples, clf),
        "num_samples": samples.shape[0],
    }
