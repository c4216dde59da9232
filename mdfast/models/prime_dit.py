"""MDM-Prime's text backbone (the seed's ``PerceiverDIT``): MDLM's DiT whose input is ℓ base-b
digits per token instead of a token id.

One table ``vocab_embed.embedding`` of b + 1 rows (b digit values and the mask id b) of width
d/ℓ is shared by every digit position; a token's ℓ digit embeddings are concatenated (digit 0,
the most significant, first) into its d-wide input, and the DiT runs over the L tokens. The head
gives C joint logits per token (``vocab_size`` = C, no mask class): the Prime losses restrict the
softmax to the classes consistent with the visible digits.
"""

from __future__ import annotations

import torch

from mdfast.digits import prime_base
from mdfast.models.dit import DiT, DiTConfig, EmbeddingLayer

__all__ = ["PrimeDiT"]


class PrimeDiT(DiT):
    """``forward(digits [B, L, ℓ] or [B, L·ℓ], sigma=None) -> logits [B, L, C]``.

    ``config`` / ``overrides`` as :class:`~mdfast.models.dit.DiT` with ``vocab_size`` = C;
    ``num_digits`` = ℓ (``hidden_dim`` must be divisible by it).
    """

    def __init__(self, config: DiTConfig | str | None = None, *, num_digits: int, **overrides):
        super().__init__(config, **overrides)
        d = self.config.hidden_dim
        if num_digits < 1 or d % num_digits:
            raise ValueError(
                f"mdfast: 'num_digits' ({num_digits}) must be >= 1 and divide 'hidden_dim' ({d})"
            )
        self.num_digits = num_digits
        self.base = prime_base(self.config.vocab_size, num_digits)
        self.vocab_embed = EmbeddingLayer(d // num_digits, self.base + 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # [B, L·ℓ], position i·ℓ + j (the seed's layout)
            x = x.reshape(x.shape[0], -1, self.num_digits)
        if x.shape[-1] != self.num_digits:
            raise ValueError(
                f"mdfast: PrimeDiT input must end in {self.num_digits} digits, got {list(x.shape)}"
            )
        return self.vocab_embed(x).flatten(-2)
