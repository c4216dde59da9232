"""The seed codebases' own functions as written: MDLM / ReMDM's materialised sampling path and
SUBS loss, the plain ``F.cross_entropy`` formulation of a masked loss, and the few-line torch
samplers (Gumbel-argmax, multinomial, sort-based top-p) that sample_x0 replaces.

They reproduce what the seed code computes, defects included (a -1e6 "infinity", a B x L x V
posterior re-sampled at every cached step, ``torch.rand`` noise), so that benchmarks can measure
mdfast against them and equivalence tests and experiments can compare with them in one process.
They are not the ops' twins: those are :mod:`mdfast.reference`.
"""

from __future__ import annotations

import torch

from mdfast.reference import acc_dtype

__all__ = [
    "SEED_NEG_INFINITY",
    "masked_ce_cross_entropy",
    "mdlm_subs_loss",
    "seed_ddpm_caching_update",
    "seed_ddpm_update",
    "seed_nucleus",
    "seed_remdm_update",
    "seed_sample",
    "seed_sample_categorical",
    "seed_subs_parameterization",
    "torch_gumbel_argmax",
    "torch_multinomial",
    "torch_top_p_multinomial",
]


def masked_ce_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
) -> torch.Tensor:
    """Masked cross-entropy the usual PyTorch way (the benchmarks' "PyTorch" baseline of
    :func:`mdfast.reference.masked_ce`): excluded column set to -inf on an upcast copy, then
    ``w * F.cross_entropy(reduction="none")``. Unlike the twin, zero-weight rows are read."""
    z = logits.to(acc_dtype(logits.dtype))
    if exclude_index >= 0:
        z = z.index_fill(1, torch.tensor([exclude_index], device=z.device), float("-inf"))
    loss = torch.nn.functional.cross_entropy(z, target, reduction="none")
    return loss if weight is None else weight.to(loss.dtype) * loss


# --- MDLM / ReMDM diffusion.py ----------------------------------------------------------------
# The denoiser's log-probs over the full vocabulary (SUBS: mask logit -1e6, log-softmax,
# carry-over), a materialised B x L x V posterior and `_sample_categorical`'s exponential race,
# in float64 (ReMDM) or in the input dtype, float32 (MDLM).

SEED_NEG_INFINITY = -1_000_000.0


def seed_subs_parameterization(logits: torch.Tensor, xt: torch.Tensor, mask_index: int):
    """MDLM ``_subs_parameterization``: log-probs with the mask class at -1e6 and carry-over
    (unmasked positions: -1e6 everywhere, 0 at the observed token)."""
    logits = logits.clone()
    logits[:, :, mask_index] += SEED_NEG_INFINITY
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    logits[unmasked] = SEED_NEG_INFINITY
    logits[unmasked, xt[unmasked]] = 0
    return logits


def mdlm_subs_loss(
    logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, mask_index: int, t: torch.Tensor
) -> torch.Tensor:
    """MDLM's per-token SUBS loss for the log-linear schedule, from ``kuleshov-group/mdlm``
    ``diffusion.py`` (``_subs_parameterization`` then ``_forward_pass_diffusion``): the SUBS
    log-probs of :func:`seed_subs_parameterization` in the upcast dtype, ``-log p`` of ``x0``
    weighted by ``dsigma / expm1(sigma)`` (``= 1/t``). ``logits [B, L, V]``, ``x0, xt [B, L]``,
    ``t [B]``; returns ``[B, L]`` in the upcast dtype."""
    log_p = seed_subs_parameterization(logits.to(acc_dtype(logits.dtype)), xt, mask_index)
    log_p_theta = torch.gather(log_p, -1, x0[:, :, None]).squeeze(-1)
    eps = 1e-3
    sigma = -torch.log1p(-(1 - eps) * t)
    dsigma = (1 - eps) / (1 - (1 - eps) * t)
    return -log_p_theta * (dsigma / torch.expm1(sigma))[:, None]


def seed_sample_categorical(
    categorical_probs: torch.Tensor, float64: bool = True, generator=None
) -> torch.Tensor:
    """``_sample_categorical``: argmax(p / (1e-10 - log(U + 1e-10))), U ~ torch.rand; ReMDM casts
    p to float64 first (``float64=True``), MDLM samples in p's dtype."""
    if float64:
        categorical_probs = categorical_probs.to(torch.float64)
    u = torch.rand(
        categorical_probs.shape,
        dtype=categorical_probs.dtype,
        device=categorical_probs.device,
        generator=generator,
    )
    gumbel_norm = 1e-10 - (u + 1e-10).log()
    return (categorical_probs / gumbel_norm).argmax(dim=-1)


def seed_nucleus(p_x0: torch.Tensor, top_p: float) -> torch.Tensor:
    """ReMDM's nucleus: sort descending, keep cumsum <= p and the top-1, renormalise."""
    sorted_probs, sorted_indices = torch.sort(p_x0, descending=True, dim=-1)
    cumulative_probs = torch.cumsum(sorted_probs, dim=-1)
    nucleus_mask = cumulative_probs <= top_p
    nucleus_mask[..., 0] = 1
    sorted_probs = sorted_probs * nucleus_mask
    p_x0 = torch.zeros_like(p_x0).scatter_(-1, sorted_indices, sorted_probs)
    return p_x0 / p_x0.sum(-1, keepdim=True)


def seed_ddpm_update(model, x, t, dt, mask_index, float64=True, generator=None):
    """MDLM ``_ddpm_update`` (log-linear schedule, move chance (1 - 1e-3) t)."""
    move_t = (1 - 1e-3) * t
    move_s = (1 - 1e-3) * (t - dt)
    log_p_x0 = seed_subs_parameterization(model(x), x, mask_index)
    q_xs = log_p_x0.exp() * (move_t - move_s)
    q_xs[:, :, mask_index] = move_s
    _x = seed_sample_categorical(q_xs, float64, generator)
    copy_flag = (x != mask_index).to(x.dtype)
    return copy_flag * x + (1 - copy_flag) * _x


