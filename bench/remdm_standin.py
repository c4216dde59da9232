"""A stand-in for the ``Diffusion`` of ``kuleshov-group/remdm``, written from its contract on top
of the MDLM stand-in (:mod:`bench.mdlm_standin`); nothing of ReMDM is imported or copied.

ReMDM keeps MDLM's model and loss and changes sampling:

* the module-level ``_sample_categorical`` races in float64;
* ``_ddpm_caching_update(x, t, dt, p_x0=None, conf=None) -> (p_x0_cache, x_next, conf)``: p_x0 =
  exp(SUBS log-probs), then nucleus (``sampling.nucleus_p``: keep cumsum <= p and the top-1,
  renormalise); ``sampling.sampler`` picks the posterior with alpha = 1 - t: ``mdlm``,
  ``forward-backward``, ``remdm-cap`` / ``remdm-rescale`` (sigma from ``sampling.eta``),
  ``remdm-conf`` (sigma_i = softmax over positions of ``conf`` (bf16; -p of each decoded token,
  -inf for masked) times sigma_max) and ``remdm-loop`` (MDLM up to alpha_on at t_on, alpha =
  alpha_on with sigma = eta until t_off, MDLM after); the cache comes back only when no position
  changed and the model is not time-conditioned;
* ``_dfm_caching_update(x, t, p_x0=None) -> (p_x0_cache, x_next, t - dt)``: the DFM corrector
  with adaptive dt (a plain MDLM step at t = 1);
* ``_sample`` threads ``conf`` through the cached loop, runs the DFM loop while t > dt when
  ``sampling.dfm``, and removes noise at the last time reached.
"""

from __future__ import annotations

import torch

from bench.mdlm_standin import MDLMDiffusion, mdlm_config
from mdfast.baselines import seed_nucleus, seed_remdm_update, seed_sample_categorical
from mdfast.sampling import remask_rates


def _sample_categorical(categorical_probs):
    """ReMDM: MDLM's race with p cast to float64 first."""
    return seed_sample_categorical(categorical_probs, float64=True)


def remdm_config(*, length: int, sampler: str = "mdlm", **kwargs):
    """MDLM's keys plus ReMDM's ``sampling`` keys (defaults of ReMDM's ``config.yaml``)."""
    sampling = {
        "sampler": sampler,
        "nucleus_p": 1.0,
        "eta": 0.0,
        "t_on": 0.0,
        "t_off": 0.0,
        "alpha_on": 0.0,
        "dfm": False,
    }
    sampling.update({k: kwargs.pop(k) for k in list(kwargs) if k in sampling})
    return mdlm_config(length=length, **kwargs, **sampling)


