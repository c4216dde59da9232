"""The patched sampling steps of an MDLM-family ``Diffusion``, on :func:`mdfast.ops.mask_step`.

Every step of MDLM / ReMDM, for a position i of x_t and the step t -> s (alpha = P(clean)):

* decoded: remask with probability sigma_i (0 for MDLM), else carry over;
* masked: unmask with probability (alpha_s - (1 - sigma_i) alpha_t) / (1 - alpha_t), the token
  drawn from p_theta(. | x_t) (mask class excluded; ReMDM's nucleus: the classes whose cumulative
  mass is <= p, always the top-1), else stay masked.

MDLM's ``_ddpm_caching_update`` uses alpha = 1 - t (move chance t, no (1 - eps) factor),
``_ddpm_update`` alpha = exp(-sigma(t)); ReMDM's strategies set (alpha_t, alpha_s, sigma) as its
``_ddpm_caching_update`` does (cap, rescale, conf, loop, forward-backward) and its DFM corrector
sigma = b_t (alpha_s / alpha_t - 1), which turns DFM's decode coefficient a_t (alpha_s - alpha_t) /
(1 - alpha_t) into the same unmask probability. The codebases materialise the B x L x V posterior
and draw it with a float32 (MDLM) or float64 (ReMDM) exponential race; here the events cost O(1)
per position (float64 uniforms) and only unmasking positions draw a token, by float64 Gumbel-max
over their logits row.

The ``p_x0`` the codebases pass between steps becomes a :class:`DenoiserCache`: the input x and
sigma it stands for and, once needed, the network's output at x. It is evaluated lazily, the first
time a position unmasks, so a step in which no position unmasks runs no network and reads no
logits, and an evaluated cache is read only at the rows that unmask. The codebases' ``_sample``
loops keep passing it back while x is unchanged (MDLM drops it when x changes; ReMDM's update
returns None then), which is exactly when the network's output is still valid for a model that is
not time-conditioned.

Randomness: each patched call draws a Philox seed from torch's default CPU generator, so
``torch.manual_seed`` / Lightning's ``seed_everything`` reproduce runs as before.
"""

from __future__ import annotations

import warnings

import torch

from mdfast import ops
from mdfast.integrations._mdlm_backbone import Features, Network
from mdfast.rng import PhiloxStream
from mdfast.sampling import remask_rates

REMDM_SAMPLERS = (
    "mdlm",
    "forward-backward",
    "remdm-cap",
    "remdm-rescale",
    "remdm-conf",
    "remdm-loop",
)


class DenoiserCache:
    """What the patched steps pass as MDLM's ``p_x0`` cache: the network input ``x`` and
    ``sigma`` it stands for and, once evaluated, the network's :class:`Features` there (raw logits,
    or the output layer's input). Opaque to the codebase: its ``_sample`` loop only passes it
    back."""

    __slots__ = ("features", "sigma", "x")

    def __init__(self, x: torch.Tensor, sigma, features: Features | None = None):
        self.x = x
        self.sigma = sigma
        self.features = features

    @classmethod
    def from_probs(cls, x: torch.Tensor, p_x0: torch.Tensor) -> DenoiserCache:
        """Wrap a probability tensor a caller built the original way (log p as logits)."""
        return cls(x, None, Features(logits=torch.log(p_x0)))

    def __repr__(self) -> str:
        state = "evaluated" if self.features is not None else "not evaluated"
        return f"DenoiserCache(x={list(self.x.shape)}, {state})"


def _philox() -> PhiloxStream:
    return PhiloxStream(int(torch.randint(0, 2**62, (), dtype=torch.int64)))


class Stepper:
    """The step machinery one patched ``Diffusion`` instance uses."""

    def __init__(self, diffusion, network: Network, warn_once):
        self.network = network
        self.warn_once = warn_once
        self.mask = int(diffusion.mask_index)

    def cache_for(self, diffusion, p_x0, x, sigma_t) -> DenoiserCache:
        """The cache this step reads: the one passed back, or a fresh (unevaluated) one. A
        time-conditioned model never reuses one: its output changes with t."""
        if diffusion.time_conditioning:
            self.warn_once(
                "time-conditioned",
                "time_conditioning=True with a cached sampler: the network's output changes "
                "with t, so no cache is reused (the network runs at every step in which a "
                "token unmasks)",
            )
            return DenoiserCache(x, sigma_t)
        if isinstance(p_x0, DenoiserCache):
            return p_x0
        if p_x0 is None:
            return DenoiserCache(x, sigma_t)
        return DenoiserCache.from_probs(x, p_x0)

    def step(
        self,
        diffusion,
        cache: DenoiserCache,
        x: torch.Tensor,
        alpha_t,
        alpha_s,
        remask=None,
        confidence=None,
        top_p: float = 1.0,
    ):
        """One event step plus the token draws of the unmasking positions:
        (x_next, changed, confidence)."""
        rng = _philox()
        seed, offset = rng.next()
        x_next, changed, conf = ops.mask_step(
            x,
            None,
            mask_index=self.mask,
            alpha_t=alpha_t,
            alpha_s=alpha_s,
            remask=remask,
            confidence=confidence,
            seed=seed,
            offset=offset,
        )
        rows = (changed & (x == self.mask)).reshape(-1).nonzero()[:, 0]
        if rows.numel():
            if cache.features is None:
                cache.features = self.network(diffusion, cache.x, cache.sigma)
            logits = cache.features.head_rows(self.network.linear, rows)
            seed, offset = rng.next()
            token, prob = ops.sample_x0(
                logits,
                None,
                top_p=top_p,
                exclude_index=self.mask,
                nucleus="remdm",
                seed=seed,
                offset=offset,
            )
            x_next.view(-1)[rows] = token
            conf.view(-1)[rows] = -prob
        return x_next, changed, conf


