"""The machinery every sampler shares: the denoiser wrapper that counts calls and computes logits
only for requested rows, the MDLM time grid, the initial (optionally prefixed) all-mask x, and the
step loop over :func:`mdfast.ops.mask_step` with its KV-free cache of the denoiser output.

Noise: op call k of a run draws at (seed, offset k) of the batch's Philox stream
(:class:`mdfast.rng.PhiloxStream`), or, when the settings carry ``sample_index``, per sample:
sample g's part of call k at step k of its keyed stream (:class:`mdfast.rng.SampleCursor`), one
op call per sample, so that sample g's tokens do not depend on the batch it runs in."""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass

import torch

from mdfast import ops
from mdfast.rng import PhiloxStream, SampleCursor
from mdfast.sampling.settings import SamplerSettings
from mdfast.schedules import alpha_at


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


def _init_x(st: SamplerSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The all-mask x [B, L] with the fixed tokens written in, and the bool [B, L] mask of the
    fixed positions (None without any). ``prefix``: [P] or [B, P] token ids; an entry -1 is a
    free position, so a template with fixed tokens anywhere in its first P positions conditions
    on an infix as well."""
    x = torch.full((st.batch_size, st.length), st.mask_index, dtype=torch.int64, device=st.device)
    if st.prefix is None:
        return x, None
    prefix = torch.as_tensor(st.prefix, dtype=torch.int64, device=st.device)
    if prefix.dim() == 1:
        prefix = prefix.expand(st.batch_size, -1)
    P = prefix.shape[1]
    if prefix.dim() != 2 or P > st.length or prefix.shape[0] != st.batch_size:
        raise ValueError(
            "mdfast: argument 'prefix' must be [P] or [B, P] with P <= length, "
            f"got {list(prefix.shape)}"
        )
    if bool((prefix == st.mask_index).any()) or bool((prefix < -1).any()):
        raise ValueError(
            "mdfast: argument 'prefix' must hold token ids (or -1 for free positions), never the "
            "mask id"
        )
    fixed = torch.zeros((st.batch_size, st.length), dtype=torch.bool, device=x.device)
    fixed[:, :P] = prefix >= 0
    x[:, :P] = torch.where(prefix >= 0, prefix, st.mask_index)
    return x, fixed if bool(fixed.any()) else None


def _draw_kw(st: SamplerSettings, temperature=None, exclude=None) -> dict:
    """The draw options of :func:`mdfast.ops.sample_x0` (the mask class excluded, or
    ``exclude``)."""
    return {
        "temperature": st.temperature if temperature is None else temperature,
        "top_p": st.top_p,
        "top_k": st.top_k,
        "exclude_index": st.mask_index if exclude is None else exclude,
        "nucleus": st.nucleus,
    }


def sample_x0_rows(logits, rows, length, st, rng, temperature=None, key=None, exclude=None):
    """:func:`mdfast.ops.sample_x0` of the logits rows [R, V] of flattened positions ``rows``
    (ascending): one call of the batch's stream, or (keyed) one call per sample on its key
    (``key``, default the cursor's next), row k of that call being the sample's k-th row here.
    Returns (token [R], prob [R])."""
    kw = _draw_kw(st, temperature, exclude)
    if not isinstance(rng, SampleCursor):
        return ops.sample_x0(logits, None, **kw, **_rng_kw(rng))
    args = (key or rng.next()).op_args(rng.purpose)
    tokens = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
    probs = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if logits.shape[0] == 0:
        return tokens, probs
    owners, counts = torch.unique_consecutive(rows // length, return_counts=True)
    start = 0
    for b, n in zip(owners.tolist(), counts.tolist(), strict=True):
        seed, offset = args[b]
        part = slice(start, start + n)
        tokens[part], probs[part] = ops.sample_x0(logits[part], None, **kw, seed=seed,
                                                  offset=offset)  # fmt: skip
        start += n
    return tokens, probs


def _mask_step(x, logits, st, rng, **kw):
    """:func:`mdfast.ops.mask_step` on the batch's stream, or (keyed) one call per sample
    (position l of sample b is element l of its call). ``remask``: None, a float, [B] or
    [B, L]."""
    if not isinstance(rng, SampleCursor):
        return ops.mask_step(x, logits, mask_index=st.mask_index, **kw, **_rng_kw(rng))
    args = rng.next().op_args(rng.purpose)
    remask, conf = kw.pop("remask", None), kw.pop("confidence", None)
    outs = []
    for b, (seed, offset) in enumerate(args):
        one = slice(b, b + 1)
        outs.append(ops.mask_step(
            x[one], None if logits is None else logits[one], mask_index=st.mask_index,
            remask=remask[one] if torch.is_tensor(remask) and remask.dim() else remask,
            confidence=None if conf is None else conf[one], seed=seed, offset=offset, **kw,
        ))  # fmt: skip
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


def _draw_rows(den, out, x, rows, st, rng, conf=None):
    """Draw x0 for flattened positions ``rows`` of x (in place) from a denoiser output."""
    tok, prob = sample_x0_rows(den.rows(out, rows), rows, x.shape[1], st, rng)
    x.view(-1)[rows] = tok
    if conf is not None:
        conf.view(-1)[rows] = -prob


def _noise_removal(den, out, x, t_final, st, rng, sample: bool = False):
    """MDLM's final step: every position still masked takes the argmax of its x0 distribution
    (SEDD's denoiser step samples it instead)."""
    rows = (x == st.mask_index).reshape(-1).nonzero()[:, 0]
    if rows.numel() == 0:
        return out
    if out is None:
        out = den(x, t_final)
    temperature = None if sample else 0.0
    tok, _ = sample_x0_rows(den.rows(out, rows), rows, x.shape[1], st, rng, temperature)
    x.view(-1)[rows] = tok
    return out


def _chain(den, x, plan, *, st, rng, cache, fixed, conf_mode=False, per_row=False):
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
                    x, None, st, rng, alpha_t=a_t, alpha_s=a_s, remask=remask, confidence=conf
                )
                rows = (changed & (x == st.mask_index)).reshape(-1).nonzero()[:, 0]
                # keyed: a draw every step, so a sample's offsets never depend on the others
                if rows.numel() or isinstance(rng, SampleCursor):
                    _draw_rows(den, out, x_next, rows, st, rng, conf_new if conf_mode else None)
            else:
                x_next, changed, conf_new = _mask_step(
                    x,
                    out,
                    st,
                    rng,
                    alpha_t=a_t,
                    alpha_s=a_s,
                    remask=remask,
                    confidence=conf,
                    temperature=st.temperature,
                    top_p=st.top_p,
                    top_k=st.top_k,
                    nucleus=st.nucleus,
                )
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


def _cursor(st: SamplerSettings) -> PhiloxStream | SampleCursor:
    """The run's noise cursor: the batch's Philox stream, or per sample keyed by
    ``st.sample_index``."""
    if st.sample_index is None:
        return PhiloxStream(st.seed)
    return SampleCursor(st.seed, st.sample_index)


def _start(model, st: SamplerSettings, time_conditioned: bool):
    """(denoiser wrapper, noise cursor (:func:`_cursor`), initial x, fixed-position mask)."""
    x, fixed = _init_x(st)
    return _Denoiser(model, time_conditioned), _cursor(st), x, fixed


def grid_plan(steps: int, schedule: str, eps: float = 1e-5):
    """The steps (t, s, alpha_t, alpha_s, None) of the MDLM chain on linspace(1, eps, T + 1)."""
    return [
        (t, s, alpha_at(t, schedule), alpha_at(s, schedule), None) for t, s in _grid(steps, eps)
    ]
