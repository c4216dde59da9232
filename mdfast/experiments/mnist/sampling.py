"""Sampling binarized digits with :mod:`mdfast.sampling` (or the seed-style reference sampler)."""

from __future__ import annotations

import torch

from mdfast.experiments.mnist.data import MASK, NUM_PIXELS
from mdfast.experiments.mnist.device import pick_device

__all__ = ["sample"]


def sample(
    model: torch.nn.Module,
    num_samples: int,
    *,
    steps: int = 40,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 256,
    sampler: str = "mdfast",
) -> torch.Tensor:
    """Binarized digits int64 [num_samples, 28, 28] from ``steps`` ancestral steps on MDLM's grid
    t_k = linspace(1, 1e-5, steps + 1) with α_t = 1 − t: a masked pixel stays masked with
    probability (1 − α_s)/(1 − α_t) = s/t, else takes a value drawn from the model (the seed kept
    it masked with probability s, which unmasks almost everything in the first few steps).

    ``sampler="mdfast"``: :func:`mdfast.sampling.ddpm_cache` (fused ``mask_step`` kernel, exact
    fp64 draws; the denoiser reads only x, so its output is reused while x is unchanged).
    ``sampler="reference"``: the seed-style reference :func:`mdfast.baselines.seed_sample`
    (MDLM's ``_ddpm_caching_update``: materialised float64 posterior over all classes) — the
    same chain, the baseline for timing.

    Batch i of the job samples with the seed ``rng.stream_seed(seed, Purpose.BATCH, i)``.
    """
    from mdfast import baselines, rng, sampling

    if sampler not in ("mdfast", "reference"):
        raise ValueError(
            f"mdfast: argument 'sampler' must be 'mdfast' or 'reference', got {sampler!r}"
        )
    dev = pick_device(device)
    model = model.to(dev).eval()
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, num_samples, batch_size)):
            b = min(batch_size, num_samples - start)
            batch_seed = rng.stream_seed(seed, rng.Purpose.BATCH, i)
            kw = {"batch_size": b, "length": NUM_PIXELS, "mask_index": MASK, "steps": steps}
            if sampler == "mdfast":
                x = sampling.ddpm_cache(
                    model, **kw, schedule="linear", seed=batch_seed, device=dev
                ).x
            else:
                gen = torch.Generator(device=dev).manual_seed(batch_seed)
                x, _ = baselines.seed_sample(
                    model, **kw, sampler="ddpm_cache", generator=gen, device=dev
                )
            out.append(x.view(b, 28, 28).cpu())
    return torch.cat(out)
