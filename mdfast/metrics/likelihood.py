"""Likelihood of a split: the diffusion NELBO (an upper bound on −log p) or the AR NLL, per token.

**Masked diffusion (MDLM, IMDM, SEDD), continuous time.** For a sequence x of n tokens

    NELBO(x) = E_{u ~ U(0,1)} [ f(t(u)) ],  t(u) = ε + (1 − ε)u,
    f(t) = E_{x_t ~ q(·|x)} Σ_i w(t) · CE_i(x_t),       w(t) = −α'(t)/(1 − α(t))

(MDLM's ``_forward_pass_diffusion``: ε = ``sampling_eps`` = 1e-3, CE_i = −log p_θ(x_i | x_t) at
masked positions, 0 elsewhere; SEDD: dσ/dt · score entropy). Each sequence j gets K times on
MDLM's low-discrepancy lattice, u_{jk} = (u_j + k)/K with one u_j ~ U(0, 1): every u_{jk} is
uniform, so the average of the K terms is unbiased, and it integrates the 1/t-weighted,
strongly t-dependent integrand far better than K independent times. The estimate of the split is
Σ_j ê_j / Σ_j n_j (nats per token), with ê_j the K-average for sequence j and n_j its number of
attended tokens; its standard error is that of a ratio estimator over sequences,
√(Σ_j (ê_j − R n_j)² / (m(m − 1))) / n̄, which counts both the Monte-Carlo noise and the spread
between sequences. PPL = exp(R) (its standard error exp(R)·SE), bits per token = R / ln 2.

**Discrete time (T steps, MDLM/IMDM).** The T-step bound is Σ_{i=1}^{T} E_{x_{t_i}} KL(q(x_{s_i}|
x_{t_i}, x) ‖ p_θ(x_{s_i}|x_{t_i})) with t_i = i/T, s_i = t_i − 1/T; for SUBS each term is
(α_s − α_t)/(1 − α_t) Σ_masked CE (MDLM's ``_d3pm_loss`` with the mask logit at −∞). It is
estimated as T times the term at a uniformly drawn grid index; the lattice then covers the grid
evenly. The weight T(α_s − α_t)/(1 − α_t) is exact for every schedule (for log-linear it equals
1/t, MDLM's value).

**Autoregressive.** NLL_j = Σ_{i ≥ 1} −log p(x_i | x_{<i}) over attended positions: exact, no
sampling; the standard error is the spread between sequences.

Every random draw (u_j, and the mask of sequence j at replicate k) is a keyed Philox draw
(:mod:`mdfast.rng`: the stream of (seed, purpose, replicate k) at offset j), so the numbers do
not depend on the batch size or on how many processes share the split (under torchrun each rank
takes a contiguous block of sequences and the sums are all-reduced).
"""

from __future__ import annotations

import math

import torch

from mdfast import ops, rng

__all__ = ["evaluate_likelihood", "keyed_uniform", "sequence_terms", "supports", "time_lattice"]


def keyed_uniform(seed: int, purpose: rng.Purpose, index: torch.Tensor, replicate: int, n: int):
    """Float64 uniforms in (0, 1), shape [len(index), n]: row b is the stream
    (``seed``, ``purpose``, "eval", ``replicate``) of :mod:`mdfast.rng` at offset ``index[b]``,
    so it depends on (seed, purpose, sequence index, replicate) only."""
    stream = rng.stream_seed(seed, purpose, "eval", replicate)
    return ops.uniform_rows(index.to(torch.int64), n, stream, torch.float64)


def time_lattice(seed: int, index: torch.Tensor, K: int, eps: float, T: int = 0):
    """[B, K] diffusion times: u_{jk} = (u_j + k)/K, then t = ε + (1 − ε)u (continuous) or
    t = (⌊uT⌋ + 1)/T (discrete)."""
    u = keyed_uniform(seed, rng.Purpose.TIME, index, 0, 1)
    lat = (u + torch.arange(K, device=u.device, dtype=torch.float64)[None, :]) / K
    if T > 0:
        return ((lat * T).floor().clamp(max=T - 1) + 1) / T
    return eps + (1 - eps) * lat


def _discrete_weight(schedule, t: torch.Tensor, T: int) -> torch.Tensor:
    a_t, a_s = schedule.alpha(t), schedule.alpha(t - 1.0 / T)
    return T * (a_s - a_t) / (1 - a_t)


def supports(objective) -> bool:
    """Whether :func:`evaluate_likelihood` has an estimator for ``objective``."""
    try:
        _kind(objective)
    except TypeError:
        return False
    return True


def _kind(objective) -> str:
    from mdfast.diffusion import AR, MDLM, SEDD

    if isinstance(objective, AR):
        return "ar"
    if isinstance(objective, MDLM):  # IMDM included
        return "mdlm"
    if isinstance(objective, SEDD):
        return "sedd"
    raise TypeError(
        f"mdfast: no likelihood estimator for objective {type(objective).__name__} (MDLM, IMDM, "
        "SEDD and AR have one)"
    )


