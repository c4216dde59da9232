"""A stand-in for the ``Diffusion`` LightningModule of ``kuleshov-group/mdlm`` (``diffusion.py``),
written from its contract for the tests and the benchmark of :mod:`mdfast.integrations.mdlm`.

Same method names, arguments, return values and conventions as MDLM (nothing of MDLM is imported
or copied): ``forward(x, sigma)`` returns SUBS log-probs (mask logit + ``neg_infinity = -1e6``,
log-softmax, carry-over), ``noise(t) -> (sigma, dsigma)`` of the log-linear schedule,
``_forward_pass_diffusion`` (continuous time with weight ``dsigma / expm1(sigma)``, discrete time
``T > 0`` through ``_d3pm_loss``, ``change_of_variables`` / ``importance_sampling``), ``_loss``
(token mean over the attention mask), the module-level ``_sample_categorical`` (an exponential
race in the input dtype, float32), ``_ddpm_update`` (move chance ``1 - exp(-sigma)``),
``_ddpm_caching_update`` (move chance ``t`` directly, returns ``(p_x0, x_next)``) and ``_sample``,
whose ``ddpm_cache`` loop keeps ``p_x0`` while ``x`` is unchanged and the model is not
time-conditioned. Lightning, Hydra and tokenizers are left out: the config is a namespace tree
with MDLM's key names, and the mask id / vocabulary are given directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from mdfast.baselines import seed_sample_categorical, seed_subs_parameterization
from mdfast.models import DiT
from mdfast.schedules import LogLinearSchedule


def _sample_categorical(categorical_probs):
    """MDLM: argmax(p / (1e-10 - log(U + 1e-10))) with U ~ torch.rand in p's dtype."""
    return seed_sample_categorical(categorical_probs, float64=False)


def namespace(d: dict) -> SimpleNamespace:
    return SimpleNamespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def mdlm_config(
    *,
    length: int,
    eval_batch_size: int = 1,
    predictor: str = "ddpm_cache",
    steps: int = 128,
    T: int = 0,
    time_conditioning: bool = False,
    change_of_variables: bool = False,
    importance_sampling: bool = False,
    noise_removal: bool = True,
    **sampling,
) -> SimpleNamespace:
    """MDLM's ``configs/config.yaml`` keys the stand-in reads (extra ``sampling`` keys are added
    to ``config.sampling``: ReMDM's sampler, eta, nucleus_p, ...)."""
    return namespace(
        {
            "parameterization": "subs",
            "time_conditioning": time_conditioning,
            "T": T,
            "subs_masking": False,
            "noise": {"type": "loglinear"},
            "sampling": {
                "predictor": predictor,
                "steps": steps,
                "noise_removal": noise_removal,
                **sampling,
            },
            "training": {
                "antithetic_sampling": True,
                "importance_sampling": importance_sampling,
                "sampling_eps": 1e-3,
                "change_of_variables": change_of_variables,
            },
            "loader": {"eval_batch_size": eval_batch_size},
            "model": {"length": length},
        }
    )


