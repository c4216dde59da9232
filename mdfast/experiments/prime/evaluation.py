"""MDM-Prime evaluation: sampling to files and grids, FID, NLL / bits per dim, imputation.

Every job runs in one process or under ``torchrun`` (each rank takes every W-th batch of global
sample indices, each batch with its own Philox seed: :func:`mdfast.sampling.prime.batch_plan`),
so the samples do not depend on the number of processes.

* :func:`generate`: n samples in batches; each batch saved as ``batch_<index>.npy`` (uint8
  [b, H, W, 3], the seed's ``.npy`` layout) under ``out_dir``.
* :func:`fid`: FID of n samples against the reference statistics of the real images (CIFAR-10
  train or ImageNet-32 val, 50k, the seed's protocol), computed once and cached as ``.npz``;
  Inception-v3 weights from a local file (:mod:`mdfast.metrics.fid`). 2k samples for sweeps,
  50k for final numbers (FID is biased upwards at small n: compare equal n only).
* :func:`nll_bpd`: the ``elbo`` NELBO with K stratified times per image, mean and standard error
  of bits per dim over the images.
* :func:`imputation`: completions of real images from the digits at ``subtoken_index``, one PNG
  grid per image (original, the fixed digits alone, completions).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mdfast.data.images import save_image_grid
from mdfast.sampling.prime import BatchJob, PrimeSamplerSettings, sample_batches

__all__ = [
    "draw_samples",
    "fid",
    "generate",
    "imputation",
    "nll_bpd",
    "reference_stats",
    "run_sample",
    "sampler_settings",
]


def _rank0() -> bool:
    d = torch.distributed
    return not (d.is_available() and d.is_initialized()) or d.get_rank() == 0


def sampler_settings(sample: dict) -> PrimeSamplerSettings:
    """The sampler of a resolved ``sample`` section (``steps`` = nfe)."""
    return PrimeSamplerSettings(
        nfe=int(sample["steps"]),
        carry_over=bool(sample["carry_over"]),
        temperature_parameters=tuple(sample["temperature_parameters"]),
        corrector_parameters=tuple(sample["corrector_parameters"]),
        timestep_parameters=tuple(sample["timestep_parameters"]),
        timestep_all_at_last=bool(sample["timestep_all_at_last"]),
        seed=int(sample["seed"]),
    )


def _to_npy(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).cpu().numpy() if images.dim() == 4 else images.cpu().numpy()


def generate(
    objective,
    settings: PrimeSamplerSettings,
    num_samples: int,
    batch_size: int,
    *,
    out_dir: str | os.PathLike | None = None,
    on_batch: Callable[[BatchJob, torch.Tensor], None] | None = None,
    length: int | None = None,
    progress: bool = True,
) -> int:
    """Draw ``num_samples`` samples (this rank's batches); returns how many this rank drew."""
    device = next(objective.parameters()).device
    done = 0

    def run(job: BatchJob) -> torch.Tensor:
        s = replace(settings, seed=job.seed)
        return objective.sample(job.size, s, length=length, device=device, progress=progress)

    for job, images in sample_batches(run, num_samples, batch_size, settings.seed):
        if out_dir is not None:
            path = Path(out_dir) / f"batch_{job.index:05d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp.npy")
            np.save(tmp, _to_npy(images))
            tmp.replace(path)
        if on_batch is not None:
            on_batch(job, images)
        done += job.size
    return done


def draw_samples(
    objective,
    settings: PrimeSamplerSettings,
    num_samples: int,
    batch_size: int,
    *,
    length: int | None = None,
) -> torch.Tensor:
    """:func:`generate` in one process, the samples returned in global order (on the CPU)."""
    out: list[torch.Tensor] = []
    generate(objective, settings, num_samples, batch_size, length=length, progress=False,
             on_batch=lambda job, x: out.append(x.cpu()))  # fmt: skip
    return torch.cat(out)


def run_sample(cfg: dict, objective, checkpoint) -> int:
    """``mdfast sample`` for Prime runs (``objective`` on its device, the process group up):
    ``sample.num_samples`` samples into ``sample.out`` (default
    ``<train.out_dir>/samples_nfe<steps>``) and, for images, ``grid.png`` of the first batch;
    text runs print the first samples decoded with the run's tokenizer;
    ``sample.subtoken_index`` switches to imputation of held-out images."""
    sp = cfg["sample"]
    settings = sampler_settings(sp)
    out = Path(sp["out"] or Path(cfg["train"]["out_dir"]) / f"samples_nfe{settings.nfe}")
    if sp["subtoken_index"]:
        from mdfast.experiments.build import build_data

        _, val = build_data(cfg["data"])
        images = val["input_ids"][: sp["num_samples"]]
        result = imputation(
            objective,
            images,
            sp["subtoken_index"],
            settings,
            per_image=sp["batch_size"],
            out_dir=out,
        )
        if _rank0():
            print(json.dumps({"checkpoint": checkpoint, "mode": "imputation", **result}))
        return 0
    first: list[torch.Tensor] = []

    def keep_first(job: BatchJob, images: torch.Tensor) -> None:
        if job.index == 0:
            first.append(images.cpu())

    length = sp["length"] or None
    n = generate(
        objective,
        settings,
        sp["num_samples"],
        sp["batch_size"],
        out_dir=out,
        on_batch=keep_first,
        length=length,
    )
    grid, text = None, None
    if first and sp["grid"] and first[0].dim() == 4:
        grid = str(save_image_grid(first[0][:64], out / "grid.png"))
    if first and first[0].dim() == 2 and cfg["data"].get("tokenizer"):
        from mdfast.data.text import load_tokenizer

        tok = load_tokenizer(cfg["data"]["tokenizer"])
        text = [tok.decode(row) for row in first[0][:2].tolist()]
    if _rank0():
        print(
            json.dumps(
                {
                    "checkpoint": checkpoint,
                    "sampler": "prime",
                    "nfe": settings.nfe,
                    "samples_this_rank": n,
                    "out": str(out),
                    "grid": grid,
                    "text": text,
                }
            )
        )
    return 0


