"""Consistency losses of ambient masked diffusion on binarized MNIST: training the noise levels
below the data's.

Setting. Each digit is observed through a fixed MCAR mask, so ``x_obs`` is a draw of the forward
process at the data's level t_d (masked fraction, α_t = 1 − t). The easy loss supervises
p_θ(x0 | x_t) for t ≥ t_d; below t_d no pixel value is known to supervise with. What is known is
the martingale (tower) identity of the reverse process: for s < t and a pixel i still masked
at s,

    p(x0ⁱ | x_t) = E_{x_s ~ p(x_s | x_t)} [ p(x0ⁱ | x_s) ]                                (1)

(x_t is x_s with more pixels masked, independently of x0). Ambient Diffusion (Daras et al. 2023)
and "Consistent Diffusion Meets Tweedie" (Daras, Dimakis, Daskalakis 2024) turn (1) into the
training signal below the data's level: the model at the data's level (trained by the easy loss)
is the teacher, without gradient; the model at the lower level s is the student.

:func:`consistency_loss` (``role="student"``, the default of :class:`AmbientMDLM`), per image of
level τ (its masked fraction; the model reads its level from the mask):

1. teacher g = p_θ(x0 = 1 | x_τ) at the data, no gradient;
2. s = u·τ, u ~ U(0, 1) stratified over the batch (s over (0, τ));
3. x_s from x_τ by ``inner_steps`` = K of the model's own exact reverse steps (MDLM's ancestral
   step on the linear grid t_k = τ − k(τ − s)/K): a masked pixel stays masked through a step
   t_k → t_{k+1} with probability t_{k+1}/t_k, otherwise takes a value drawn from
   p_θ(x0 | x_{t_k}) (no gradient). Drawn as one reveal time r = τ·v (v ~ U(0, 1)) per masked
   pixel, revealed in the step whose interval (t_{k+1}, t_k] holds r: the same law, and it lets
   two chains share *which* pixels are revealed when while drawing their values independently;
4. two such chains x_s¹, x_s² per image (same reveal times, independent values), the student
   h^c = p_θ(x0 = 1 | x_s^c) with gradient, on the pixels still masked at s;
5. ``divergence="brier"``: the squared distance between the teacher's distribution and the
   student's distribution averaged over x_s, ‖(g, 1−g) − E[(h, 1−h)]‖² = 2 (g − E h)², which (1)
   sets to zero. Its unbiased two-sample estimate is 2 (h¹ − g)(h² − g) (x_s¹, x_s² independent
   given x_τ), so the expected gradient is 4 (E h − g) E[∂h]: exactly zero at the true posteriors
   when the chain is exact. Mean over the pixels masked at s.

Why the average over x_s sits inside the divergence: a per-sample divergence
E_{x_s} D(g, h(x_s)) is minimised by h(x_s) = E[g | x_s] — the teacher averaged over the
x_τ that could have led to x_s — which equals p(x0ⁱ | x_s) only when the pixels are independent;
for correlated pixels it blurs the student towards the coarser teacher (it "forgets" the
revealed pixels). ``divergence="kl"`` is that per-sample soft-target KL(g ‖ h(x_s)) (the same
gradient as soft-target cross-entropy), kept for the ablation; tests show it is not stationary at
the true posteriors of a correlated distribution while ``"brier"`` is.

The chain is exact when each step reveals at most one pixel or the pixels are independent given
the visible ones; with K steps over τ − s it is MDLM's K-step discretisation (the chain the
sampler runs, coarser). K = 1 draws every revealed value from the teacher, the only level the
easy loss trains; K > 1 also uses the (not yet trained) intermediate levels, as the model's own
reverse process does. ``subsample``: only the samples whose global index is a multiple of it take
part (each twice, for the two chains), so the student pass costs as much as the easy loss's at
the default 2.

:func:`reversed_consistency_loss` (``role="reversed"``) is the previous variant, with the roles
the other way round: the student is the model at the data's level τ (with gradient) and the
target is built from one reverse step to s = τ − δ: one-hot(x̂) where the step revealed the pixel
(x̂ drawn from the student), the model's p_θ(x0 | x_s) (no gradient) where it stayed masked.
Nothing trains the levels below τ, and the gradient pulls the easy-loss-trained level τ towards
the untrained predictions at s. Kept for the ablation.

Noise: every draw goes through :func:`mdfast.rng.draw` with its own purpose (``ambient_level``,
``ambient_reveal``, ``ambient_value`` with ids (chain, step)). Under the trainer's
:class:`mdfast.rng.NoiseKey` each is keyed by (seed, purpose, global step, the sample's global
index), so the consistency term of a sample does not depend on how the batch is split; the
stratified levels are strata over the global batch's participating samples. The model passes on
the two chains run under a key listing each sample twice (keyed dropout, if a model has any,
then shares its mask between a sample's two chains; the MNIST presets use none). Without a key
the draws are ``torch.rand``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mdfast import rng
from mdfast.experiments.mnist.data import MASK

__all__ = [
    "DIVERGENCES",
    "ROLES",
    "consistency_loss",
    "on_logit",
    "reverse_chain",
    "reversed_consistency_loss",
]

ROLES = ("student", "reversed")
DIVERGENCES = ("chi2", "brier", "kl")
# The floor of the teacher's variance g(1 − g) in the chi2 weight (a teacher surer than 99:1
# is weighted as 99:1).
_MIN_VARIANCE = 0.01


def _uniform(purpose: str, shape, *ids, device) -> torch.Tensor:
    """float64 uniforms in (0, 1) of ``shape`` (dim 0 = the active key's samples) for
    ``purpose``: :func:`mdfast.rng.draw`."""
    return rng.draw(purpose, shape, *ids, device=device, dtype=torch.float64)


def _select_key(rows: torch.Tensor, repeat: int = 1) -> rng.NoiseKey | None:
    """The active key restricted to ``rows`` (each listed ``repeat`` times), or None."""
    key = rng.current_noise_key()
    if key is None:
        return None
    index = key.index[rows.cpu()].repeat(repeat)
    return rng.NoiseKey(key.seed, key.step, index, key.batch_size)


def on_logit(logits: torch.Tensor) -> torch.Tensor:
    """log p(x0 = 1) − log p(x0 = 0) of logits [..., 3] with the mask class left out (SUBS)."""
    return (logits[..., 1] - logits[..., 0]).float()


def _levels(masked: torch.Tensor) -> torch.Tensor:
    """τ: each image's masked fraction, float64 [B]."""
    return masked.flatten(1).double().mean(1)


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``v`` [B] viewed to broadcast against ``x`` [B, ...]."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def reverse_chain(
    model: nn.Module,
    x: torch.Tensor,
    first: torch.Tensor,
    reveal_time: torch.Tensor,
    grid: torch.Tensor,
    value_noise,
) -> torch.Tensor:
    """Run the model's reverse chain from ``x`` (no gradient) through the grid's steps.

    Args:
        model: the denoiser.
        x: int64 [C, B, ...], C chains of the same B images (``MASK`` where masked; the
            chains' masks are the same).
        first: p_θ(x0 = 1 | x), float [B, ...] (shared by the chains: the teacher's pass).
        reveal_time: float64 [B, ...], each masked pixel's reveal time r.
        grid: float64 [B, K + 1], t_0 = τ ≥ t_1 ≥ … ≥ t_K = s per image.
        value_noise: ``value_noise(chain, step) -> float64 [B, ...]`` uniforms.

    Step k reveals the still-masked pixels with t_{k+1} < r ≤ t_k, each set to 1 with probability
    p_θ(x0 = 1 | x_{t_k}) of its own chain (``first`` at k = 0). Returns x_s [C, B, ...].
    """
    chains, batch = x.shape[:2]
    steps = grid.shape[1] - 1
    probs = first.unsqueeze(0).expand(chains, *first.shape)
    view = (-1, *([1] * (x.dim() - 2)))
    pixels = x.shape[2:]
    with torch.no_grad():
        for k in range(steps):
            hi, lo = grid[:, k].view(view), grid[:, k + 1].view(view)
            step = (x[0] == MASK) & (reveal_time > lo) & (reveal_time <= hi)
            u = torch.stack([value_noise(c, k) for c in range(chains)])
            x = torch.where(step, (u < probs).long(), x)
            if k < steps - 1:
                logits = model(x.reshape(chains * batch, *pixels))
                probs = torch.sigmoid(on_logit(logits)).view(chains, batch, *pixels)
    return x


