"""SDTT (self-distillation through time, Deschenaux & Gulcehre, arXiv 2410.21035) and IMDM's
IM-SDTT: a student learns to take in one step what a frozen teacher takes in ``n`` steps.

Per batch: t ~ MDLM's antithetic U[ε, 1], x_t = mask x₀ with probability 1 − α_t, and (IMDM) one
noise ε per position. The teacher runs n ancestral steps t_k = t − k·dt → t_k − dt (k = 0..n−1,
times clamped at 0) from (x_t, ε), with ε fixed (``fix_eps``, IM-SDTT's default; otherwise IMDM's
three-way posterior redraws it). Every position masked in x_t gets as target the teacher's
log-probabilities p_T(· | x_{t_k}, ε) at the step k where it unmasks, or those of the last
step if it is still masked after n steps. The student makes one forward pass on (x_t, ε) and the
loss is a divergence between its SUBS distribution p_S and the target, averaged over the masked
positions:

* ``kl-bwd`` (default): KL(p_S ‖ p_T) = Σ_v p_S(v) (log p_S(v) − log p_T(v));
* ``kl-fwd``: KL(p_T ‖ p_S);
* ``mse``: Σ_v (log p_S(v) − log p_T(v))² (on log-probabilities, as SDTT's code);
* ``tvd``: ½ Σ_v |p_S(v) − p_T(v)|.

The mask class is left out of every distribution (SUBS). Rounds (:mod:`mdfast.distill.rounds`):
dt doubles (×n) every ``round_steps`` optimiser steps and the student is copied into the teacher;
the trainer calls :meth:`SDTT.begin_step` with the global step, so a resumed run continues the
same rounds (the teacher and the round are part of the checkpoint). Only masked rows go through
the output head, for the teacher and the student: the targets are [masked positions, V].

The teacher's steps differ from IMDM's ``IMSDTT._teacher_logprobs_on_mask`` in one place: there
the k-th teacher call is made at t − k·n·dt/(n−1) while the state it is given has moved by k·dt
(for n = 2 the second call sees time t − 2dt); here call k is made at the time t − k·dt its
state is at.

Random draws (t, masking, ε, the teacher's events, tokens and ε redraws) are keyed noise
(:func:`mdfast.rng.draw` with a :class:`mdfast.rng.Purpose`; the teacher's draws of step k are
``Purpose.REVERSE`` with ids ``("sdtt", k, what)``): under the trainer's NoiseKey they depend on
(seed, step, global sample index) only; without a key, on torch's generator (or ``generator``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mdfast import rng
from mdfast.diffusion.base import unpack
from mdfast.diffusion.imdm import redraw_probability
from mdfast.diffusion.mdlm import MDLM, mask_tokens
from mdfast.distill.rounds import RoundSchedule

__all__ = ["DIVERGENCES", "SDTT", "divergence", "subs_log_probs", "teacher_targets"]


def subs_log_probs(logits: torch.Tensor, mask_index: int) -> torch.Tensor:
    """SUBS log-probabilities [R, V − 1] of logits rows [R, V]: the mask class removed, then
    log-softmax (in float32 at least). Column c is token c, or c + 1 for c ≥ ``mask_index``."""
    keep = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[mask_index] = False
    z = logits[:, keep]
    return F.log_softmax(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, dim=-1)


def _kl_bwd(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (s.exp() * (s - t)).sum(-1)


def _kl_fwd(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (t.exp() * (t - s)).sum(-1)


def _mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (s - t).pow(2).sum(-1)


def _tvd(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (s.exp() - t.exp()).abs().sum(-1)


DIVERGENCES = {"kl-bwd": _kl_bwd, "kl-fwd": _kl_fwd, "mse": _mse, "tvd": _tvd}


def _divergence_fn(name: str):
    if name not in DIVERGENCES:
        raise ValueError(
            f"mdfast: option 'objective.loss' must be one of {sorted(DIVERGENCES)}, got {name!r}"
        )
    return DIVERGENCES[name]


def divergence(name: str, student_logp: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    """Per-row divergence ``name`` (see the module docstring) between log-probability rows."""
    return _divergence_fn(name)(student_logp, target_logp)


def _trunk(model, x: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    return model.trunk(x) if eps is None else model.trunk(x, None, eps=eps)


def _head_rows(model, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return model.head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows))


def _draw_tokens(logp: torch.Tensor, u: torch.Tensor, mask_index: int) -> torch.Tensor:
    """Inverse-CDF draw (float64) of one token per SUBS row, mapped back to vocabulary ids."""
    cdf = logp.double().exp().cumsum(-1)
    idx = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    idx = idx.clamp_(max=logp.shape[-1] - 1)
    return idx + (idx >= mask_index).long()


@torch.no_grad()
def teacher_targets(
    teacher,
    xt: torch.Tensor,
    eps: torch.Tensor | None,
    t: torch.Tensor,
    dt: float,
    num_steps: int,
    schedule,
    mask_index: int,
    *,
    fix_eps: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's per-position targets (module docstring). Returns ``(rows, target)``: the
    flat indices of the masked positions of ``xt`` [R] and their target log-probabilities
    [R, V − 1] (SUBS columns, see :func:`subs_log_probs`)."""
    if num_steps < 1:
        raise ValueError(f"mdfast: argument 'num_steps' must be >= 1, got {num_steps}")
    B, L = xt.shape
    dev = xt.device
    rows = (xt == mask_index).reshape(-1).nonzero()[:, 0]
    seq = rows // L
    x = xt.clone()
    eps = None if eps is None else eps.clone()
    target = None
    done = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
    t = t.double()

    def uniforms(k: int, what: str) -> torch.Tensor:
        return rng.draw(rng.Purpose.REVERSE, (B, L), "sdtt", k, what, device=dev,
                        dtype=torch.float64, generator=generator).reshape(-1)[rows]  # fmt: skip

    for k in range(num_steps):
        a_t = schedule.alpha((t - k * dt).clamp_min(0.0))
        a_s = schedule.alpha((t - (k + 1) * dt).clamp_min(0.0))
        logp = subs_log_probs(_head_rows(teacher, _trunk(teacher, x, eps), rows), mask_index)
        if target is None:
            target = torch.empty_like(logp)
        still = x.reshape(-1)[rows] == mask_index
        p_unmask = torch.where(a_t < 1, (a_s - a_t) / (1 - a_t).clamp_min(1e-300), 1.0)
        unmask = still & (uniforms(k, "unmask") < p_unmask[seq])
        v = uniforms(k, "token")
        x.view(-1)[rows[unmask]] = _draw_tokens(logp[unmask], v[unmask], mask_index)
        target[unmask] = logp[unmask]
        done |= unmask
        if eps is not None and not fix_eps:
            stay = still & ~unmask
            redraw = stay & (uniforms(k, "redraw") < redraw_probability(a_t, a_s)[seq])
            fresh = teacher.draw_eps((B, L), dev, generator=generator, stream=("sdtt", k))
            fresh = fresh.to(eps.dtype)
            flat, new = eps.view(B * L, -1), fresh.view(B * L, -1)
            flat[rows[redraw]] = new[rows[redraw]]
    target[~done] = logp[~done]
    return rows, target


