"""Pure-PyTorch twin of every mdfast op.

These functions are the single source of truth for the math: tests compare the kernels against
them (in float64 where it matters), benchmarks import them as the baseline, and :mod:`mdfast.ops`
falls back to them when the compiled extension is missing. They favour clarity over speed but stay
vectorised, so the fallback path is usable. They do no argument checking; :mod:`mdfast.ops` does.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------
# RNG: Philox4x32-10 and uniforms (csrc/include/mdfast/philox.h documents the stream layout)
# ---------------------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo32(a: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product a·x, for a uint32 constant and uint32 words
    held in int64. Split into 16-bit limbs so no intermediate overflows int64."""
    t = a * (x & 0xFFFF)  # < 2^48
    u = a * (x >> 16)  # < 2^48
    lo = (t + ((u & 0xFFFF) << 16)) & _MASK32
    hi = ((t >> 16) + u) >> 16
    return hi, lo


def philox4x32(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 block function: counter int64[N, 4], key int64[2] (uint32 words held in
    int64) -> int64[N, 4]. Ten rounds of

        (hi0, lo0) = mulhilo(M0, c0); (hi1, lo1) = mulhilo(M1, c2)
        c <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0),  k <- k + (W0, W1)
    """
    c = [(counter[:, j] & _MASK32) for j in range(4)]
    k0 = int(key[0]) & _MASK32
    k1 = int(key[1]) & _MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo32(_PHILOX_M0, c[0])
        hi1, lo1 = _mulhilo32(_PHILOX_M1, c[2])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
    return torch.stack(c, dim=1)


def philox_blocks(seed: int, offset: int, blocks: torch.Tensor) -> torch.Tensor:
    """Words int64[B, 4] of blocks ``blocks`` of the stream (seed, offset):
    counter = (block lo, block hi, offset lo, offset hi), key = (seed lo, seed hi)."""
    counter = torch.stack(
        [
            blocks & _MASK32,
            blocks >> 32,
            torch.full_like(blocks, offset & _MASK32),
            torch.full_like(blocks, offset >> 32),
        ],
        dim=1,
    )
    key = torch.tensor([seed & _MASK32, seed >> 32], dtype=torch.int64)
    return philox4x32(counter, key)


def uniform(
    shape: tuple[int, ...] | torch.Size,
    seed: int,
    offset: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniforms strictly inside (0, 1) from the stream (seed, offset).

    float64: element i takes block i//2, words (w[2j], w[2j+1]) with j = i%2,
    k = (w[2j] << 21) | (w[2j+1] >> 11) (53 bits), u = k·2^-53, and u = 2^-54 when k = 0.
    float32: element i takes block i//4, word w[i%4], k = w >> 8 (24 bits), u = k·2^-24, and
    u = 2^-25 when k = 0.
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    per_block = 2 if dtype == torch.float64 else 4
    blocks = torch.arange((numel + per_block - 1) // per_block, dtype=torch.int64, device=device)
    words = philox_blocks(seed, offset, blocks)
    if dtype == torch.float64:
        k = (words[:, 0::2] << 21) | (words[:, 1::2] >> 11)
        u = k.to(torch.float64) * 2.0**-53
        u = torch.where(k == 0, torch.full_like(u, 2.0**-54), u)
    else:
        k = words >> 8
        u = k.to(torch.float32) * 2.0**-24
        u = torch.where(k == 0, torch.full_like(u, 2.0**-25), u)
    return u.reshape(-1)[:numel].reshape(tuple(shape)).to(dtype)


# ---------------------------------------------------------------------------------------------
# masked cross-entropy (issue 3)
# ---------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
) -> torch.Tensor:
    """Weighted cross-entropy per row with one class left out of the softmax:

        loss[n] = w[n] * (logsumexp_{j != exclude_index} z[n, j] - z[n, target[n]])

    computed the straightforward way: upcast (float64 stays float64, everything else to
    float32), set the excluded column to -inf, ``log_softmax``, ``gather``, multiply by ``w``.
    ``weight=None`` means 1. Rows with ``w == 0`` are zeroed before the softmax (never read: a
    NaN there does not leak into the loss or the gradient) and get loss 0; their target is not
    used. Returns float64 for float64 logits, float32 otherwise.
    """
    acc = _acc_dtype(logits.dtype)
    z = logits.to(acc)
    owned = z is not logits
    if weight is not None:
        keep = weight != 0
        z = torch.where(keep[:, None], z, 0.0)
        target = torch.where(keep, target, 0)
        owned = True
    if exclude_index >= 0:
        idx = torch.tensor([exclude_index], device=z.device)
        z = z.index_fill_(1, idx, float("-inf")) if owned else z.index_fill(1, idx, float("-inf"))
    nll = -z.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
    if weight is None:
        return nll
    return torch.where(keep, weight.to(acc) * nll, 0.0)


def masked_ce_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    exclude_index: int = -1,
) -> torch.Tensor:
    """:func:`masked_ce` through ``torch.nn.functional.cross_entropy(reduction="none")`` (the
    benchmarks' "PyTorch" baseline): excluded column set to -inf on an upcast copy, then
    ``w * cross_entropy``. Unlike :func:`masked_ce`, zero-weight rows are read."""
    z = logits.to(_acc_dtype(logits.dtype))
    if exclude_index >= 0:
        z = z.index_fill(1, torch.tensor([exclude_index], device=z.device), float("-inf"))
    loss = torch.nn.functional.cross_entropy(z, target, reduction="none")
    return loss if weight is None else weight.to(loss.dtype) * loss


def linear_masked_ce(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    row_weight: torch.Tensor,
    exclude_index: int = -1,
) -> torch.Tensor:
    """Unfused output projection + :func:`masked_ce`: ``logits = hidden @ weight.T + bias`` for
    every row (in the inputs' dtype, N x V), then the masked cross-entropy of each row."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return masked_ce(logits, target, row_weight, exclude_index)


MDLM_NEG_INFINITY = -1000000.0


def mdlm_subs_loss(
    logits: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, mask_index: int, t: torch.Tensor
) -> torch.Tensor:
    """MDLM's own per-token SUBS loss for the log-linear schedule, transcribed from
    ``kuleshov-group/mdlm`` ``diffusion.py`` (``_subs_parameterization`` then
    ``_forward_pass_diffusion``): add -1e6 to the mask logit, subtract the logsumexp, overwrite
    unmasked rows with -1e6 except 0 at the observed token (carry-over), gather ``x0`` and weight
    ``-log p`` by ``dsigma / expm1(sigma)`` (``= 1/t``). ``logits [B, L, V]``, ``x0, xt [B, L]``,
    ``t [B]``; returns ``[B, L]`` in the upcast dtype."""
    logits = logits.to(_acc_dtype(logits.dtype)).clone()
    logits[:, :, mask_index] += MDLM_NEG_INFINITY
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_index
    logits[unmasked] = MDLM_NEG_INFINITY
    logits[unmasked, xt[unmasked]] = 0
    log_p_theta = torch.gather(logits, -1, x0[:, :, None]).squeeze(-1)
    eps = 1e-3
    sigma = -torch.log1p(-(1 - eps) * t)
    dsigma = (1 - eps) / (1 - (1 - eps) * t)
    return -log_p_theta * (dsigma / torch.expm1(sigma))[:, None]


# ---------------------------------------------------------------------------------------------
# sampling (issue 4)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens (issue 5)
# ---------------------------------------------------------------------------------------------


def _prime_uniform_substream(
    numel: int, seed: int, offset: int, stream: int, device=None
) -> torch.Tensor:
    """float64 uniforms of Philox sub-stream ``stream`` (blocks (stream << 56) | b, philox.h)."""
    blocks = torch.arange((numel + 1) // 2, dtype=torch.int64, device=device) | (stream << 56)
    words = philox_blocks(seed, offset, blocks.cpu()).to(device)
    k = (words[:, 0::2] << 21) | (words[:, 1::2] >> 11)
    u = k.to(torch.float64) * 2.0**-53
    u = torch.where(k == 0, torch.full_like(u, 2.0**-54), u)
    return u.reshape(-1)[:numel]


def prime_digit_table(num_classes: int, base: int, num_digits: int, device=None) -> torch.Tensor:
    """int64[C, ℓ]: digit_j(c) = ⌊c / b^(ℓ−1−j)⌋ mod b for every class (digit 0 most
    significant)."""
    c = torch.arange(num_classes, dtype=torch.int64, device=device)
    powers = torch.tensor(
        [base ** (num_digits - 1 - j) for j in range(num_digits)], dtype=torch.int64, device=device
    )
    return torch.div(c[:, None], powers, rounding_mode="floor") % base


def prime_consistent_mask(digits: torch.Tensor, num_classes: int, base: int) -> torch.Tensor:
    """bool[N, C]: c ∈ V_i, i.e. every visible digit of row i (≠ b) equals digit_j(c).

    The seed's way (``convert_to_marginal_filter_logit``): one boolean table of shape [b+1, C] per
    digit j (row b, the mask id, all true), gathered by the row's digit and AND-ed over j."""
    num_digits = digits.shape[1]
    table = prime_digit_table(num_classes, base, num_digits, digits.device)  # [C, ℓ]
    values = torch.arange(base + 1, dtype=torch.int64, device=digits.device)
    mask = torch.ones(digits.shape[0], num_classes, dtype=torch.bool, device=digits.device)
    for j in range(num_digits):
        per_digit = (table[None, :, j] == values[:, None]) | (values[:, None] == base)  # [b+1, C]
        mask &= per_digit[digits[:, j]]
    return mask


def prime_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    digits: torch.Tensor,
    base: int,
    mode: str = "joint",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Consistent-set cross-entropy of MDM-Prime, materialised the seed's way.

    With V_i the classes consistent with row i's visible digits and p_V = softmax(z) over V_i:

    * ``joint``: ℓ_i = −log p_V(x_i) = logsumexp_{V_i} z − z_{x_i}.
    * ``elbo``:  ℓ_i = Σ_{j masked} −log Σ_{c ∈ V_i, digit_j(c) = digit_j(x_i)} p_V(c)
      = Σ_{j masked} (logsumexp_{V_i} z − logsumexp_{V_i ∩ {digit_j = digit_j(x_i)}} z).

    Returns w_i · ℓ_i (float64 for float64 logits, float32 otherwise); rows with no masked digit
    or w_i = 0 give exactly 0 whatever their logits.
    """
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    num_classes = logits.shape[1]
    z = logits.to(acc)
    in_v = prime_consistent_mask(digits, num_classes, base)
    z_v = z.masked_fill(~in_v, float("-inf"))
    lse_v = torch.logsumexp(z_v, dim=1)
    masked = digits == base
    if mode == "joint":
        raw = lse_v - z.gather(1, target[:, None])[:, 0]
    else:
        table = prime_digit_table(num_classes, base, digits.shape[1], logits.device)  # [C, ℓ]
        same = table[None, :, :] == table[target][:, None, :]  # [N, C, ℓ]
        lse_j = torch.logsumexp(z_v[:, :, None].masked_fill(~same, float("-inf")), dim=1)
        raw = torch.where(masked, lse_v[:, None] - lse_j, torch.zeros_like(lse_j)).sum(1)
    skip = ~masked.any(1)
    if weight is not None:
        w = weight.to(acc)
        skip = skip | (w == 0)
        raw = w * raw
    return torch.where(skip, torch.zeros_like(raw), raw)


def _prime_unmask_probability(alpha_t: float, alpha_s: float) -> float:
    if alpha_t >= 1.0:
        return 1.0
    return min(1.0, max(0.0, (alpha_s - alpha_t) / (1.0 - alpha_t)))


def prime_sample_step(
    logits: torch.Tensor,
    digits: torch.Tensor,
    base: int,
    alpha_t: float,
    alpha_s: float,
    temperature: float = 1.0,
    mode: str = "exact",
    fixed_digits: torch.Tensor | None = None,
    seed: int = 0,
    offset: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One reverse step of independent digit masking, materialised the seed's way.

    Each masked digit j of row n that is not in ``fixed_digits`` is revealed when
    u0[n·ℓ + j] < (α_s − α_t)/(1 − α_t) (1 when α_t = 1). Revealed values:

    * ``exact``: ĉ_n = argmax_{c ∈ V_n} (z_c/τ + g1[n·C + c]) (a draw from softmax(z/τ) over V_n);
      every revealed digit takes digit_j(ĉ_n).
    * ``marginal``: q_{nj}(k) = Σ_{c ∈ V_n, digit_j(c) = k} softmax_{V_n}(z/τ)(c) (materialised as
      [N, ℓ, b, C] like the seed's ``convert_to_marginal_time``), and digit j takes
      argmax_k (log q_{nj}(k) + g2[(n·ℓ + j)·b + k]), independently per digit. A row whose
      assembled digits allow no class < C takes digit_j(ĉ_n) for all its revealed digits instead,
      and so does a row revealing a single digit (its marginal is the law of digit_j(ĉ_n)).

    g_s[i] = −log(−log u) for u element i of float64 Philox sub-stream s of (seed, offset). With a
    ``generator`` the uniforms come from ``torch.rand`` instead (the seed's RNG; same law, other
    bits). Returns the new digits int64[N, ℓ].
    """
    n_rows, num_classes = logits.shape
    num_digits = digits.shape[1]
    dev = logits.device

    def uniforms(numel: int, stream: int) -> torch.Tensor:
        if generator is not None:
            u = torch.rand(numel, dtype=torch.float64, generator=generator, device=dev)
            return u.clamp_min(2.0**-54)
        return _prime_uniform_substream(numel, seed, offset, stream, dev)

    masked = digits == base
    reveal = masked & (
        uniforms(n_rows * num_digits, 0).view(n_rows, num_digits)
        < (_prime_unmask_probability(alpha_t, alpha_s))
    )
    if fixed_digits is not None and fixed_digits.numel():
        fixed = torch.zeros(num_digits, dtype=torch.bool, device=dev)
        fixed[fixed_digits.to(dev)] = True
        reveal &= ~fixed
    in_v = prime_consistent_mask(digits, num_classes, base)
    table = prime_digit_table(num_classes, base, num_digits, dev)  # [C, ℓ]
    gumbel = -torch.log(-torch.log(uniforms(n_rows * num_classes, 1))).view(n_rows, num_classes)
    score = (logits.to(torch.float64) / temperature + gumbel).masked_fill(~in_v, float("-inf"))
    c_hat = score.argmax(dim=1)
    joint = table[c_hat]  # [N, ℓ]
    if mode == "exact":
        return torch.where(reveal, joint, digits)
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    p = torch.softmax((logits.to(acc) / temperature).masked_fill(~in_v, float("-inf")), dim=1)
    k = torch.arange(base, dtype=torch.int64, device=dev)
    onehot = table.T[:, None, :] == k[None, :, None]  # [ℓ, b, C]
    q = (p[:, None, None, :] * onehot[None]).sum(-1)  # [N, ℓ, b]
    g2 = -torch.log(-torch.log(uniforms(n_rows * num_digits * base, 2)))
    values = (q.to(torch.float64).log() + g2.view(n_rows, num_digits, base)).argmax(-1)
    candidate = torch.where(reveal, values, digits)
    powers = torch.tensor(
        [base ** (num_digits - 1 - j) for j in range(num_digits)], dtype=torch.int64, device=dev
    )
    smallest = (torch.where(candidate == base, 0, candidate) * powers).sum(1)
    invalid = (smallest >= num_classes) | (reveal.sum(1) == 1)
    return torch.where(reveal & invalid[:, None], joint, candidate)
