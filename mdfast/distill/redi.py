"""ReDi / IM-ReDi: rectify a teacher by training on its own couplings.

Coupling generation (:func:`generate_coupling`, IMDM's ``generate_reflow_dataset``): a random
subset of ``pairs`` training sequences x₀; per sequence a time t ~ U(0, 1) (``perturbed``, the
perturbed coupling; t = 1 otherwise), x_t = x₀ with each token masked with probability t, and an
ε seed in [0, 2^31); the teacher samples x̂₀ from (x_t, t) with :func:`mdfast.sampling.imdm`
(``steps`` steps on its grid scaled by t, ε from the seed). t, the mask and the ε seed of pair i
are keyed noise of :class:`mdfast.rng.NoiseKey` (run ``seed``, step 0, sample index i) with
purposes TIME, MASK and EPSILON (id ``"seed"``); the subset is the order of ``Purpose.BATCH``
uniforms over the source rows; the sampler of chunk c (rows [c·B, (c+1)·B)) runs with the Philox
cursor of ``stream_seed(seed, "redi-sampler", c)``. So chunks can go to any process (chunk c to
rank c mod W under torchrun) and the file is the same for any number of processes with the same
``batch_size``.

The teacher's ε redraws read the sample's seeded stream (:mod:`mdfast.sampling.imdm`), so the
whole ε path of a pair is a function of its stored seed; the seed code redraws unseeded (only the
initial ε is reproducible there). With ``fix_eps`` the teacher never redraws.

Training (:class:`ReDi`, IMDM's ``IMReDi.nll``): MDLM's NELBO towards x̂₀ at the stored x_t and
t (weight −α'/(1 − α) at t, masked positions only), with the ε regenerated from the stored seed
and kept (no reset), or a fresh ε (``ignore_seed``, the ablation). Without an ε branch (an MDLM
student) it is plain ReDi.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist

from mdfast import ops, rng
from mdfast.diffusion.base import token_mean
from mdfast.diffusion.imdm import EPS_SEEDS, EPS_STREAM_NAME
from mdfast.diffusion.mdlm import MDLM
from mdfast.distill.coupling import CouplingWriter
from mdfast.sampling.imdm import imdm
from mdfast.train.data import StepBatches, collate

__all__ = ["ReDi", "generate_coupling"]


class ReDi(MDLM):
    """(IM-)ReDi objective on coupling batches ``{"input_ids": x̂₀, "xt", "t", "eps_seed"}``
    (:class:`mdfast.distill.coupling.CouplingFile`); see the module docstring."""

    def __init__(self, model, mask_index: int, *, ignore_seed: bool = False, **mdlm_kwargs):
        super().__init__(model, mask_index, **mdlm_kwargs)
        self.ignore_seed = ignore_seed
        self.imdm = hasattr(model, "eps_from_seeds")

    def forward(self, batch):
        if not isinstance(batch, dict) or not {"xt", "t", "eps_seed"} <= set(batch):
            raise ValueError(
                "mdfast: the redi objective trains on a coupling file (data.name=coupling, "
                "data.path=DIR made by mdfast distill redi-data); got a batch without "
                "'xt' / 't' / 'eps_seed'"
            )
        x0, xt = batch["input_ids"], batch["xt"]
        t = batch["t"].to(torch.float32)
        sigma, _ = self.schedule.sigma(t)
        kw = {}
        if self.imdm:
            B, L = xt.shape
            if self.ignore_seed:
                eps = self.model.draw_eps((B, L), xt.device)
            else:
                eps = self.model.eps_from_seeds(batch["eps_seed"], L).to(xt.device)
            kw["eps"] = eps
        loss = token_mean(self.per_token(x0, xt, t, sigma, **kw), batch.get("attention_mask"))
        masked = (xt == self.mask_index).float().mean()
        return loss, {"nelbo": loss.detach(), "masked_frac": masked}


def _rows(source, idx: torch.Tensor) -> torch.Tensor:
    b = collate(source, idx)
    x = b["input_ids"] if isinstance(b, dict) else (b[0] if isinstance(b, (list, tuple)) else b)
    return x.to(torch.int64)


@torch.no_grad()
def generate_coupling(
    teacher,
    source,
    out_dir: str,
    *,
    pairs: int,
    mask_index: int,
    model_vocab_size: int,
    steps: int,
    batch_size: int = 128,
    seed: int = 42,
    perturbed: bool = True,
    fix_eps: bool = False,
    header: dict | None = None,
    rank: int = 0,
    world: int = 1,
    device=None,
    overwrite: bool = False,
    progress: bool = False,
    sampler_options: dict | None = None,
) -> dict | None:
    """Write the coupling of ``pairs`` sequences of ``source`` (a dataset of token rows: tensor,
    dict with ``input_ids``, or map-style) sampled by ``teacher`` into ``out_dir`` (see the module
    docstring). Under torchrun every rank calls it with its ``rank`` / ``world`` (a process
    group must be initialised); rank 0 returns the header, the others None."""
    n_source = StepBatches(source, 1, shuffle=False).n
    if isinstance(pairs, bool) or not isinstance(pairs, int) or not 0 < pairs <= n_source:
        raise ValueError(
            f"mdfast: option 'data.pairs' must be in [1, {n_source}] (the source's rows), got "
            f"{pairs!r}"
        )
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"mdfast: options 'data.teacher_steps' and 'data.gen_batch_size' must be >= 1, got "
            f"{steps} and {batch_size}"
        )
    dev = torch.device("cpu") if device is None else torch.device(device)
    length = _rows(source, torch.zeros(1, dtype=torch.int64)).shape[-1]
    order = ops.uniform((n_source,), rng.stream_seed(seed, rng.Purpose.BATCH, "redi-subset"), 0)
    subset = order.argsort()[:pairs]
    key = rng.NoiseKey.for_batch(seed, 0, pairs)
    ts = key.uniform(rng.Purpose.TIME) if perturbed else torch.ones(pairs, dtype=torch.float64)
    seeds = (key.uniform(rng.Purpose.EPSILON, (), "seed") * EPS_SEEDS).floor().to(torch.int64)
    seeds.clamp_(0, EPS_SEEDS - 1)
    writer = CouplingWriter(out_dir, pairs, length, model_vocab_size)
    if rank == 0:
        writer.create(overwrite=overwrite)
    if world > 1:
        dist.barrier()
    chunks = math.ceil(pairs / batch_size)
    mine = range(rank, chunks, world)
    for i, c in enumerate(mine):
        lo, hi = c * batch_size, min(pairs, (c + 1) * batch_size)
        x0 = _rows(source, subset[lo:hi]).to(dev)
        if x0.shape[-1] != length:
            raise ValueError(f"mdfast: source rows have lengths {length} and {x0.shape[-1]}")
        t = ts[lo:hi].to(dev)
        u = key.select(torch.arange(lo, hi)).uniform(rng.Purpose.MASK, length, device=dev)
        xt = torch.where(u < t[:, None], mask_index, x0)
        res = imdm(teacher, batch_size=hi - lo, length=length, mask_index=mask_index, steps=steps,
                   seed=rng.stream_seed(seed, "redi-sampler", c), eps_seeds=seeds[lo:hi].to(dev),
                   x_start=xt, t_start=t, fix_eps=fix_eps, device=dev,
                   **(sampler_options or {}))  # fmt: skip
        writer.write(lo, xt, res.x, ts[lo:hi], seeds[lo:hi])
        if progress and rank == 0:
            sys.stderr.write(f"\rredi-data: chunk {i + 1}/{len(mine)} on rank 0 ({chunks} in all)")
            sys.stderr.flush()
    if progress and rank == 0:
        sys.stderr.write("\n")
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    noise = {}
    if hasattr(teacher, "noise_dim"):
        noise = {"noise_dim": int(teacher.noise_dim),
                 "noise_scale": float(getattr(teacher, "noise_scale", 1.0))}  # fmt: skip
    full = {"mask_id": mask_index, "eps_stream": EPS_STREAM_NAME, **noise, "teacher_steps": steps,
            "perturbed": perturbed, "fix_eps": fix_eps, "seed": seed, "gen_batch_size": batch_size,
            "source_rows": n_source, **(header or {})}  # fmt: skip
    return writer.finish(full)