def consistency_loss(
    model: nn.Module,
    x: torch.Tensor,
    *,
    inner_steps: int = 4,
    divergence: str = "brier",
    subsample: int = 2,
    sample_index: torch.Tensor | None = None,
    levels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The student-at-s consistency loss (module docstring) of the batch ``x`` int64 [B, ...]
    (``MASK`` where the pixel is not observed); ``model(x) -> logits [..., 3]``.

    Args:
        inner_steps: K, the reverse steps from τ to s.
        divergence: ``"brier"`` (two-sample unbiased squared distance of the teacher and the
            x_s-averaged student) or ``"kl"`` (per-sample soft-target KL, the ablation).
        subsample: take part only the samples whose (global) index is a multiple of it.
        sample_index: int64 [B], the samples' global indices (default: 0..B−1).
        levels: s/τ per image (float [B] in (0, 1)) instead of the drawn u (tests).

    Returns ``(loss, metrics)``; ``metrics``: ``level`` (mean s), ``revealed`` (mean fraction of
    the masked pixels revealed by the chain).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"mdfast: option 'divergence' must be one of {list(DIVERGENCES)}, got {divergence!r}"
        )
    if int(inner_steps) < 1:
        raise ValueError(f"mdfast: option 'inner_steps' must be >= 1, got {inner_steps}")
    if int(subsample) < 1:
        raise ValueError(f"mdfast: option 'subsample' must be >= 1, got {subsample}")
    key = rng.current_noise_key()
    if sample_index is not None:
        index = sample_index.cpu()
    elif key is not None:
        index = key.index
    else:
        index = torch.arange(x.shape[0])
    sub = int(subsample)
    rows = (index % sub == 0).nonzero().flatten()
    if levels is not None:
        levels = levels.to(x.device, torch.float64).index_select(0, rows.to(x.device))
    # One stratum of the level per participating sample of the global batch: sample g is the
    # (g // subsample)-th of ceil(total / subsample).
    total = x.shape[0] if key is None else key.batch_size
    strata = (index[rows] // sub, -(-total // sub))
    chain_key = _select_key(rows, 2)
    with rng.noise_key(_select_key(rows)):
        return _student_loss(
            model,
            x.index_select(0, rows.to(x.device)),
            int(inner_steps),
            divergence,
            strata,
            levels,
            chain_key,
        )


def _student_loss(model, x, k, divergence, strata, levels, chain_key):
    """:func:`consistency_loss` on the participating samples ``x`` (the active key's samples);
    ``strata`` = (each sample's stratum, their number); ``chain_key``: the key of the passes on
    the two chains (None without a key)."""
    masked = x == MASK
    zero = x.new_zeros((), dtype=torch.float32)
    if not masked.any():
        return zero, {"level": zero, "revealed": zero}
    b, dev = x.shape[0], x.device
    tau = _levels(masked)
    if levels is None:
        stratum, count = strata
        levels = (_uniform("ambient_level", (b,), device=dev) + stratum.to(dev)) / count
    s = levels * tau
    frac = torch.arange(k + 1, device=dev, dtype=torch.float64) / k
    grid = tau[:, None] - frac[None, :] * (tau - s)[:, None]
    reveal_time = _per_image(tau, x) * _uniform("ambient_reveal", x.shape, device=dev)
    value_noise = [
        [_uniform("ambient_value", x.shape, c, step, device=dev) for step in range(k)]
        for c in range(2)
    ]
    with torch.no_grad():
        teacher = on_logit(model(x))
    with rng.noise_key(chain_key):
        x_s = reverse_chain(
            model,
            x.unsqueeze(0).expand(2, *x.shape),
            torch.sigmoid(teacher),
            reveal_time,
            grid,
            lambda c, step: value_noise[c][step],
        )
        student = on_logit(model(x_s.reshape(2 * b, *x.shape[1:]))).view(2, *x.shape)
    still = masked & (x_s[0] == MASK)
    if divergence in ("chi2", "brier"):
        g = torch.sigmoid(teacher)
        h = torch.sigmoid(student)
        per_pixel = 2 * (h[0] - g) * (h[1] - g)
        if divergence == "chi2":
            per_pixel = per_pixel / (4 * (g * (1 - g)).clamp(min=_MIN_VARIANCE))
    else:
        per_pixel = 0.5 * sum(_bernoulli_kl(teacher, student[c]) for c in range(2))
    loss = (per_pixel * still).sum() / still.sum().clamp(min=1)
    revealed = (masked & ~still).sum() / masked.sum()
    return loss, {"level": s.mean().float(), "revealed": revealed.float()}


def _bernoulli_kl(teacher_logit: torch.Tensor, student_logit: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(σ(a)) ‖ Bernoulli(σ(b))) per pixel, gradient only through b."""
    g = torch.sigmoid(teacher_logit)
    log_g, log_1g = F.logsigmoid(teacher_logit), F.logsigmoid(-teacher_logit)
    log_h, log_1h = F.logsigmoid(student_logit), F.logsigmoid(-student_logit)
    return g * (log_g - log_h) + (1 - g) * (log_1g - log_1h)


def reversed_consistency_loss(
    model: nn.Module,
    x: torch.Tensor,
    *,
    step_back: float = 0.1,
    min_level: float = 1e-3,
) -> tuple[torch.Tensor, dict]:
    """The previous, reversed-role variant (module docstring): student at the data's level τ,
    target from one reverse step to s = max(τ − ``step_back``, ``min_level``)."""
    masked = x == MASK
    zero = x.new_zeros((), dtype=torch.float32)
    if not masked.any():
        return zero, {"level": zero, "revealed": zero}
    dev = x.device
    student = on_logit(model(x))
    tau = _levels(masked).clamp(min=1e-6)
    s = (tau - step_back).clamp(min=min_level)
    with torch.no_grad():
        p1 = torch.sigmoid(student.detach())
        x_hat = (_uniform("ambient_value", x.shape, 0, 0, device=dev) < p1).long()
        stay_u = _uniform("ambient_reveal", x.shape, device=dev)
        stay = masked & (stay_u < _per_image(s / tau, x))
        x_s = torch.where(masked & ~stay, x_hat, x)
        teacher = torch.sigmoid(on_logit(model(x_s)))
        q1 = torch.where(stay, teacher, x_hat.float())
    # Soft-target cross-entropy of the student against q1 on the masked pixels.
    per_pixel = -(q1 * F.logsigmoid(student) + (1 - q1) * F.logsigmoid(-student))
    loss = (per_pixel * masked).sum() / masked.sum()
    return loss, {"level": s.mean().float(), "revealed": (masked & ~stay).sum() / masked.sum()}
