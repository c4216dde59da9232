"""Pure-PyTorch twin of every mdfast op.

These functions are the single source of truth for the math: tests compare the kernels against
them (in float64 where it matters), benchmarks import them as the baseline, and :mod:`mdfast.ops`
falls back to them when the compiled extension is missing. They favour clarity over speed but stay
vectorised, so the fallback path is usable. They do no argument checking; :mod:`mdfast.ops` does.
This module never imports the op surface. The seed codebases' own functions (the sampling and
loss code as MDLM / ReMDM wrote it) are in :mod:`mdfast.baselines`.
"""

from __future__ import annotations

import warnings

import torch

from mdfast import digits as _digits

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


def substream_uniform(seed: int, offset: int, stream: int, index: torch.Tensor) -> torch.Tensor:
    """Float64 uniforms of sub-stream ``stream`` of the call (seed, offset) at element indices
    ``index`` (int64, any shape): block (stream << 56) | (i >> 1), words (w[2j], w[2j+1]) with
    j = i & 1, exactly as ``uniform_double_at(seed, offset, stream, i)`` in philox.h."""
    flat = index.reshape(-1)
    words = philox_blocks(seed, offset, (stream << 56) | (flat >> 1))
    j = (flat & 1) * 2
    hi = words.gather(1, j[:, None])[:, 0]
    lo = words.gather(1, (j + 1)[:, None])[:, 0]
    k = (hi << 21) | (lo >> 11)
    u = k.to(torch.float64) * 2.0**-53
    u = torch.where(k == 0, torch.full_like(u, 2.0**-54), u)
    return u.reshape(index.shape)


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
    if dtype == torch.float64:
        index = torch.arange(numel, dtype=torch.int64, device=device)
        return substream_uniform(seed, offset, 0, index).reshape(tuple(shape))
    words = philox_blocks(seed, offset, torch.arange((numel + 3) // 4, device=device))
    return _uniforms_from_words(words, dtype).reshape(-1)[:numel].reshape(tuple(shape))


def _uniforms_from_words(words: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Philox words int64[..., 4] -> the block's uniforms: float64[..., 2] from the word pairs
    (w0, w1), (w2, w3), or float32[..., 4], one per word (layout of :func:`uniform`)."""
    if dtype == torch.float64:
        k = (words[..., 0::2] << 21) | (words[..., 1::2] >> 11)
        u = k.to(torch.float64) * 2.0**-53
        return torch.where(k == 0, torch.full_like(u, 2.0**-54), u)
    k = words >> 8
    u = k.to(torch.float32) * 2.0**-24
    return torch.where(k == 0, torch.full_like(u, 2.0**-25), u)


def uniform_rows(
    offsets: torch.Tensor, n: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """[R, n] uniforms whose row r is ``uniform((n,), seed, offsets[r])``: elements 0..n-1 of the
    stream (seed, offsets[r]) (offsets read as uint64 bits)."""
    per_block = 2 if dtype == torch.float64 else 4
    nb = (n + per_block - 1) // per_block
    rows = offsets.shape[0]
    block = torch.arange(nb, dtype=torch.int64, device=offsets.device).repeat(rows)
    off = offsets.to(torch.int64).repeat_interleave(nb)
    counter = torch.stack(
        [block & _MASK32, block >> 32, off & _MASK32, (off >> 32) & _MASK32], dim=1
    )
    key = torch.tensor([seed & _MASK32, seed >> 32], dtype=torch.int64)
    words = philox4x32(counter, key).view(rows, nb, 4)
    return _uniforms_from_words(words, dtype).reshape(rows, nb * per_block)[:, :n].contiguous()


# ---------------------------------------------------------------------------------------------
# masked cross-entropy
# ---------------------------------------------------------------------------------------------


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every op accumulates (and returns losses) in for inputs of ``dtype``: float64
    for float64, float32 otherwise."""
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
    acc = acc_dtype(logits.dtype)
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


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------

_FIXED_SCALE = 2.0**62


def _float_key(z: torch.Tensor) -> torch.Tensor:
    """Order-preserving map of float32 bit patterns to [0, 2^32) (held in int64)."""
    bits = z.to(torch.float32).view(torch.int32).to(torch.int64) & _MASK32
    return torch.where(bits >= 2**31, _MASK32 - bits, bits | 2**31)


def sample_x0(
    logits: torch.Tensor,
    rows: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    exclude_index: int = -1,
    nucleus: str = "remdm",
    seed: int = 0,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x0 ~ softmax(logits[row] / temperature) for each requested row (all rows when
    ``rows`` is None), with class ``exclude_index`` removed, truncated by top-k and then top-p.

    Ranking: classes sorted by logit (at float32 precision) descending, ties by smaller index.
    Top-k keeps the first k. Top-p on the renormalised top-k distribution, with masses in 2^-62
    fixed point m = floor(p * 2^62), cumulative sums S_j and target floor(top_p * sum m): the
    crossing class f is the first with S_f > target ("remdm": keep the classes before f, and
    always the first) or S_f >= target ("hf": keep up to and including f).

    Draw: Gumbel-max in float64, argmax_c (z_c / tau + g_c) over the kept classes with
    g_c = -log(-log u), u from Philox sub-stream 1 at element row * V + c; ties to the smaller
    index; temperature 0 is the top-ranked class. Returns (token int64[R], prob float32[R]), prob
    being the token's probability under the truncated distribution (at temperature 1 when
    temperature is 0). Raises ValueError for a NaN in a sampled row or a row with no class left.
    """
    N, V = logits.shape
    device = logits.device
    row_ids = torch.arange(N, device=device) if rows is None else rows.to(torch.int64)
    R = row_ids.shape[0]
    if R == 0:
        return (
            torch.empty(0, dtype=torch.int64, device=device),
            torch.empty(0, dtype=torch.float32, device=device),
        )
    z = logits[row_ids].to(torch.float64)
    tau = temperature if temperature > 0 else 1.0
    s = z if tau == 1.0 else z / tau
    allowed = torch.ones(V, dtype=torch.bool, device=device)
    if exclude_index >= 0:
        allowed[exclude_index] = False
    allowed = allowed.expand(R, V)
    nan_rows = (torch.isnan(z) & allowed).any(dim=1)
    if nan_rows.any():
        bad = int(row_ids[nan_rows.nonzero()[0, 0]])
        raise ValueError(
            f"mdfast: argument 'logits' has a NaN in row {bad}, a row that must be sampled"
        )
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, dim=1, keepdim=True)
    empty = ~(lse[:, 0] > float("-inf"))
    if empty.any():
        bad = int(row_ids[empty.nonzero()[0, 0]])
        raise ValueError(
            f"mdfast: argument 'logits' row {bad} has no class to draw "
            "(every class excluded or -inf)"
        )
    p = torch.exp(s - lse)
    key = torch.where(allowed, _float_key(z), torch.full_like(z, -1, dtype=torch.int64))
    _, order = torch.sort(key, dim=1, descending=True, stable=True)
    n_allowed = int(allowed[0].sum())
    position = torch.arange(V, device=device).expand(R, V)
    kept_sorted = position < n_allowed
    if 0 < top_k < n_allowed:
        kept_sorted = kept_sorted & (position < top_k)
    if top_p < 1.0:
        mass = torch.floor(p.gather(1, order) * _FIXED_SCALE).to(torch.int64) * kept_sorted
        cum = mass.cumsum(dim=1)
        target = torch.floor(top_p * cum[:, -1:].to(torch.float64)).to(torch.int64)
        cross = (cum >= target) if nucleus == "hf" else (cum > target)
        cross = cross & kept_sorted
        found = cross.any(dim=1, keepdim=True)
        f = cross.to(torch.int8).argmax(dim=1, keepdim=True)
        last = (f + 1) if nucleus == "hf" else f.clamp(min=1)
        kept_sorted = kept_sorted & (~found | (position < last))
    kept = torch.zeros_like(kept_sorted).scatter(1, order, kept_sorted)
    truncated = not bool(kept.eq(allowed).all())
    if temperature > 0:
        idx = row_ids[:, None] * V + torch.arange(V, device=device)
        g = -torch.log(-torch.log(substream_uniform(seed, offset, 1, idx)))
        score = (s + g).masked_fill(~kept, float("-inf"))
        token = score.argmax(dim=1)
    else:
        token = order[:, 0]
    prob = p.gather(1, token[:, None])[:, 0]
    if truncated:
        prob = prob / (p * kept).sum(dim=1)
    return token, prob.to(torch.float32)


def unmask_probability(
    alpha_t: torch.Tensor, alpha_s: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """ReMDM / MDLM probability that a masked position unmasks on the step t -> s:
    (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t), clamped to [0, 1]; 1 when alpha_t = 1."""
    den = 1.0 - alpha_t
    q = ((alpha_s - (1.0 - sigma) * alpha_t) / den).clamp(0.0, 1.0)
    return torch.where(den > 0, q, torch.ones_like(q))


def mask_step(
    x: torch.Tensor,
    logits: torch.Tensor | None,
    alpha_t: torch.Tensor,
    alpha_s: torch.Tensor,
    remask: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
    mask_index: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    nucleus: str = "remdm",
    seed: int = 0,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reverse step t -> s of a masked diffusion model, per position i of x[B, L], with the
    event uniform u_i from Philox sub-stream 0 (element b * L + l) and sigma = remask (0 if None):

    * masked: unmask if u_i < (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t) (clamped), with
      the token drawn by :func:`sample_x0` from logits row i (mask class excluded, same seed and
      offset); otherwise stay masked;
    * decoded: remask if u_i < sigma, else carry over.

    alpha_t, alpha_s: float64 [B]; remask: float64 [B, L] or None; confidence: float32 [B, L] or
    None (= -inf everywhere). Returns (x_next, changed, confidence): ReMDM's bookkeeping, -p of
    the drawn token where a position unmasks, -inf where one remasks, the old value elsewhere.
    Without logits, unmasking positions keep the mask id in x_next (changed is True there) and
    the caller draws their tokens. Logits rows of positions that do not unmask are never read.
    """
    B, L = x.shape
    device = x.device
    u = substream_uniform(seed, offset, 0, torch.arange(B * L, device=device)).view(B, L)
    sigma = (
        torch.zeros(B, L, dtype=torch.float64, device=device)
        if remask is None
        else remask.to(torch.float64)
    )
    q = unmask_probability(
        alpha_t.to(torch.float64)[:, None], alpha_s.to(torch.float64)[:, None], sigma
    )
    masked = x == mask_index
    unmask = masked & (u < q)
    remasked = ~masked & (u < sigma)
    changed = unmask | remasked
    x_next = torch.where(remasked, torch.full_like(x, mask_index), x)
    conf = (
        torch.full((B, L), float("-inf"), dtype=torch.float32, device=device)
        if confidence is None
        else confidence.to(torch.float32).clone()
    )
    conf = conf.masked_fill(changed, float("-inf"))
    if logits is not None:
        rows = unmask.reshape(-1).nonzero()[:, 0]
        if rows.numel() > 0:
            V = logits.shape[-1]
            token, prob = sample_x0(
                logits.reshape(B * L, V),
                rows,
                temperature,
                top_p,
                top_k,
                mask_index,
                nucleus,
                seed,
                offset,
            )
            x_next = x_next.reshape(-1).index_put((rows,), token).view(B, L)
            conf = conf.reshape(-1).index_put((rows,), -prob).view(B, L)
    return x_next, changed, conf


# ---------------------------------------------------------------------------------------------
# MDM-Prime sub-tokens
# ---------------------------------------------------------------------------------------------


def prime_digit_table(num_classes: int, base: int, num_digits: int, device=None) -> torch.Tensor:
    """int64[C, ℓ]: digit_j(c) = ⌊c / b^(ℓ−1−j)⌋ mod b for every class (digit 0 most
    significant)."""
    return _digits.to_digits(
        torch.arange(num_classes, dtype=torch.int64, device=device), base, num_digits
    )


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
    acc = acc_dtype(logits.dtype)
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
        return substream_uniform(
            seed, offset, stream, torch.arange(numel, dtype=torch.int64, device=dev)
        )

    masked = digits == base
    reveal = masked & (
        uniforms(n_rows * num_digits, 0).view(n_rows, num_digits)
        < unmask_probability(
            torch.tensor(alpha_t, dtype=torch.float64),
            torch.tensor(alpha_s, dtype=torch.float64),
            torch.tensor(0.0, dtype=torch.float64),
        ).to(dev)
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
    acc = acc_dtype(logits.dtype)
    p = torch.softmax((logits.to(acc) / temperature).masked_fill(~in_v, float("-inf")), dim=1)
    k = torch.arange(base, dtype=torch.int64, device=dev)
    onehot = table.T[:, None, :] == k[None, :, None]  # [ℓ, b, C]
    q = (p[:, None, None, :] * onehot[None]).sum(-1)  # [N, ℓ, b]
    g2 = -torch.log(-torch.log(uniforms(n_rows * num_digits * base, 2)))
    values = (q.to(torch.float64).log() + g2.view(n_rows, num_digits, base)).argmax(-1)
    candidate = torch.where(reveal, values, digits)
    invalid = (_digits.smallest_class(candidate, base) >= num_classes) | (reveal.sum(1) == 1)
    return torch.where(reveal & invalid[:, None], joint, candidate)


def __getattr__(name: str):
    """The names that moved to :mod:`mdfast.baselines` still resolve here, with a warning."""
    from mdfast import baselines

    moved = "SEED_NEG_INFINITY" if name == "MDLM_NEG_INFINITY" else name
    if moved in baselines.__all__:
        warnings.warn(
            f"mdfast.reference.{name} moved to mdfast.baselines.{moved}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(baselines, moved)
    raise AttributeError(f"module 'mdfast.reference' has no attribute {name!r}")