def _batch_t(t: torch.Tensor) -> torch.Tensor:
    return (t.squeeze(-1) if t.ndim > 1 else t).to(torch.float64)


def _alphas_from_move_chance(m_t, m_s):
    """alpha = 1 - move chance, clamped so that 0 <= alpha_t <= alpha_s <= 1 (MDLM's grid can
    step below t = 0 on its last semi-AR step, where every masked position unmasks)."""
    a_t = (1 - torch.as_tensor(m_t, dtype=torch.float64)).clamp(0.0, 1.0)
    a_s = torch.maximum((1 - torch.as_tensor(m_s, dtype=torch.float64)).clamp(0.0, 1.0), a_t)
    return a_t, a_s


def _require_loglinear(diffusion, method: str) -> None:
    noise_type = getattr(getattr(diffusion.config, "noise", None), "type", "loglinear")
    if noise_type != "loglinear":
        raise ValueError(
            f"mdfast.integrations.mdlm: {method} needs config.noise.type='loglinear' (it uses "
            f"move chance t directly, as the original asserts), got {noise_type!r}"
        )


def mdlm_caching_update(stepper: Stepper, diffusion, x, t, dt, p_x0=None):
    """MDLM's ``_ddpm_caching_update(x, t, dt, p_x0=None) -> (p_x0, x_next)``."""
    _require_loglinear(diffusion, "_ddpm_caching_update")
    with torch.no_grad():
        sigma_t, _ = diffusion.noise(t)
        tt = _batch_t(t)
        a_t, a_s = _alphas_from_move_chance(tt, tt - dt)
        cache = stepper.cache_for(diffusion, p_x0, x, sigma_t)
        x_next, _, _ = stepper.step(diffusion, cache, x, a_t, a_s)
    return cache, x_next


def ddpm_update(stepper: Stepper, diffusion, x, t, dt):
    """MDLM's ``_ddpm_update(x, t, dt) -> x_next`` (alpha = exp(-sigma(t)), no cache)."""
    with torch.no_grad():
        sigma_t, _ = diffusion.noise(t)
        sigma_s, _ = diffusion.noise(t - dt)
        a_t = torch.exp(-_batch_t(sigma_t))
        a_s = torch.maximum(torch.exp(-_batch_t(sigma_s)), a_t)
        cache = DenoiserCache(x, sigma_t)
        x_next, _, _ = stepper.step(diffusion, cache, x, a_t, a_s)
    return x_next


def _remdm_sigma(sampler: str, sampling, a_t: float, a_s: float):
    """ReMDM's (sigma or, for conf, sigma_max) of one step with alpha_t, alpha_s as floats."""
    if sampler == "forward-backward":
        return remask_rates.sigma_forward_backward(a_t, a_s)
    if sampler == "remdm-cap":
        return remask_rates.sigma_cap(a_t, a_s, float(sampling.eta))
    if sampler == "remdm-rescale":
        return remask_rates.sigma_rescale(a_t, a_s, float(sampling.eta))
    return remask_rates.sigma_max(a_t, a_s)  # remdm-conf


def _loop_step(sampling, time: float, dt: float):
    """ReMDM-loop's (alpha_t, alpha_s, sigma) at grid time t, with its phase tests and formulas:
    MDLM phases before t_on and from t_off, the constant-alpha loop with sigma = eta between."""
    t_on, t_off = float(sampling.t_on), float(sampling.t_off)
    alpha_on = float(sampling.alpha_on)
    if time > t_on:
        m_t = 1 - (1 - time) * alpha_on / (1 - t_on)
        m_s = 1 - (1 - time + dt) * alpha_on / (1 - t_on)
        return m_t, m_s, None
    if time <= t_off:
        return time * (1 - alpha_on) / t_off, (time - dt) * (1 - alpha_on) / t_off, None
    return 1 - alpha_on, 1 - alpha_on, float(sampling.eta)


