"""The machinery every sampler shares: the denoiser wrapper that counts calls and computes logits
only for requested rows, the MDLM time grid, the initial (optionally prefixed) all-mask x, and the
step loop over :func:`mdfast.ops.mask_step` with its KV-free cache of the denoiser output."""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass

import torch

from mdfast import ops
from mdfast.rng import PhiloxStream
from mdfast.sampling import keyed, schedules


@dataclass
class SampleResult:
    """Samples ``x`` [B, L] (int64), denoiser calls ``nfe``, reverse steps taken ``steps``, and
    ``sequences``: the sequences the denoiser evaluated over all calls (< nfe * B when a
    per-row cache refreshes only the rows that changed)."""

    x: torch.Tensor
    nfe: int
    steps: int
    sequences: int = 0


def _rng_kw(rng: PhiloxStream) -> dict:
    seed, offset = rng.next()
    return {"seed": seed, "offset": offset}


def _nvtx(name: str):
    if os.environ.get("MDFAST_NVTX") == "1" and torch.cuda.is_available():
        return torch.cuda.nvtx.range(name)
    return contextlib.nullcontext()


class _Denoiser:
    """Calls the model (full logits, or hidden states + output head) and counts the calls."""

    def __init__(self, model, time_conditioned: bool):
        self.model = model
        self.time_conditioned = time_conditioned
        self.split = hasattr(model, "hidden") and hasattr(model, "head")
        self.calls = 0
        self.sequences = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Logits [B, L, V], or hidden states [B, L, D] in split mode."""
        self.calls += 1
        self.sequences += x.shape[0]
        with _nvtx("denoise"):
            fn = self.model.hidden if self.split else self.model
            if self.time_conditioned:
                return fn(x, torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device))
            return fn(x)

    def rows(self, out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of flattened positions ``rows`` from a call's output."""
        flat = out.reshape(-1, out.shape[-1])[rows]
        return self.model.head(flat) if self.split else flat


@dataclass
class _Opts:
    mask_index: int
    temperature: float
    top_p: float
    top_k: int
    nucleus: str
    seeds: list | None = None  # per-sample streams (keyed mode), see mdfast.sampling.keyed

    def draw(self, temperature: float | None = None) -> dict:
        """The draw options of :func:`mdfast.ops.sample_x0` (mask class excluded)."""
        return {"temperature": self.temperature if temperature is None else temperature,
                "top_p": self.top_p, "top_k": self.top_k, "exclude_index": self.mask_index,
                "nucleus": self.nucleus}  # fmt: skip


def _init_x(batch_size, length, mask_index, prefix, device):
    """The all-mask x [B, L] with the fixed tokens written in, and the bool [B, L] mask of the
    fixed positions (None without any). ``prefix``: [P] or [B, P] token ids; an entry -1 is a
    free position, so a template with fixed tokens anywhere in its first P positions conditions
    on an infix as well."""
    x = torch.full((batch_size, length), mask_index, dtype=torch.int64, device=device)
    if prefix is None:
        return x, None
    prefix = torch.as_tensor(prefix, dtype=torch.int64, device=device)
    if prefix.dim() == 1:
        prefix = prefix.expand(batch_size, -1)
    P = prefix.shape[1]
    if P > length or prefix.shape[0] != batch_size:
        raise ValueError(
            "mdfast: argument 'prefix' must be [P] or [B, P] with P <= length, "
            f"got {list(prefix.shape)}"
        )
    if bool((prefix == mask_index).any()) or bool((prefix < -1).any()):
        raise ValueError("mdfast: argument 'prefix' must hold token ids (or -1 for free positions),"
                         " never the mask id")  # fmt: skip
    fixed = torch.zeros((batch_size, length), dtype=torch.bool, device=x.device)
    fixed[:, :P] = prefix >= 0
    x[:, :P] = torch.where(prefix >= 0, prefix, mask_index)
    return x, fixed