def reference_stats(metric, dataset: str, images_fn, cache_dir: str | os.PathLike | None):
    """FID statistics of the real images (``images_fn()`` loads them), cached under
    ``cache_dir`` (default ``$MDFAST_CACHE_DIR/fid`` or ``~/.cache/mdfast/fid``)."""
    if cache_dir is None:
        root = os.environ.get("MDFAST_CACHE_DIR", Path.home() / ".cache" / "mdfast")
        cache_dir = Path(root) / "fid"
    cache = Path(cache_dir) / f"{dataset}_{metric.name}.npz"
    return metric.reference_stats(images_fn, cache=cache, meta={"dataset": dataset})


def fid(
    objective,
    settings: PrimeSamplerSettings,
    num_samples: int,
    batch_size: int,
    *,
    dataset: str,
    reference_images: Callable[[], torch.Tensor],
    weights: str | None = None,
    extractor=None,
    cache_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict:
    """FID of ``num_samples`` samples against ``dataset``'s cached reference statistics."""
    from mdfast.metrics.fid import FID
    from mdfast.metrics.frechet import GaussianStats

    device = next(objective.parameters()).device
    metric = FID(extractor, weights=weights, device=device, batch_size=batch_size)
    reference = reference_stats(metric, dataset, reference_images, cache_dir)
    stats: list[GaussianStats] = []

    def update(job: BatchJob, images: torch.Tensor) -> None:
        f = metric.features(images)
        if not stats:
            stats.append(GaussianStats(f.shape[1], {"network": metric.name}))
        stats[0].update(f)

    generate(objective, settings, num_samples, batch_size, out_dir=out_dir, on_batch=update)
    if not stats:
        raise ValueError("mdfast: this rank drew no samples; lower the number of processes")
    stats[0].all_reduce()
    return {"fid": stats[0].frechet(reference), "samples": stats[0].n, "reference_n": reference.n}


@torch.no_grad()
def nll_bpd(
    objective,
    images: torch.Tensor,
    *,
    num_times: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    first_index: int = 0,
    progress: bool = True,
) -> dict:
    """Bits per dim (valid ELBO bound) of ``images``: mean and standard error over images, and
    the NLL in nats per image. Shards the images over ``torch.distributed`` ranks; image i's
    times and masks are keyed by (``seed``, ``first_index`` + i), so the result does not depend
    on ``batch_size``, the number of ranks or how the split is cut into parts."""
    d = torch.distributed
    rank, world = (
        (d.get_rank(), d.get_world_size()) if d.is_available() and d.is_initialized() else (0, 1)
    )
    device = next(objective.parameters()).device
    bpd, nll = [], []
    starts = range(rank * batch_size, images.shape[0], world * batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="NLL", unit="batch")
    for s in starts:
        index = torch.arange(s, min(s + batch_size, images.shape[0]))
        out = objective.nll(images[index].to(device), num_times=num_times, seed=seed, index=index)
        bpd.append(out["bits_per_dim"].cpu())
        nll.append(out["nll"].cpu())
    local = (
        torch.stack(
            [
                torch.cat(bpd).sum(),
                torch.cat(bpd).square().sum(),
                torch.cat(nll).sum(),
                torch.tensor(float(sum(len(b) for b in bpd))),
            ]
        ).double()
        if bpd
        else torch.zeros(4, dtype=torch.float64)
    )
    if world > 1:
        local = local.to(device)
        d.all_reduce(local)
    s1, s2, snll, n = local.cpu().tolist()
    mean = s1 / n
    var = max(s2 / n - mean**2, 0.0) * n / max(n - 1, 1)
    return {
        "bits_per_dim": mean,
        "stderr": math.sqrt(var / n),
        "nll_nats": snll / n,
        "images": int(n),
        "num_times": num_times,
    }


@torch.no_grad()
def imputation(
    objective,
    images: torch.Tensor,
    subtoken_index,
    settings: PrimeSamplerSettings,
    *,
    per_image: int = 8,
    out_dir: str | os.PathLike | None = None,
) -> dict:
    """For each real image, ``per_image`` completions from its digits at ``subtoken_index``
    (the same Philox seed per image index whatever the process count). With ``out_dir``, one
    grid per image: the original, the fixed digits alone (the other digits 0), the completions."""
    d = torch.distributed
    rank, world = (
        (d.get_rank(), d.get_world_size()) if d.is_available() and d.is_initialized() else (0, 1)
    )
    device = next(objective.parameters()).device
    grids = []
    for i in range(rank, images.shape[0], world):
        x = images[i : i + 1].to(device).expand(per_image, *images.shape[1:])
        seed = (settings.seed * 1_000_003 + i) % (2**63)
        out, start = objective.impute(x, subtoken_index, replace(settings, seed=seed))
        fixed_only = objective.decode(torch.where(start == objective.process.mask_id, 0, start)[:1])
        if out_dir is not None and out.dim() == 4:
            row = torch.cat([images[i : i + 1].cpu(), fixed_only.cpu(), out.cpu()])
            grids.append(
                str(
                    save_image_grid(
                        row, Path(out_dir) / f"imputation_{i:05d}.png", nrow=row.shape[0]
                    )
                )
            )
    return {
        "images": images.shape[0],
        "per_image": per_image,
        "grids_this_rank": len(grids),
        "out": str(out_dir) if out_dir else None,
    }