@torch.no_grad()
def sequence_terms(objective, x0, attn, index, *, K: int = 1, T: int = 0, seed: int = 0):
    """Per-sequence (estimate ê_j in nats, attended tokens n_j), both float64 [B]."""
    kind = _kind(objective)
    if kind == "ar":
        nll = objective.per_token(x0).double()
        m = torch.ones_like(nll) if attn is None else attn[:, 1:].to(nll.dtype)
        return (nll * m).sum(1), m.sum(1)
    m = torch.ones(x0.shape, device=x0.device, dtype=torch.float64) if attn is None else (
        attn.to(torch.float64))  # fmt: skip
    sched = objective.schedule
    eps = objective.sampling_eps
    if kind == "sedd" and T > 0:
        raise ValueError("mdfast: SEDD has no discrete-time bound here (eval.T must be 0)")
    ts = time_lattice(seed, index, K, eps, T)
    total = torch.zeros(x0.shape[0], device=x0.device, dtype=torch.float64)
    for k in range(K):
        t = ts[:, k]
        u = keyed_uniform(seed, rng.Purpose.MASK, index, k, x0[0].numel()).view(x0.shape)
        mc = sched.move_chance(t).reshape(-1, *([1] * (x0.dim() - 1)))
        xt = torch.where(u < mc, objective.mask_index, x0)
        tf = t.float()
        sigma, _ = sched.sigma(tf)
        if kind == "sedd":
            loss = objective.per_token(x0, xt, tf, sigma)
        else:
            w = _discrete_weight(sched, t, T).float() if T > 0 else None
            loss = objective.per_token(x0, xt, tf, sigma, weight=w)
        total += (loss.double() * m).flatten(1).sum(1)
    return total / K, m.flatten(1).sum(1)


def _batches(dataset, start: int, end: int, batch_size: int):
    from mdfast.train.data import collate

    for a in range(start, end, batch_size):
        idx = torch.arange(a, min(a + batch_size, end))
        yield idx, collate(dataset, idx)


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device), None
    if isinstance(batch, dict):
        attn = batch.get("attention_mask")
        return batch["input_ids"].to(device), None if attn is None else attn.to(device)
    if isinstance(batch, (list, tuple)):
        return batch[0].to(device), None
    raise TypeError(f"mdfast: unsupported batch type {type(batch).__name__}")


@torch.no_grad()
def evaluate_likelihood(
    objective,
    dataset,
    *,
    K: int = 1,
    T: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    sequences: int = 0,
    device=None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict:
    """NELBO (diffusion) or NLL (AR) per token of the first ``sequences`` rows of ``dataset``
    (0 = all), with standard error, PPL and bits per token (see the module docstring). Under an
    initialised process group each rank takes a contiguous block of rows."""
    import torch.distributed as dist

    kind = _kind(objective)
    if K < 1:
        raise ValueError(f"mdfast: eval.K must be >= 1, got {K}")
    from mdfast.train.data import StepBatches

    n = StepBatches(dataset, 1, shuffle=False).n
    if sequences:
        n = min(n, sequences)
    if n == 0:
        raise ValueError("mdfast: the evaluation split is empty")
    device = torch.device(device) if device is not None else next(objective.parameters()).device
    ddp = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    lo, hi = n * rank // world, n * (rank + 1) // world
    sums = torch.zeros(6, dtype=torch.float64, device=device)  # m, Σe, Σn, Σe², Σn², Σen
    bar = None
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            bar = tqdm(total=hi - lo, desc=desc, unit="seq", dynamic_ncols=True)
        except ImportError:
            bar = None
    ctx = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(device.type, enabled=False)
    )
    for idx, batch in _batches(dataset, lo, hi, batch_size):
        x0, attn = _to(batch, device)
        with ctx:
            e, m = sequence_terms(objective, x0, attn, idx.to(device), K=K, T=T, seed=seed)
        sums += torch.stack(
            [torch.tensor(float(len(e)), device=device, dtype=torch.float64),
             e.sum(), m.sum(), (e * e).sum(), (m * m).sum(), (e * m).sum()]
        )  # fmt: skip
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    if ddp:
        dist.all_reduce(sums)
    cnt, se, sn, se2, sn2, sen = sums.tolist()
    r = se / sn
    d2 = max(se2 - 2 * r * sen + r * r * sn2, 0.0)
    stderr = math.sqrt(d2 / (cnt * (cnt - 1))) / (sn / cnt) if cnt > 1 else float("nan")
    ppl = math.exp(min(r, 700.0))
    return {
        "estimator": "nll" if kind == "ar" else ("nelbo_discrete" if T > 0 else "nelbo"),
        "bound": kind != "ar",
        "loss": r,
        "stderr": stderr,
        "ppl": ppl,
        "ppl_stderr": ppl * stderr,
        "bits_per_token": r / math.log(2),
        "sequences": int(cnt),
        "tokens": int(sn),
        "K": 1 if kind == "ar" else K,
        "T": T,
        "antithetic": kind != "ar" and K > 1,
        "seed": seed,
    }
