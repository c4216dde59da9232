"""IMDM (infinite mask diffusion): masked positions carry a continuous ε ∈ [−1, 1]^D.

Embedding ``h = E[x] + 1[x = m]·MLP(ε)`` with the MLP's last layer zero-initialised, so at init (and
after loading an MDLM checkpoint into ``.dit``) IMDM is exactly MDLM. Training is MDLM's SUBS loss
with a fresh ε per position per call. :func:`imdm_posterior` / :func:`imdm_update` give the
reverse step with keep/redraw of ε.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mdfast import rng
from mdfast.diffusion.mdlm import MDLM

__all__ = ["IMDM", "EpsilonMLP", "IMDMBackbone", "imdm_posterior", "imdm_update"]


class EpsilonMLP(nn.Module):
    """Linear(D_ε → 4d) → GELU → Linear(4d → d, no bias), last layer zero-initialised."""

    def __init__(self, noise_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(noise_dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim, bias=False)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(eps)))


class IMDMBackbone(nn.Module):
    """A DiT plus the ε branch; ``forward(xt, sigma, eps) -> logits``."""

    def __init__(
        self,
        dit: nn.Module,
        mask_index: int,
        noise_dim: int | None = None,
        noise_scale: float = 1.0,
    ):
        super().__init__()
        self.dit = dit
        d = dit.config.hidden_dim
        self.noise_dim = noise_dim or d
        self.noise_scale = noise_scale
        self.mask_index = mask_index
        self.eps_mlp = EpsilonMLP(self.noise_dim, d)

    def draw_eps(self, shape, device, generator=None, stream: tuple = ()) -> torch.Tensor:
        """ε ~ U[−1, 1]^D · scale per position of ``shape``: ``Purpose.EPSILON`` noise (keyed per
        sample when a NoiseKey is active; ``stream`` ids tell apart several draws of a step)."""
        u = rng.draw(rng.Purpose.EPSILON, (*shape, self.noise_dim), *stream, device=device,
                     generator=generator)  # fmt: skip
        return (2 * u - 1) * self.noise_scale

    def embeds(self, xt: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        h = self.dit.embed(xt)
        masked = (xt == self.mask_index)[..., None].to(h.dtype)
        return h + masked * self.eps_mlp(eps.to(h.dtype))

    def trunk(self, xt, sigma=None, eps=None):
        if eps is None:
            eps = self.draw_eps(xt.shape, xt.device)
        return self.dit.trunk(xt, sigma, embeds=self.embeds(xt, eps))

    def hidden(self, xt, sigma=None, eps=None):
        return self.trunk(xt, sigma, eps)

    def head(self, hidden, rows=None):
        return self.dit.head(hidden, rows)

    @property
    def head_weight(self):
        return self.dit.head_weight

    @property
    def head_bias(self):
        return self.dit.head_bias

    def forward(self, xt, sigma=None, eps=None):
        return self.head(self.trunk(xt, sigma, eps))


class IMDM(MDLM):
    """MDLM SUBS loss through an :class:`IMDMBackbone`, which draws a fresh ε ~ U[−1,1]^D·scale
    for every position on every call (after t and the mask, so with a zero ε-MLP the loss equals
    MDLM's under the same seed). ``fused=True`` works too (the backbone has trunk/head)."""

    def __init__(
        self,
        model,
        mask_index: int,
        noise_dim: int | None = None,
        noise_scale: float = 1.0,
        **kwargs,
    ):
        if not isinstance(model, IMDMBackbone):
            model = IMDMBackbone(model, mask_index, noise_dim, noise_scale)
        super().__init__(model, mask_index, **kwargs)


def imdm_posterior(alpha_t, alpha_s):
    """For a masked position, s < t: probabilities of (unmask, stay masked keeping ε, stay masked
    redrawing ε) = ((α_s−α_t)/(1−α_t), (α_t/α_s − α_t)/(1−α_t), (1−α_t/α_s)(1−α_s)/(1−α_t)).
    Keep + redraw = (1−α_s)/(1−α_t): the token marginal is MDLM's."""
    alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64)
    alpha_s = torch.as_tensor(alpha_s, dtype=torch.float64)
    r = alpha_t / alpha_s
    den = 1 - alpha_t
    return (alpha_s - alpha_t) / den, (r - alpha_t) / den, (1 - r) * (1 - alpha_s) / den


def imdm_update(xt, eps, x0_draw, alpha_t, alpha_s, mask_index: int, backbone=None, generator=None):
    """One reverse step for every masked position given a draw ``x0_draw ~ p_θ(·|x_t)``:
    unmask to ``x0_draw``, or stay masked and keep ε, or stay masked with a fresh ε.
    Returns ``(x_s, eps_s, reset)`` (``reset``: bool, ε redrawn). The draws are
    ``Purpose.REVERSE`` / ``Purpose.EPSILON`` noise (keyed when a NoiseKey is active, e.g. one
    per reverse step of a sampling loop), else from ``generator`` / torch's RNG."""
    p_unmask, p_keep, _ = imdm_posterior(alpha_t, alpha_s)
    u = rng.draw(rng.Purpose.REVERSE, xt.shape, device=xt.device, dtype=torch.float64,
                 generator=generator)  # fmt: skip
    masked = xt == mask_index
    unmask = masked & (u < p_unmask)
    reset = masked & (u >= p_unmask + p_keep)
    x_s = torch.where(unmask, x0_draw, xt)
    if backbone is not None:
        fresh = backbone.draw_eps(xt.shape, xt.device, generator=generator, stream=("redraw",))
    else:
        u_eps = rng.draw(rng.Purpose.EPSILON, eps.shape, "redraw", device=eps.device,
                         generator=generator)  # fmt: skip
        fresh = 2 * u_eps - 1
    eps_s = torch.where(reset[..., None], fresh.to(eps.dtype), eps)
    return x_s, eps_s, reset
