"""MDM-Prime as a training objective (``objective.name=prime``): a backbone that reads ℓ digits
per token and returns C joint logits per token, around the :class:`mdfast.diffusion.Prime`
process.

Layouts:

* ``"image"``: a batch holds uint8 images [B, 3, H, W]; sub-pixel value v is class v of
  C = 256, or (``super_token``) each pixel's 24 bits are two 12-bit tokens (C = 4096,
  :func:`mdfast.digits.super_encode`). Token n of an image is (colour or super-token t, row, col)
  in that order, L = T·H·W. The backbone (:class:`mdfast.models.UNet`) takes the digits as
  [B, T·ℓ, H, W] (channel t·ℓ + j) and returns [B, T, H, W, C'] (C' ≥ C; a seed MDM's extra
  mask logit is dropped). Optional random horizontal flips (training only).
* ``"sequence"``: token ids [B, L] (e.g. GPT-2 text); the backbone
  (:class:`mdfast.models.prime_dit.PrimeDiT`) takes digits [B, L, ℓ] and returns [B, L, C].

Loss per batch: times t from :meth:`Prime.sample_times` (stratified), every digit masked
independently (:meth:`Prime.noise`), ℓ_i = :func:`mdfast.ops.prime_ce` per token in ``loss``
mode, averaged over tokens, weighted per sequence by

* ``weighting="elbo"``: the ELBO weight |α'|/(1 − α) (the seed's text recipe: 1/t under the
  log-linear schedule), or
* ``weighting="uniform"``: 1 (the seed's image recipe, discrete flow matching's
  cross-entropy; tokens with no masked digit contribute 0 in both).

Training uses ``loss`` (``"joint"``, the seed's); in eval mode (``objective.eval()``) the
objective always returns the ``elbo`` loss with ELBO weights, an unbiased estimate of the NELBO
per token (a bound on the NLL for every ℓ), and ``bits_per_dim`` among its metrics.

``mixture_labels`` K > 0: the uniform-mixture baseline. Each training sample gets a label
k ~ U{0, …, K−1} that the backbone is conditioned on, and sampling draws one uniform label per
sample, so the model is p(x) = (1/K) Σ_k p_θ(x | k). (The seed passes the label to a UNet built
without label input, so its "mixture" is plain MDM at K times the sampling cost; and since the
label is independent of the data, the optimum has p_θ(x | k) = p(x) for every k: the baseline
measures what the extra conditioning capacity buys, not a learned clustering.) Its likelihood
is reported with a uniformly drawn label per term, which bounds the mixture's NLL by Jensen.

Noise: times, digit masks, flips and mixture labels are keyed draws (:mod:`mdfast.rng`:
``Purpose.TIME``, ``Purpose.MASK``, ``"hflip"``, ``"mixture_label"``), so under the trainer's
:class:`mdfast.rng.NoiseKey` sample g of step s draws the same numbers however the global batch
is split. :meth:`PrimeObjective.nll` is :func:`mdfast.metrics.likelihood.sequence_terms` (the
split likelihood of ``mdfast eval``), keyed by (seed, image index).
"""

from __future__ import annotations

import math

import torch

from mdfast import ops, rng
from mdfast.data.images import random_hflip
from mdfast.diffusion.base import Objective, unpack
from mdfast.diffusion.prime import Prime
from mdfast.digits import decode, super_decode, super_encode
from mdfast.sampling.prime import PrimeSamplerSettings, prime_sample

__all__ = ["PrimeObjective"]

_FLIP = "hflip"  # the purpose of the flips' keyed draws


