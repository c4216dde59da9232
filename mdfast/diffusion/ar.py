"""Autoregressive baseline: next-token cross-entropy with a causal backbone."""

from __future__ import annotations

import torch.nn.functional as F

from mdfast.diffusion.base import Objective, token_mean, unpack

__all__ = ["AR"]


class AR(Objective):
    """``loss = mean_i −log p(x_{i+1} | x_{≤i})`` over positions 0..L−2 (attention-masked).

    ``model(x)`` must be causal (``DiT(..., causal=True)`` or :class:`mdfast.models.CausalLM`).
    """

    def forward(self, batch):
        x0, attn, _ = unpack(batch)
        logits = self.model(x0[:, :-1])
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), x0[:, 1:].reshape(-1), reduction="none"
        ).view(x0.shape[0], -1)
        loss = token_mean(nll, None if attn is None else attn[:, 1:])
        return loss, {"nll": loss.detach(), "ppl": loss.detach().exp()}