def remdm_caching_update(stepper: Stepper, diffusion, x, t, dt, p_x0=None, conf=None):
    """ReMDM's ``_ddpm_caching_update(x, t, dt, p_x0=None, conf=None) -> (p_x0_cache, x_next,
    conf)``; the cache comes back only if no position changed (and never for a time-conditioned
    model), as in ReMDM."""
    _require_loglinear(diffusion, "_ddpm_caching_update")
    sampling = diffusion.config.sampling
    sampler = sampling.sampler
    top_p = float(getattr(sampling, "nucleus_p", 1.0))
    with torch.no_grad():
        sigma_t, _ = diffusion.noise(t)
        tt = _batch_t(t)
        remask, confidence = None, None
        if sampler == "mdlm":
            a_t, a_s = _alphas_from_move_chance(tt, tt - dt)
        elif sampler == "remdm-loop":
            m_t, m_s, remask = _loop_step(sampling, float(tt[0]), dt)
            a_t, a_s = _alphas_from_move_chance(m_t, m_s)
        else:
            time = float(tt[0])
            a_t, a_s = _alphas_from_move_chance(time, time - dt)
            remask = _remdm_sigma(sampler, sampling, float(a_t), float(a_s))
            if sampler == "remdm-conf":
                if conf is None:
                    raise ValueError(
                        "mdfast.integrations.mdlm: sampling.sampler='remdm-conf' needs the "
                        "'conf' argument (ReMDM's _sample passes its confidence scores)"
                    )
                confidence = conf.to(torch.float32)
                # softmax over positions of the decoded tokens' confidences (-inf elsewhere;
                # a row with nothing decoded gets 0); ReMDM computes it in conf's bf16
                eta = torch.softmax(confidence, dim=-1).nan_to_num(0.0)
                eta = eta.masked_fill(x == stepper.mask, 0.0)
                remask = eta.to(torch.float64) * remask
        cache = stepper.cache_for(diffusion, p_x0, x, sigma_t)
        x_next, changed, new_conf = stepper.step(
            diffusion, cache, x, a_t, a_s, remask, confidence, top_p
        )
        keep = not diffusion.time_conditioning and not bool(changed.any())
    if confidence is not None:
        conf = new_conf.to(conf.dtype)
    return (cache if keep else None), x_next, conf


def dfm_caching_update(stepper: Stepper, diffusion, x, t, p_x0=None):
    """ReMDM's ``_dfm_caching_update(x, t, p_x0=None) -> (p_x0_cache, x_next, t - dt)``: the
    DFM corrector with adaptive dt = min(1/T, 1/(a_t/t + b_t/(1 - t))), a_t = 10 t^(1/4)
    (1 - t)^(1/4) + 1, b_t = a_t - 1, after a plain MDLM first step at t = 1."""
    _require_loglinear(diffusion, "_dfm_caching_update")
    sampling = diffusion.config.sampling
    steps = int(sampling.steps)
    top_p = float(getattr(sampling, "nucleus_p", 1.0))
    with torch.no_grad():
        sigma_t, _ = diffusion.noise(t)
        tt = _batch_t(t)
        timestep = float(tt[0])
        remask = None
        if timestep == 1:
            dt = 1 / steps
            a_t, a_s = _alphas_from_move_chance(tt, tt - dt)
        else:
            dt, b = remask_rates.dfm_step(timestep, steps)
            a_t, a_s = _alphas_from_move_chance(timestep, timestep - dt)
            remask = min(1.0, b * (float(a_s) / float(a_t) - 1))
        cache = stepper.cache_for(diffusion, p_x0, x, sigma_t)
        x_next, changed, _ = stepper.step(diffusion, cache, x, a_t, a_s, remask, None, top_p)
        keep = not diffusion.time_conditioning and not bool(changed.any())
    return (cache if keep else None), x_next, timestep - dt


def make_sample_categorical(original):
    """The codebase's module-level ``_sample_categorical(probs)`` as an exact draw: index v with
    probability p_v / sum(p) over the last dim, by float64 Gumbel-max on log p with 53-bit
    uniforms (MDLM races p / (1e-10 - log(U + 1e-10)) in float32, which truncates the noise tail;
    ReMDM the same in float64). Extra arguments (MDM-Prime's ``dtype``) are accepted and ignored.
    A row with no positive mass or a NaN raises instead of returning index 0."""

    def _sample_categorical(categorical_probs, *args, **kwargs):
        shape = categorical_probs.shape
        logp = torch.log(categorical_probs.to(torch.float64)).reshape(-1, shape[-1])
        rng = _philox()
        seed, offset = rng.next()
        token, _ = ops.sample_x0(logp, None, seed=seed, offset=offset)
        return token.view(shape[:-1])

    _sample_categorical.__wrapped__ = original
    _sample_categorical.__doc__ = make_sample_categorical.__doc__
    return _sample_categorical


def warn_once_factory(store: set):
    def warn_once(key: str, message: str) -> None:
        if key not in store:
            store.add(key)
            warnings.warn(f"mdfast.integrations.mdlm: {message}", stacklevel=4)

    return warn_once