class SDTT(MDLM):
    """SDTT / IM-SDTT distillation objective around a student backbone ``model`` (a DiT for
    SDTT, an :class:`mdfast.diffusion.IMDMBackbone` for IM-SDTT); the teacher is a frozen copy
    made at construction, so load the starting weights into ``model`` first (or call
    :meth:`reset_teacher`). ``per_token`` (and so ``mdfast eval``) is the student's MDLM NELBO."""

    def __init__(
        self,
        model,
        mask_index: int,
        *,
        num_distill_steps: int = 2,
        start_steps: int = 1024,
        round_steps: int = 10_000,
        min_steps: int = 1,
        loss: str = "kl-bwd",
        fix_eps: bool = True,
        **mdlm_kwargs,
    ):
        super().__init__(model, mask_index, **mdlm_kwargs)
        _divergence_fn(loss)
        self.rounds = RoundSchedule(start_steps, num_distill_steps, round_steps, min_steps,
                                    self.sampling_eps)  # fmt: skip
        self.loss_name = loss
        self.fix_eps = fix_eps
        self.imdm = hasattr(model, "draw_eps")
        self.teacher = copy.deepcopy(model).requires_grad_(False).eval()
        self.register_buffer("round", torch.zeros((), dtype=torch.int64))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Copy the student's weights into the teacher."""
        self.teacher.load_state_dict(self.model.state_dict())

    def begin_step(self, step: int) -> None:
        """Called by the trainer before optimiser step ``step``: at a round boundary the student
        is copied into the teacher (once per round, also when resuming)."""
        r = self.rounds.round_of(step)
        while int(self.round) < r:
            self.reset_teacher()
            self.round += 1

    @property
    def dt(self) -> float:
        return self.rounds.dt(int(self.round))

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        B, L = x0.shape
        t = self.sample_t(B, x0.device)
        xt = mask_tokens(x0, self.schedule.move_chance(t), self.mask_index)
        eps = self.model.draw_eps((B, L), x0.device) if self.imdm else None
        rows, target = teacher_targets(
            self.teacher, xt, eps, t, self.dt, self.rounds.num_distill_steps, self.schedule,
            self.mask_index, fix_eps=self.fix_eps,
        )  # fmt: skip
        student = subs_log_probs(_head_rows(self.model, _trunk(self.model, xt, eps), rows),
                                 self.mask_index)  # fmt: skip
        per_row = divergence(self.loss_name, student, target.to(student.dtype))
        by_position = torch.zeros(B * L, dtype=per_row.dtype, device=x0.device)
        by_position = by_position.index_put((rows,), per_row).view(B, L)
        valid = (xt == self.mask_index).to(per_row.dtype)
        if attn is not None:
            valid = valid * attn.to(per_row.dtype)
        loss = (by_position * valid).sum() / valid.sum().clamp_min(1.0)
        r = int(self.round)
        metrics = {"distill_loss": loss.detach(), "round": float(r),
                   "student_steps": self.rounds.student_steps(r),
                   "masked_frac": (xt == self.mask_index).float().mean()}  # fmt: skip
        return loss, metrics