def seed_ddpm_caching_update(
    model, x, t, dt, mask_index, p_x0=None, float64=True, top_p=1.0, generator=None
):
    """MDLM / ReMDM ``_ddpm_caching_update`` (move chances t and t - dt, no (1 - eps) factor):
    returns (p_x0 cache, x_next)."""
    if p_x0 is None:
        p_x0 = seed_subs_parameterization(model(x), x, mask_index).exp()
        if top_p < 1.0:
            p_x0 = seed_nucleus(p_x0, top_p)
    q_xs = p_x0 * (t - (t - dt))
    q_xs[:, :, mask_index] = t - dt
    _x = seed_sample_categorical(q_xs, float64, generator)
    copy_flag = (x != mask_index).to(x.dtype)
    return p_x0, copy_flag * x + (1 - copy_flag) * _x


def seed_sample(
    model,
    *,
    batch_size: int,
    length: int,
    mask_index: int,
    steps: int,
    sampler: str = "ddpm_cache",
    eps: float = 1e-5,
    noise_removal: bool = True,
    float64: bool = True,
    top_p: float = 1.0,
    generator=None,
    device=None,
) -> tuple[torch.Tensor, int]:
    """MDLM ``_sample`` with ``ddpm`` or ``ddpm_cache``: returns (samples, denoiser calls)."""
    calls = 0

    def counted(x):
        nonlocal calls
        calls += 1
        return model(x)

    x = torch.full((batch_size, length), mask_index, dtype=torch.int64, device=device)
    timesteps = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    dt = (1 - eps) / steps
    p_x0_cache = None
    for i in range(steps):
        t = float(timesteps[i])
        if sampler == "ddpm":
            x = seed_ddpm_update(counted, x, t, dt, mask_index, float64, generator)
        else:
            p_x0_cache, x_next = seed_ddpm_caching_update(
                counted, x, t, dt, mask_index, p_x0_cache, float64, top_p, generator
            )
            if not torch.equal(x_next, x):
                p_x0_cache = None
            x = x_next
    if noise_removal:
        x = seed_subs_parameterization(counted(x), x, mask_index).argmax(dim=-1)
    return x, calls


def seed_remdm_update(
    model, x, t, dt, mask_index, sigma, p_x0=None, conf=None, float64=True, generator=None
):
    """ReMDM's remasking step with the materialised posterior (alpha = 1 - t): decoded
    positions (1 - sigma) delta_x + sigma delta_m; masked ones p_x0 (alpha_s - (1 - sigma)
    alpha_t)/(1 - alpha_t) on tokens and (1 - alpha_s - sigma alpha_t)/(1 - alpha_t) on the mask.
    ``sigma``: float or [B, L]. Returns (p_x0 cache, x_next, conf)."""
    if p_x0 is None:
        p_x0 = seed_subs_parameterization(model(x), x, mask_index).exp()
    alpha_t, alpha_s = 1 - t, 1 - (t - dt)
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(x.shape)[..., None]
    masked = (x == mask_index)[..., None]
    q_masked = p_x0.to(torch.float64) * (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)
    q_masked[..., mask_index] = ((1 - alpha_s - sigma * alpha_t) / (1 - alpha_t))[..., 0]
    q_decoded = torch.nn.functional.one_hot(x, p_x0.shape[-1]).to(torch.float64) * (1 - sigma)
    q_decoded[..., mask_index] = sigma[..., 0]
    q_xs = torch.where(masked, q_masked, q_decoded)
    x_next = seed_sample_categorical(q_xs, float64, generator)
    if conf is not None:
        newly = (x == mask_index) & (x_next != mask_index)
        chosen = p_x0.gather(-1, x_next[..., None])[..., 0].to(conf.dtype)
        conf = torch.where(newly, -chosen, conf)
        conf = conf.masked_fill(x_next == mask_index, float("-inf"))
    return p_x0, x_next, conf


# --- the plain-torch samplers researchers write (sample_x0's peers in the benchmarks) --------


def _masked(logits: torch.Tensor, exclude_index: int) -> torch.Tensor:
    z = logits.float()
    if exclude_index >= 0:
        z = z.index_fill(1, torch.tensor([exclude_index], device=z.device), float("-inf"))
    return z


def torch_gumbel_argmax(logits: torch.Tensor, exclude_index: int = -1) -> torch.Tensor:
    """The usual one-line sampler: ``argmax(z - log(-log u))`` in float32 with ``u ~ torch.rand``
    (float32 uniforms cap the Gumbel noise near 16: tokens far below the top are under-drawn)."""
    z = _masked(logits, exclude_index)
    return (z - torch.log(-torch.log(torch.rand_like(z)))).argmax(dim=-1)


def torch_multinomial(logits: torch.Tensor, exclude_index: int = -1) -> torch.Tensor:
    """``torch.multinomial(softmax(z), 1)`` in float32."""
    p = torch.softmax(_masked(logits, exclude_index), dim=-1)
    return torch.multinomial(p, 1).squeeze(1)


def torch_top_p_multinomial(
    logits: torch.Tensor, top_p: float, exclude_index: int = -1
) -> torch.Tensor:
    """Sort-based nucleus sampling as ReMDM writes it (``seed_nucleus``: sort, keep the
    cumulative mass <= p and the top-1, renormalise), then ``torch.multinomial``."""
    p = torch.softmax(_masked(logits, exclude_index), dim=-1)
    return torch.multinomial(seed_nucleus(p, top_p), 1).squeeze(1)