class ReMDMDiffusion(MDLMDiffusion):
    """ReMDM's ``Diffusion``: MDLM's plus remasking samplers, nucleus and the DFM corrector."""

    def _p_x0(self, x, sigma_t):
        p_x0 = self.forward(x, sigma_t).exp()
        p = self.config.sampling.nucleus_p
        return seed_nucleus(p_x0, p) if p < 1 else p_x0

    def _remdm_posterior_step(self, x, a_t, a_s, sigma, p_x0, conf=None):
        """One draw from ReMDM's posterior with keep-probabilities a_t <= a_s (floats)."""
        _, x_next, conf = seed_remdm_update(
            None, x, 1 - a_t, a_s - a_t, self.mask_index, sigma, p_x0, conf, float64=True
        )
        return x_next, conf

    def _ddpm_caching_update(self, x, t, dt, p_x0=None, conf=None):
        sigma_t, _ = self.noise(t)
        if t.ndim > 1:
            t = t.squeeze(-1)
        if p_x0 is None:
            p_x0 = self._p_x0(x, sigma_t)
        s = self.config.sampling
        time = t[0].item()
        a_t, a_s = 1 - time, 1 - (time - dt)
        if s.sampler == "mdlm":
            q_xs = p_x0 * dt
            q_xs[:, :, self.mask_index] = (t - dt)[:, None]
            copy_flag = (x != self.mask_index).to(x.dtype)
            xs = copy_flag * x + (1 - copy_flag) * _sample_categorical(q_xs)
        elif s.sampler == "remdm-loop":
            if time > s.t_on:
                a_t = (1 - time) * s.alpha_on / (1 - s.t_on)
                a_s = (1 - time + dt) * s.alpha_on / (1 - s.t_on)
                sigma = 0.0
            elif time <= s.t_off:
                a_t = 1 - time * (1 - s.alpha_on) / s.t_off
                a_s = 1 - (time - dt) * (1 - s.alpha_on) / s.t_off
                sigma = 0.0
            else:
                a_t = a_s = s.alpha_on
                sigma = s.eta
            xs, _ = self._remdm_posterior_step(x, a_t, a_s, sigma, p_x0)
        else:
            if s.sampler == "forward-backward":
                sigma = (a_s - a_t) / a_t if a_t > 0 else 1.0
            elif s.sampler == "remdm-cap":
                sigma = remask_rates.sigma_cap(a_t, a_s, s.eta)
            elif s.sampler == "remdm-rescale":
                sigma = remask_rates.sigma_rescale(a_t, a_s, s.eta)
            elif s.sampler == "remdm-conf":
                eta = conf.softmax(dim=-1)
                eta[x == self.mask_index] = 0
                sigma = eta.to(torch.float64) * remask_rates.sigma_max(a_t, a_s)
            else:
                raise NotImplementedError(f"stand-in has no sampler {s.sampler!r}")
            xs, new_conf = self._remdm_posterior_step(x, a_t, a_s, sigma, p_x0, conf)
            if s.sampler == "remdm-conf":
                conf = new_conf
        keep = torch.allclose(xs, x) and not self.time_conditioning
        return (p_x0 if keep else None), xs, conf

    def _dfm_caching_update(self, x, t, p_x0=None):
        sigma_t, _ = self.noise(t)
        if t.ndim > 1:
            t = t.squeeze(-1)
        timestep = t[0].item()
        if p_x0 is None:
            p_x0 = self._p_x0(x, sigma_t)
        if timestep == 1:
            dt = 1 / self.config.sampling.steps
            sigma = 0.0
            a_t, a_s = 0.0, dt
        else:
            dt, b = remask_rates.dfm_step(timestep, self.config.sampling.steps)
            a_t, a_s = 1 - timestep, 1 - (timestep - dt)
            # DFM: decoded positions stay with probability 1 - b (alpha_s / alpha_t - 1) and masked
            # ones decode with a (alpha_s - alpha_t) / (1 - alpha_t): the ReMDM posterior at sigma
            sigma = b * (a_s / a_t - 1)
        xs, _ = self._remdm_posterior_step(x, a_t, a_s, sigma, p_x0)
        keep = torch.allclose(xs, x) and not self.time_conditioning
        return (p_x0 if keep else None), xs, timestep - dt

    @torch.no_grad()
    def _sample(self, num_steps=None, eps=1e-5):
        x, num_steps, timesteps, dt = self._sample_grid(num_steps, eps)
        p_x0_cache = None
        min_t = timesteps[-1].item()
        conf = -torch.ones_like(x, device=self.device).to(torch.bfloat16) * torch.inf
        if self.config.sampling.dfm:
            timestep = 1
            while timestep > dt:
                t = timestep * torch.ones(x.shape[0], 1, device=self.device)
                p_x0_cache, x, timestep = self._dfm_caching_update(x, t, p_x0=p_x0_cache)
            min_t = timestep
        else:
            for i in range(num_steps):
                t = timesteps[i] * torch.ones(x.shape[0], 1, device=self.device)
                if self.sampler == "ddpm":
                    x = self._ddpm_update(x, t, dt)
                elif self.sampler == "ddpm_cache":
                    p_x0_cache, x, conf = self._ddpm_caching_update(
                        x, t, dt, p_x0=p_x0_cache, conf=conf
                    )
                else:
                    raise NotImplementedError(f"stand-in has no {self.sampler!r} predictor")
        if self.config.sampling.noise_removal:
            t = min_t * torch.ones(x.shape[0], 1, device=self.device)
            x = self.forward(x, self.noise(t)[0]).argmax(dim=-1)
        return x


__all__ = ["ReMDMDiffusion", "remdm_config"]