def _sample_rows(logits, rows, L, opts, rng, temperature=None):
    """sample_x0 of logits rows of flattened positions ``rows``: one call on the batch's stream,
    or (keyed mode) per sample on its own stream; either way one offset of ``rng``."""
    if opts.seeds is None:
        return ops.sample_x0(logits, None, **opts.draw(temperature), **_rng_kw(rng))
    _, offset = rng.next()
    return keyed.sample_rows(logits, rows // L, opts.seeds, offset, **opts.draw(temperature))


def _draw_rows(den, out, x, rows, opts, rng, conf=None):
    """Draw x0 for flattened positions ``rows`` of x (in place) from a denoiser output."""
    tok, prob = _sample_rows(den.rows(out, rows), rows, x.shape[1], opts, rng)
    x.view(-1)[rows] = tok
    if conf is not None:
        conf.view(-1)[rows] = -prob


def _noise_removal(den, out, x, t_final, opts, rng, sample: bool = False):
    """MDLM's final step: every position still masked takes the argmax of its x0 distribution
    (SEDD's denoiser step samples it instead)."""
    rows = (x == opts.mask_index).reshape(-1).nonzero()[:, 0]
    if rows.numel() == 0:
        return out
    if out is None:
        out = den(x, t_final)
    temperature = None if sample else 0.0
    tok, _ = _sample_rows(den.rows(out, rows), rows, x.shape[1], opts, rng, temperature)
    x.view(-1)[rows] = tok
    return out


def _mask_step(x, logits, opts, rng, **kw):
    """:func:`mdfast.ops.mask_step` on the batch's stream, or (keyed mode) per sample."""
    if opts.seeds is None:
        return ops.mask_step(x, logits, mask_index=opts.mask_index, **kw, **_rng_kw(rng))
    _, offset = rng.next()
    return keyed.mask_step_rows(x, logits, opts.seeds, offset, mask_index=opts.mask_index, **kw)


def _chain(den, x, plan, *, opts, rng, cache, fixed, conf_mode=False, per_row=False):
    """Run reverse steps ``plan`` = [(t, s, alpha_t, alpha_s, sigma)] with sigma None (MDLM),
    a float, or (conf_mode) sigma_max of ReMDM-conf; ``fixed`` (bool [B, L] or None): positions
    never remasked (conditioning tokens). Returns (x, last denoiser output or None).
    ``per_row``: refresh the cached output only for the batch rows whose x changed (written in
    place into the denoiser's previous output)."""
    out = None
    stale = None  # per_row: batch rows whose cached output is out of date
    conf = None
    if conf_mode:
        conf = torch.full(x.shape, float("-inf"), dtype=torch.float32, device=x.device)
    for t, _s, a_t, a_s, sigma in plan:
        reuse = out is not None and stale is None
        if out is None:
            out = den(x, t)
        elif stale is not None:
            idx = stale.nonzero()[:, 0]
            out[idx] = den(x[idx], t)
            stale = None
        remask = sigma
        if conf_mode:
            with _nvtx("remask"):
                w = torch.softmax(conf, dim=1).nan_to_num(0.0)  # rows with nothing decoded: 0
                remask = w.to(torch.float64) * sigma
        if fixed is not None and remask is not None:
            remask = torch.as_tensor(remask, dtype=torch.float64, device=x.device)
            remask = remask.expand(x.shape).masked_fill(fixed, 0.0)
        if remask is not None and not torch.is_tensor(remask) and remask == 0.0:
            remask = None
        with _nvtx("cache.reuse" if reuse else "sample"):
            if den.split:
                x_next, changed, conf_new = _mask_step(
                    x, None, opts, rng, alpha_t=a_t, alpha_s=a_s, remask=remask, confidence=conf
                )
                rows = (changed & (x == opts.mask_index)).reshape(-1).nonzero()[:, 0]
                if rows.numel() or opts.seeds is not None:  # keyed: the same offsets always
                    _draw_rows(den, out, x_next, rows, opts, rng, conf_new if conf_mode else None)
            else:
                x_next, changed, conf_new = _mask_step(
                    x, out, opts, rng, alpha_t=a_t, alpha_s=a_s, remask=remask, confidence=conf,
                    temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k,
                    nucleus=opts.nucleus,
                )  # fmt: skip
        if conf_mode:
            conf = conf_new
        if not cache:
            out = None
        elif per_row:
            rows_changed = changed.any(dim=1)
            if bool(rows_changed.all()):
                out = None
            elif bool(rows_changed.any()):
                stale = rows_changed
        elif bool(changed.any()):
            out = None
        x = x_next
    if stale is not None:
        out = None
    return x, out


def _grid(steps: int, eps: float) -> list[tuple[float, float]]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"mdfast: argument 'steps' must be a positive int, got {steps!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"mdfast: argument 'eps' must be in (0, 1), got {eps}")
    ts = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64).tolist()
    return list(itertools.pairwise(ts))


def _common(
    model,
    batch_size,
    length,
    mask_index,
    prefix,
    device,
    seed,
    time_conditioned,
    temperature,
    top_p,
    top_k,
    nucleus,
    sample_index=None,
):
    den = _Denoiser(model, time_conditioned)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"mdfast: argument 'seed' must be a non-negative int, got {seed!r}")
    rng = PhiloxStream(seed)
    x, P = _init_x(batch_size, length, mask_index, prefix, device)
    seeds = None
    if sample_index is not None:
        seeds = keyed.sample_seeds(seed, sample_index)
        if len(seeds) != batch_size:
            raise ValueError(
                f"mdfast: argument 'sample_index' must hold batch_size={batch_size} indices, got "
                f"{len(seeds)}"
            )
    opts = _Opts(mask_index, temperature, top_p, top_k, nucleus, seeds)
    return den, rng, x, P, opts


def grid_plan(steps: int, schedule: str, eps: float = 1e-5):
    """The steps (t, s, alpha_t, alpha_s, None) of the MDLM chain on linspace(1, eps, T + 1)."""
    return [
        (t, s, schedules.alpha(t, schedule), schedules.alpha(s, schedule), None)
        for t, s in _grid(steps, eps)
    ]