class PrimeObjective(Objective):
    """See the module docstring. ``model``: the backbone; every other argument is a field of the
    ``prime`` objective section."""

    LABEL_PURPOSE = "mixture_label"  # the purpose of the mixture labels' keyed draws

    def __init__(
        self,
        model,
        *,
        num_classes: int = 256,
        num_digits: int = 2,
        layout: str = "image",
        image_size: int = 32,
        channels: int = 3,
        super_token: bool = False,
        convention: str = "polynomial",
        schedule_n: float = 3.0,
        eps: float = 1e-3,
        loss: str = "joint",
        weighting: str = "uniform",
        hflip: bool = False,
        mixture_labels: int = 0,
    ):
        super().__init__(model)
        if layout not in ("image", "sequence"):
            raise ValueError(
                f"mdfast: objective.layout must be 'image' or 'sequence', got '{layout}'"
            )
        if weighting not in ("elbo", "uniform"):
            raise ValueError(
                f"mdfast: objective.weighting must be 'elbo' or 'uniform', got '{weighting}'"
            )
        if super_token and (layout != "image" or channels != 3 or num_classes != 4096):
            raise ValueError(
                "mdfast: objective.super_token needs layout='image', channels=3 and "
                f"num_classes=4096, got layout='{layout}', channels={channels}, "
                f"num_classes={num_classes}"
            )
        if layout == "image" and not super_token and num_classes > 256:
            raise ValueError(
                f"mdfast: objective.num_classes must be <= 256 for uint8 images, got {num_classes}"
            )
        if mixture_labels < 0:
            raise ValueError(f"mdfast: objective.mixture_labels must be >= 0, got {mixture_labels}")
        self.process = Prime(
            num_classes,
            num_digits,
            None,
            convention=convention,
            schedule_n=schedule_n,
            eps=eps,
            loss=loss,
        )
        self.num_classes, self.num_digits = num_classes, num_digits
        self.layout, self.super_token = layout, super_token
        self.image_size, self.channels = image_size, channels
        self.tokens_per_pixel = 2 if super_token else channels
        self.weighting = weighting
        self.hflip = hflip
        self.mixture_labels = mixture_labels
        self._check_backbone()

    # ---------------------------------------------------------------- backbone contract

    def _check_backbone(self) -> None:
        cfg = getattr(self.model, "config", None)
        base = self.process.base
        want_vocab = base + 1
        vocab = getattr(cfg, "digit_vocab", None)
        if vocab is None and hasattr(self.model, "base"):
            vocab = self.model.base + 1
        if vocab is not None and vocab != want_vocab:
            raise ValueError(
                f"mdfast: the model embeds {vocab} digit ids but objective.num_classes="
                f"{self.num_classes} with objective.num_digits={self.num_digits} needs base "
                f"b = ceil(C^(1/l)) = {base}, i.e. {want_vocab} ids (set model.digit_vocab="
                f"{want_vocab})"
            )
        digits = getattr(cfg, "digits", getattr(self.model, "num_digits", None))
        if digits is not None and digits != self.num_digits:
            raise ValueError(
                f"mdfast: the model reads {digits} digits per token, objective.num_digits is "
                f"{self.num_digits}"
            )
        out = getattr(cfg, "num_classes", getattr(cfg, "vocab_size", None))
        if out is not None and out < self.num_classes:
            raise ValueError(
                f"mdfast: the model outputs {out} classes per token, objective.num_classes is "
                f"{self.num_classes}"
            )
        labels = getattr(cfg, "num_labels", None)
        if self.mixture_labels and labels is not None and labels != self.mixture_labels:
            raise ValueError(
                f"mdfast: objective.mixture_labels={self.mixture_labels} but the model takes "
                f"{labels} labels (set model.num_labels={self.mixture_labels})"
            )
        if self.layout == "image" and cfg is not None:
            tpp = getattr(cfg, "tokens_per_pixel", self.tokens_per_pixel)
            if tpp != self.tokens_per_pixel:
                raise ValueError(
                    f"mdfast: the model reads {tpp} tokens per pixel, the objective makes "
                    f"{self.tokens_per_pixel}"
                )

    # ---------------------------------------------------------------- layout

    @property
    def tokens_per_sample(self) -> int:
        """L: tokens per image (T·H·W) or per sequence (needs ``length`` for sequences)."""
        if self.layout == "image":
            return self.tokens_per_pixel * self.image_size**2
        raise AttributeError("mdfast: a sequence objective has no fixed length")

    def tokens(self, x0: torch.Tensor) -> torch.Tensor:
        """Batch data -> class ids int64[B, L]."""
        if self.layout == "sequence":
            return x0.long()
        if x0.dim() != 4 or x0.shape[1] != self.channels or x0.shape[-1] != self.image_size:
            raise ValueError(
                f"mdfast: image batch must be [B, {self.channels}, {self.image_size}, "
                f"{self.image_size}], got {list(x0.shape)}"
            )
        if x0.is_floating_point():
            raise ValueError("mdfast: images must be integer pixel values (uint8), not floats")
        x = x0.long()
        if self.super_token:
            x = super_encode(x)
        return x.reshape(x.shape[0], -1)

    def decode(self, digits: torch.Tensor) -> torch.Tensor:
        """Fully revealed digits [B, L, ℓ] -> images uint8 [B, 3, H, W] (or token ids [B, L])."""
        x = decode(digits, self.num_classes, self.num_digits)
        if self.layout == "sequence":
            return x
        s = self.image_size
        x = x.view(x.shape[0], self.tokens_per_pixel, s, s)
        if self.super_token:
            x = super_decode(x)
        return x.to(torch.uint8)

    def logits(self, digits: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """Digits [B, L, ℓ] -> logits [B, L, C] (the backbone's extra classes dropped)."""
        b = digits.shape[0]
        kw = {"label": label} if self.mixture_labels else {}
        if self.layout == "image":
            s, t, ell = self.image_size, self.tokens_per_pixel, self.num_digits
            x = digits.view(b, t, s, s, ell).permute(0, 1, 4, 2, 3).reshape(b, t * ell, s, s)
            out = self.model(x, **kw).reshape(b, t * s * s, -1)
        else:
            out = self.model(digits, **kw)
        return out[..., : self.num_classes] if out.shape[-1] > self.num_classes else out

    def bits_per_dim(self, nats_per_token: torch.Tensor) -> torch.Tensor:
        """NLL per token (nats) -> bits per sub-pixel (images; super-tokens spread over the 3
        sub-pixels they hold) or bits per token (sequences)."""
        per_dim = nats_per_token / math.log(2.0)
        if self.layout == "image" and self.super_token:
            per_dim = per_dim * 2 / 3
        return per_dim

    # ---------------------------------------------------------------- noise draws

    def mixture_label(self, u: torch.Tensor) -> torch.Tensor:
        """Uniforms [B] -> mixture labels k = ⌊u K⌋ in [0, K)."""
        return (u * self.mixture_labels).long().clamp_max(self.mixture_labels - 1)

    # ---------------------------------------------------------------- loss

    def forward(self, batch) -> tuple[torch.Tensor, dict]:
        x0, attention_mask, _ = unpack(batch)
        b = x0.shape[0]
        if self.layout == "image" and self.hflip and self.training:
            x0 = random_hflip(x0, rng.draw(_FLIP, b, dtype=torch.float64).to(x0.device))
        tokens = self.tokens(x0)
        label = None
        if self.mixture_labels:
            label = self.mixture_label(
                rng.draw(self.LABEL_PURPOSE, b, dtype=torch.float64).to(tokens.device)
            )
        t = self.process.sample_times(b, tokens.device)
        digits_t = self.process.noise(tokens, t)
        logits = self.logits(digits_t, label)
        if self.training:
            mode, weighting = self.process.loss_mode, self.weighting
        else:
            mode, weighting = "elbo", "elbo"
        if weighting == "elbo":
            per_token = self.process.token_losses(logits, tokens, digits_t, t, mode)
        else:
            per_token = ops.prime_ce(
                logits.reshape(-1, logits.shape[-1]),
                tokens.reshape(-1),
                digits_t.reshape(-1, self.num_digits),
                base=self.process.base,
                mode=mode,
            ).view(b, -1)
        if attention_mask is None:
            loss = per_token.mean()
        else:
            m = attention_mask.to(per_token.dtype)
            loss = (per_token * m).sum() / m.sum().clamp_min(1)
        metrics = {"masked_fraction": (digits_t == self.process.mask_id).float().mean().detach()}
        if not self.training:
            metrics["bits_per_dim"] = self.bits_per_dim(loss.detach())
        return loss, metrics

    # ---------------------------------------------------------------- likelihood

    @torch.no_grad()
    def nll(
        self, x0: torch.Tensor, *, num_times: int = 512, seed: int = 0, index=None
    ) -> dict[str, torch.Tensor]:
        """Per-sample NELBO with the ``elbo`` loss on K = ``num_times`` lattice times
        (:func:`mdfast.metrics.likelihood.sequence_terms`, keyed by ``seed`` and the samples'
        global ``index``, default 0..B−1): ``nll`` [B] (nats per image / sequence),
        ``nll_per_token`` and ``bits_per_dim`` [B]. Mixture models draw a uniform label per
        term (a bound on the mixture's NLL by Jensen)."""
        from mdfast.metrics.likelihood import sequence_terms

        index = torch.arange(x0.shape[0]) if index is None else torch.as_tensor(index)
        nll, tokens = sequence_terms(self, x0, None, index.to(x0.device), K=num_times, seed=seed)
        per_token = nll / tokens
        return {
            "nll": nll,
            "nll_per_token": per_token,
            "bits_per_dim": self.bits_per_dim(per_token),
        }

    # ---------------------------------------------------------------- sampling

    def masked_digits(self, batch_size: int, length: int | None = None, device=None):
        """The all-masked start [B, L, ℓ]."""
        length = length or self.tokens_per_sample
        return torch.full(
            (batch_size, length, self.num_digits),
            self.process.mask_id,
            dtype=torch.long,
            device=device,
        )

    @torch.no_grad()
    def sample_digits(
        self,
        settings: PrimeSamplerSettings,
        digits: torch.Tensor,
        *,
        fixed_digits=None,
        progress: bool = False,
    ) -> torch.Tensor:
        """:func:`mdfast.sampling.prime.prime_sample` with this objective's backbone, from
        ``digits`` [B, L, ℓ] (e.g. :meth:`masked_digits`); mixture models draw one uniform label
        per sample from the stream (``settings.seed``, ``"mixture_label"``)."""
        label = None
        if self.mixture_labels:
            seed = rng.stream_seed(settings.seed, self.LABEL_PURPOSE)
            label = self.mixture_label(
                ops.uniform((digits.shape[0],), seed, 0, device=digits.device)
            )
        return prime_sample(
            lambda d, tau: self.logits(d, label),
            self.process,
            digits,
            settings,
            fixed_digits=fixed_digits,
            progress=progress,
        )

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        settings: PrimeSamplerSettings,
        *,
        length: int | None = None,
        device=None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``batch_size`` fresh samples: uint8 images [B, 3, H, W] or token ids [B, L]."""
        device = device or next(self.model.parameters()).device
        start = self.masked_digits(batch_size, length, device)
        return self.decode(self.sample_digits(settings, start, progress=progress))

    @torch.no_grad()
    def impute(
        self,
        x0: torch.Tensor,
        subtoken_index,
        settings: PrimeSamplerSettings,
        *,
        progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete real data ``x0`` from the digits at positions ``subtoken_index`` of every
        token (the seed's ``--mode imputation``). Returns (samples, the starting digits)."""
        idx = torch.as_tensor(subtoken_index, dtype=torch.int64).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_digits:
            raise ValueError(
                f"mdfast: subtoken_index must be digit positions in [0, {self.num_digits}) "
                f"(ℓ = {self.num_digits}), got {idx.tolist()}"
            )
        digits = self.process.encode(self.tokens(x0))
        keep = torch.zeros(self.num_digits, dtype=torch.bool, device=digits.device)
        keep[idx.to(digits.device)] = True
        start = torch.where(keep, digits, torch.full_like(digits, self.process.mask_id))
        out = self.sample_digits(settings, start, fixed_digits=idx, progress=progress)
        return self.decode(out), start
