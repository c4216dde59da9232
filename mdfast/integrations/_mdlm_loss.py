"""The patched SUBS loss path of an MDLM-family ``Diffusion`` (``_forward_pass_diffusion``).

MDLM computes, per token, with z the backbone's logits at the noised input x_t::

    log p = log_softmax(z + (-1e6) * onehot(mask))          (B x L x V, the -1e6 offset)
    log p[unmasked rows] = -1e6 everywhere, 0 at x_t        (carry-over)
    loss[b, l] = -w_b * log p[b, l, x0[b, l]]

with w = dsigma / expm1(sigma) (= 1/t for the log-linear schedule), T * (1/T) / t in discrete
time (``T > 0``; the second term of MDLM's two-term KL vanishes for SUBS because p(mask) = 0), or
-log1p(-exp(-sigma_min)) with ``change_of_variables`` / ``importance_sampling``. Unmasked positions
contribute exactly 0. Here the same numbers come from one fused op over the raw logits: the mask
class is left out of the softmax (MDLM's exp(-1e6 - lse) is exactly 0 in every float format),
unmasked rows get weight 0 and are never read, and no B x L x V log-probability tensor exists.
When the backbone's output projection is exposed and valid to fuse, the projection runs inside the
loss too (:func:`mdfast.ops.linear_masked_ce`), on the masked rows only.

Time, noise and masking are drawn by the codebase's own ``_sample_t``, ``noise`` and ``q_xt``, in
the same order as the original, so under the same torch seed the patched and original losses see
the same t and x_t.
"""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.integrations._mdlm_backbone import Network, head_params


def forward_pass_diffusion(diffusion, x0: torch.Tensor, network: Network, inplace_backward: bool):
    """Per-token SUBS loss [B, L] with MDLM's ``_forward_pass_diffusion`` contract."""
    t = diffusion._sample_t(x0.shape[0], x0.device)
    T = diffusion.T
    if T > 0:
        t = (t * T).to(torch.int)
        t = t / T
        t += 1 / T  # t in {1/T, 2/T, ..., 1}
    if diffusion.change_of_variables:
        cond = t[:, None]
        f_T = torch.log1p(-torch.exp(-diffusion.noise.sigma_max))
        f_0 = torch.log1p(-torch.exp(-diffusion.noise.sigma_min))
        move_chance = torch.exp(f_0 + t * (f_T - f_0))[:, None]
    else:
        sigma, dsigma = diffusion.noise(t)
        cond = sigma[:, None]
        move_chance = 1 - torch.exp(-sigma[:, None])
    xt = diffusion.q_xt(x0, move_chance)
    if T > 0:
        # MDLM: T * (dt / t) * (-log p) with t clamped below 1; its second KL term is 0 * (0 - 0)
        # (it evaluates 0/0 = NaN at t = 1/T; the limit, 0, is what this returns)
        # T is applied in float64, as MDLM applies it to the already upcast product T * (c * nll)
        weight = T * ((1 / T) / t[:, None].clamp(0.0, 1.0 - 1e-4)).to(torch.float64)
    elif diffusion.change_of_variables or diffusion.importance_sampling:
        weight = -torch.log1p(-torch.exp(-diffusion.noise.sigma_min))
    else:
        weight = (dsigma / torch.expm1(sigma))[:, None]
    return subs_nll(diffusion, network, x0, xt, cond, weight, inplace_backward)


def subs_nll(diffusion, network: Network, x0, xt, cond, weight, inplace_backward: bool):
    """weight * (-log p_theta(x0 | xt)) at masked positions, 0 elsewhere: [B, L]."""
    mask = diffusion.mask_index
    feats = network(diffusion, xt, cond)
    out = feats.logits if feats.logits is not None else feats.hidden
    acc = torch.float64 if out.dtype == torch.float64 else torch.float32
    weight = torch.as_tensor(weight, device=xt.device).detach().to(acc)
    # A data token equal to the mask id (GPT-2's [PAD] shares it) would score ~1e6 / t in MDLM;
    # MDLM's attention mask drops those positions, and here they get weight 0.
    row_weight = torch.where((xt == mask) & (x0 != mask), weight.expand(xt.shape), 0.0)
    target = x0.reshape(-1)
    if feats.logits is not None:
        loss = ops.masked_ce(
            out.reshape(-1, out.shape[-1]),
            target,
            row_weight.reshape(-1),
            exclude_index=mask,
            inplace_backward=inplace_backward,
        )
    else:
        dtype = feats.head_dtype or out.dtype
        w, b = head_params(network.linear, dtype)
        loss = ops.linear_masked_ce(
            out.reshape(-1, out.shape[-1]).to(dtype),
            w,
            b,
            target,
            row_weight.reshape(-1),
            exclude_index=mask,
        )
    return loss.view(xt.shape)
