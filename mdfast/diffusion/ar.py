"""Autoregressive baseline: next-token cross-entropy with a causal backbone."""

from __future__ import annotations

import torch

from mdfast import ops
from mdfast.diffusion.base import Objective, token_mean, unpack

__all__ = ["AR"]


class AR(Objective):
    """``loss = mean_i −log p(x_{i+1} | x_{≤i})`` over positions 0..L−2 (attention-masked).

    ``model(x)`` must be causal (``DiT(..., causal=True)`` or :class:`mdfast.models.CausalLM`).
    ``exclude_index``: a class left out of the softmax (MDLM's AR keeps the diffusion mask id
    in its 50258-way output and sets its logit to −1000 before the log-softmax). ``fused``: the
    trunk then :func:`mdfast.ops.linear_masked_ce`, logits a chunk of rows at a time.
    """

    def __init__(self, model, exclude_index: int = -1, fused: bool = False):
        super().__init__(model)
        self.exclude_index = exclude_index
        self.fused = fused

    def per_token(self, x0: torch.Tensor) -> torch.Tensor:
        """−log p(x0[:, i+1] | x0[:, ≤i]), shape [B, L−1] (float32)."""
        inp, target = x0[:, :-1], x0[:, 1:]
        if self.fused:
            hidden = self.model.trunk(inp, None)
            w, b = self.model.head_weight, self.model.head_bias
            dev = hidden.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else w.dtype
            rows = torch.ones(target.numel(), device=x0.device, dtype=torch.float32)
            nll = ops.linear_masked_ce(
                hidden.reshape(-1, hidden.shape[-1]).to(dtype), w.to(dtype),
                None if b is None else b.to(dtype), target.reshape(-1), rows,
                exclude_index=self.exclude_index,
            )  # fmt: skip
        else:
            logits = self.model(inp)
            nll = ops.masked_ce(
                logits.reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                None,
                exclude_index=self.exclude_index,
            )
        return nll.view(target.shape)

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        nll = self.per_token(x0)
        loss = token_mean(nll, None if attn is None else attn[:, 1:])
        return loss, {"nll": loss.detach(), "ppl": loss.detach().exp()}