class LogLinearNoise(nn.Module):
    """MDLM's ``noise`` object: ``noise(t) -> (total_noise, rate_noise)`` with
    sigma(t) = -log(1 - (1 - eps) t), plus ``sigma_min`` / ``sigma_max`` and the
    importance-sampling transform."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.schedule = LogLinearSchedule(eps)
        self.sigma_max = self.total_noise(torch.tensor(1.0))
        self.sigma_min = self.eps + self.total_noise(torch.tensor(0.0))

    def total_noise(self, t):
        return self.schedule.sigma(t)[0]

    def rate_noise(self, t):
        return self.schedule.sigma(t)[1]

    def forward(self, t):
        return self.schedule.sigma(t)

    def importance_sampling_transformation(self, t):
        f_T = torch.log1p(-torch.exp(-self.sigma_max))
        f_0 = torch.log1p(-torch.exp(-self.sigma_min))
        sigma_t = -torch.log1p(-torch.exp(t * f_T + (1 - t) * f_0))
        return -torch.expm1(-sigma_t) / (1 - self.eps)


class AutocastDiT(DiT):
    """MDLM's ``DIT``: blocks and output layer under bf16 autocast (``autocast=None``: off), the
    output projection ``output_layer.linear`` inside the adaLN final layer."""

    def __init__(self, config=None, autocast: torch.dtype | None = None, **overrides):
        super().__init__(config, **overrides)
        self.autocast = autocast

    def forward(self, x, sigma=None):
        dtype = self.autocast or torch.bfloat16
        with torch.autocast(x.device.type, dtype, enabled=self.autocast is not None):
            return super().forward(x, sigma)


@dataclass
class Loss:
    loss: torch.Tensor
    nlls: torch.Tensor
    token_mask: torch.Tensor


class MDLMDiffusion(nn.Module):
    """``Diffusion(config, tokenizer)`` of MDLM, with ``backbone``, ``vocab_size`` (mask included)
    and ``mask_index`` passed in place of the Hydra backbone choice and the tokenizer."""

    def __init__(self, config, backbone: nn.Module, vocab_size: int, mask_index: int | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.vocab_size = vocab_size
        self.mask_index = vocab_size - 1 if mask_index is None else mask_index
        self.sampler = config.sampling.predictor
        self.antithetic_sampling = config.training.antithetic_sampling
        self.importance_sampling = config.training.importance_sampling
        self.change_of_variables = config.training.change_of_variables
        self.parameterization = config.parameterization
        self.T = config.T
        self.subs_masking = config.subs_masking
        self.noise = LogLinearNoise()
        self.sampling_eps = config.training.sampling_eps
        self.time_conditioning = config.time_conditioning
        self.neg_infinity = -1000000.0

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # -- model ---------------------------------------------------------------------------------
    def _subs_parameterization(self, logits, xt):
        return seed_subs_parameterization(logits, xt, self.mask_index)

    def _process_sigma(self, sigma):
        if sigma.ndim > 1:
            sigma = sigma.squeeze(-1)
        if not self.time_conditioning:
            sigma = torch.zeros_like(sigma)
        return sigma

    def forward(self, x, sigma):
        """Returns log score."""
        sigma = self._process_sigma(sigma)
        logits = self.backbone(x, sigma)
        if self.parameterization == "subs":
            return self._subs_parameterization(logits=logits, xt=x)
        return logits

    # -- training ------------------------------------------------------------------------------
    def q_xt(self, x, move_chance):
        move_indices = torch.rand(*x.shape, device=x.device) < move_chance
        return torch.where(move_indices, self.mask_index, x)

    def _sample_t(self, n, device):
        _eps_t = torch.rand(n, device=device)
        if self.antithetic_sampling:
            _eps_t = (_eps_t / n + torch.arange(n, device=device) / n) % 1
        t = (1 - self.sampling_eps) * _eps_t + self.sampling_eps
        if self.importance_sampling:
            return self.noise.importance_sampling_transformation(t)
        return t

    def _d3pm_loss(self, model_output, xt, x0, t):
        """MDLM's discrete-time two-term KL (scaled by T) at masked positions."""
        dt = 1 / self.T
        t = t[:, None].clamp(0.0, 1.0 - 1e-4)
        alpha_t = 1 - t + torch.zeros_like(xt)
        alpha_s = 1 - (t - dt) + torch.zeros_like(xt)
        log_at_x0 = torch.gather(model_output, -1, x0[:, :, None]).squeeze(-1)
        at_mask = model_output[:, :, self.mask_index].exp()
        log_nr = torch.log(alpha_t * at_mask / t + 1)
        log_dr_2 = torch.log(alpha_s * at_mask / (t - dt) + 1)
        kl = (dt / t) * (log_nr - log_at_x0) + (1 - dt / t) * (log_nr - log_dr_2)
        return self.T * kl * (xt == self.mask_index)

    def _forward_pass_diffusion(self, x0):
        t = self._sample_t(x0.shape[0], x0.device)
        if self.T > 0:
            t = (t * self.T).to(torch.int) / self.T + 1 / self.T
        if self.change_of_variables:
            cond = t[:, None]
            f_T = torch.log1p(-torch.exp(-self.noise.sigma_max))
            f_0 = torch.log1p(-torch.exp(-self.noise.sigma_min))
            move_chance = torch.exp(f_0 + t * (f_T - f_0))[:, None]
        else:
            sigma, dsigma = self.noise(t)
            cond = sigma[:, None]
            move_chance = 1 - torch.exp(-sigma[:, None])
        xt = self.q_xt(x0, move_chance)
        model_output = self.forward(xt, cond)
        if self.T > 0:
            return self._d3pm_loss(model_output=model_output, xt=xt, x0=x0, t=t)
        log_p_theta = torch.gather(model_output, -1, x0[:, :, None]).squeeze(-1)
        if self.change_of_variables or self.importance_sampling:
            return log_p_theta * torch.log1p(-torch.exp(-self.noise.sigma_min))
        return -log_p_theta * (dsigma / torch.expm1(sigma))[:, None]

    def _loss(self, x0, attention_mask):
        loss = self._forward_pass_diffusion(x0)
        nlls = loss * attention_mask
        return Loss(loss=nlls.sum() / attention_mask.sum(), nlls=nlls, token_mask=attention_mask)

    # -- sampling ------------------------------------------------------------------------------
    def _sample_prior(self, *batch_dims):
        return self.mask_index * torch.ones(*batch_dims, dtype=torch.int64)

    def _ddpm_caching_update(self, x, t, dt, p_x0=None):
        sigma_t, _ = self.noise(t)
        if t.ndim > 1:
            t = t.squeeze(-1)
        move_chance_t = t[:, None, None]
        move_chance_s = (t - dt)[:, None, None]
        if p_x0 is None:
            p_x0 = self.forward(x, sigma_t).exp()
        q_xs = p_x0 * (move_chance_t - move_chance_s)
        q_xs[:, :, self.mask_index] = move_chance_s[:, :, 0]
        _x = _sample_categorical(q_xs)
        copy_flag = (x != self.mask_index).to(x.dtype)
        return p_x0, copy_flag * x + (1 - copy_flag) * _x

    def _ddpm_update(self, x, t, dt):
        sigma_t, _ = self.noise(t)
        sigma_s, _ = self.noise(t - dt)
        if sigma_t.ndim > 1:
            sigma_t, sigma_s = sigma_t.squeeze(-1), sigma_s.squeeze(-1)
        move_chance_t = (1 - torch.exp(-sigma_t))[:, None, None]
        move_chance_s = (1 - torch.exp(-sigma_s))[:, None, None]
        log_p_x0 = self.forward(x, sigma_t)
        q_xs = log_p_x0.exp() * (move_chance_t - move_chance_s)
        q_xs[:, :, self.mask_index] = move_chance_s[:, :, 0]
        _x = _sample_categorical(q_xs)
        copy_flag = (x != self.mask_index).to(x.dtype)
        return copy_flag * x + (1 - copy_flag) * _x

    def _sample_grid(self, num_steps, eps):
        """The all-mask prior and MDLM's grid linspace(1, eps, T + 1), dt = (1 - eps) / T."""
        if num_steps is None:
            num_steps = self.config.sampling.steps
        x = self._sample_prior(self.config.loader.eval_batch_size, self.config.model.length)
        timesteps = torch.linspace(1, eps, num_steps + 1, device=self.device)
        return x.to(self.device), num_steps, timesteps, (1 - eps) / num_steps

    @torch.no_grad()
    def _sample(self, num_steps=None, eps=1e-5):
        x, num_steps, timesteps, dt = self._sample_grid(num_steps, eps)
        p_x0_cache = None
        for i in range(num_steps):
            t = timesteps[i] * torch.ones(x.shape[0], 1, device=self.device)
            if self.sampler == "ddpm":
                x = self._ddpm_update(x, t, dt)
            elif self.sampler == "ddpm_cache":
                p_x0_cache, x_next = self._ddpm_caching_update(x, t, dt, p_x0=p_x0_cache)
                if not torch.allclose(x_next, x) or self.time_conditioning:
                    p_x0_cache = None  # disable caching
                x = x_next
            else:
                raise NotImplementedError(f"stand-in has no {self.sampler!r} predictor")
        if self.config.sampling.noise_removal:
            t = timesteps[-1] * torch.ones(x.shape[0], 1, device=self.device)
            x = self.forward(x, self.noise(t)[0]).argmax(dim=-1)
        return x
