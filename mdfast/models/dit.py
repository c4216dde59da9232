"""MDLM's DiT backbone, parameter-for-parameter compatible with ``kuleshov-group/mdlm``.

Attribute names and registration order follow MDLM's ``models/dit.py`` so that a Hugging Face
``kuleshov-group/mdlm-owt`` directory (``config.json`` + ``model.safetensors``, keys
``backbone.*``) or a Lightning ``.ckpt`` (``state_dict`` with ``backbone.*`` keys and EMA shadow
params in ``backbone.parameters()`` order) loads with :func:`load_mdlm` and no conversion step.

The network is split into a trunk and an output head so that samplers and the fused loss can
compute logits only for the rows they need::

    hidden = model.trunk(x, sigma)      # [B, L, D]: final adaLN-modulated LayerNorm output
    logits = model.head(hidden, rows)   # [n_rows, V] (rows: bool [B, L] or flat indices)

``model.head`` is just ``output_layer.linear``; ``model.head_weight``/``head_bias`` expose it for
``mdfast.ops.linear_masked_ce``.

Precision: MDLM runs the blocks under bf16 autocast; this module does not force it (wrap the call
in ``torch.autocast``, the trainer does). LayerNorm always runs in fp32 with autocast disabled.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from mdfast.models.config import configure
from mdfast.models.dropout import KeyedDropout, name_dropout_streams
from mdfast.models.embeddings import sinusoidal_embedding
from mdfast.models.kv_cache import KVCache

try:  # optional fast path
    from flash_attn import flash_attn_qkvpacked_func as _flash_qkvpacked
except Exception:
    _flash_qkvpacked = None

__all__ = [
    "DIT_PRESETS",
    "DiT",
    "DiTConfig",
    "apply_weights",
    "flash_attn_available",
    "load_mdlm",
    "load_state_dict_checked",
]


def flash_attn_available() -> bool:
    return _flash_qkvpacked is not None


@dataclass
class DiTConfig:
    vocab_size: int = 50258
    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    mlp_ratio: int = 4
    dropout: float = 0.1
    time_conditioning: bool = False
    model_length: int = 1024
    # "auto": flash-attn when installed and the input is a CUDA half/bf16 tensor, else SDPA.
    attn_backend: str = "auto"

    @classmethod
    def from_dict(cls, d: dict) -> DiTConfig:
        """Accepts our field names and MDLM's HF config keys (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


DIT_PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(vocab_size=64, hidden_dim=64, cond_dim=32, n_blocks=2, n_heads=4,
                      dropout=0.0, model_length=64),
    "small": DiTConfig(hidden_dim=768, cond_dim=128, n_blocks=12, n_heads=12),
    "medium": DiTConfig(hidden_dim=1024, cond_dim=128, n_blocks=24, n_heads=16),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Building blocks (names as in MDLM)
# ---------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """Bias-free LayerNorm computed in fp32 with autocast off (MDLM ``LayerNorm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.layer_norm(x if x.dtype == torch.float64 else x.float(), [self.dim])
        return x * self.weight[None, None, :]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Rotary(nn.Module):
    """Rotary embedding, base 1e4, non-interleaved (rotate-half) layout."""

    def __init__(self, dim: int, base: float = 10_000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)  # persistent: MDLM's state dict has it

    def forward(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(self.inv_freq.dtype, torch.float32)
        t = torch.arange(seq_len, device=device, dtype=dtype)
        freqs = torch.outer(t, self.inv_freq.to(device=device, dtype=dtype))
        return freqs.cos(), freqs.sin()  # [L, Dh/2] each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, L, H, Dh]; cos/sin: [L, Dh/2]. out = x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c = cos[None, :, None, :].to(x.dtype)
    s = sin[None, :, None, :].to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class TimestepEmbedder(nn.Module):
    """256-dim sinusoid [cos | sin] (max period 1e4) -> Linear -> SiLU -> Linear."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim: int, vocab_dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.embedding, not self.embedding[x]: the backward of advanced indexing on CPU is a
        # parallel index_put_ with atomic float adds, so repeated tokens accumulate in thread
        # order and two runs differ; embedding's backward sums each row in a fixed order.
        return F.embedding(x, self.embedding)


def _attention(qkv: torch.Tensor, backend: str, causal: bool) -> torch.Tensor:
    """qkv: [B, L, 3, H, Dh] (rotary applied) -> [B, L, H*Dh]."""
    b, s, _, h, d = qkv.shape
    use_flash = backend == "flash" or (
        backend == "auto"
        and _flash_qkvpacked is not None
        and qkv.is_cuda
        and qkv.dtype in (torch.float16, torch.bfloat16)
    )
    if use_flash:
        if _flash_qkvpacked is None:
            raise RuntimeError("mdfast: attn_backend='flash' but flash-attn is not installed")
        out = _flash_qkvpacked(qkv.contiguous(), 0.0, causal=causal)  # [B, L, H, Dh]
        return out.reshape(b, s, h * d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, Dh] each
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=causal)
    return out.transpose(1, 2).reshape(b, s, h * d)


class DDiTBlock(nn.Module):
    def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4, dropout=0.1, causal=False):
        super().__init__()
        self.n_heads = n_heads
        self.causal = causal
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = KeyedDropout(dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim, bias=True),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * dim, dim, bias=True),
        )
        self.dropout2 = KeyedDropout(dropout)
        self.dropout = dropout
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x, rotary_cos_sin, c, backend="auto", kv=None):
        """``kv``: this block's :class:`~mdfast.models.kv_cache.LayerKV` when decoding
        incrementally (``x`` holds only the new positions; ``rotary_cos_sin`` is theirs)."""
        b, s, d = x.shape
        mod = self.adaLN_modulation(c)[:, None]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=2)
        x_skip = x
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        qkv = self.attn_qkv(h).view(b, s, 3, self.n_heads, d // self.n_heads)
        cos, sin = rotary_cos_sin
        q = apply_rotary(qkv[:, :, 0], cos, sin)
        k = apply_rotary(qkv[:, :, 1], cos, sin)
        if kv is not None:
            h = kv.attend(q, k, qkv[:, :, 2])
        else:
            h = _attention(torch.stack([q, k, qkv[:, :, 2]], dim=2), backend, self.causal)
        x = x_skip + gate_msa * self.dropout1(self.attn_out(h))
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp * self.dropout2(h)


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels, cond_dim):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def features(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return modulate(self.norm_final(x), shift, scale)

    def forward(self, x, c):
        return self.linear(self.features(x, c))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """MDLM's diffusion transformer (``DIT`` in MDLM); ``forward(x, sigma) -> logits [B, L, V]``.

    ``sigma`` is ignored (treated as 0, like MDLM) unless ``config.time_conditioning``. Raw logits
    are returned: the SUBS parameterisation lives in the loss / samplers.
    """

    def __init__(self, config: DiTConfig | str | None = None, causal: bool = False, **overrides):
        super().__init__()
        config = configure(DiTConfig, config, DIT_PRESETS, overrides, "DiT")
        if config.hidden_dim % config.n_heads:
            raise ValueError("mdfast: 'hidden_dim' must be divisible by 'n_heads'")
        self.config = config
        self.causal = causal
        d = config.hidden_dim
        self.vocab_embed = EmbeddingLayer(d, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(d // config.n_heads)
        self.blocks = nn.ModuleList(
            DDiTBlock(d, config.n_heads, config.cond_dim, config.mlp_ratio, config.dropout, causal)
            for _ in range(config.n_blocks)
        )
        self.output_layer = DDitFinalLayer(d, config.vocab_size, config.cond_dim)
        name_dropout_streams(self)

    # -- pieces --------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token embedding (IMDM overrides the masked rows' embedding on top of this)."""
        return self.vocab_embed(x)

    def condition(self, sigma: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if sigma is None or not self.config.time_conditioning:
            sigma = torch.zeros(batch, device=device)
        wdtype = self.sigma_map.mlp[0].weight.dtype
        sigma = sigma.reshape(-1).to(torch.promote_types(wdtype, torch.float32))
        if sigma.numel() == 1 and batch > 1:
            sigma = sigma.expand(batch)
        return F.silu(self.sigma_map(sigma))

    def trunk(self, x: torch.Tensor, sigma: torch.Tensor | None = None, embeds=None, cache=None):
        """Token ids [B, L] -> output features [B, L, D] (everything but the vocab projection).

        ``embeds`` ([B, L, D]) replaces the token embedding when given (IMDM). ``cache``: a
        :class:`~mdfast.models.kv_cache.KVCache` of a causal model (:meth:`new_cache`); ``x``
        then holds only the new tokens, at absolute positions ``cache.length`` onwards, and the
        cache is extended by them.
        """
        h = self.embed(x) if embeds is None else embeds
        c = self.condition(sigma, h.shape[0], h.device)
        backend = self.config.attn_backend
        if cache is None:
            rot = self.rotary_emb(h.shape[1], h.device)
            for block in self.blocks:
                h = block(h, rot, c, backend)
            return self.output_layer.features(h, c)
        if not self.causal:
            raise ValueError("mdfast: a KV cache needs a causal model (DiT(..., causal=True))")
        start = cache.length
        cos, sin = self.rotary_emb(start + h.shape[1], h.device)
        rot = (cos[start:], sin[start:])
        for block, kv in zip(self.blocks, cache.layers, strict=True):
            h = block(h, rot, c, backend, kv=kv)
        return self.output_layer.features(h, c)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache for incremental decoding of up to ``capacity`` positions (default
        ``config.model_length``); causal models only."""
        if not self.causal:
            raise ValueError("mdfast: a KV cache needs a causal model (DiT(..., causal=True))")
        return KVCache(len(self.blocks), capacity or self.config.model_length)

    def hidden(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Alias of :meth:`trunk`: the ``hidden(x)`` / ``head(h_rows)`` split that
        :mod:`mdfast.sampling` uses to compute logits only for the rows that change."""
        return self.trunk(x, sigma)

    def head(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Features -> logits. ``rows``: None (all, keeps [B, L, V]), a bool mask over the leading
        dims, or int indices into the flattened rows; then returns [n_rows, V]."""
        if rows is None:
            return self.output_layer.linear(hidden)
        flat = hidden.reshape(-1, hidden.shape[-1])
        if rows.dtype == torch.bool:
            rows = rows.reshape(-1).nonzero().squeeze(-1)
        return self.output_layer.linear(flat.index_select(0, rows))

    @property
    def head_weight(self) -> torch.Tensor:
        return self.output_layer.linear.weight

    @property
    def head_bias(self) -> torch.Tensor:
        return self.output_layer.linear.bias

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        return self.head(self.trunk(x, sigma, cache=cache))

    # -- checkpoints ---------------------------------------------------------------------------
    @classmethod
    def from_mdlm(cls, path: str | os.PathLike, **kwargs) -> DiT:
        return load_mdlm(path, **kwargs)

    def save_mdlm(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` in the HF ``mdlm-owt`` layout."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        cfg = asdict(self.config)
        cfg.update(model_type="mdlm", architectures=["MDLM"])
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        sd = {f"backbone.{k}": v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(sd, os.path.join(directory, "model.safetensors"))


def load_state_dict_checked(module: nn.Module, state: dict, *, what: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with errors that name the first offending parameter."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KeyError(
            f"mdfast: {what} does not match the model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"mdfast: {what} shape mismatch at parameter '{k}': checkpoint has "
                f"{list(state[k].shape)}, model has {list(v.shape)}"
            )
    module.load_state_dict(state, strict=True)


def _strip_backbone(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for prefix in ("backbone.", "model.backbone.", "module.backbone."):
            if k.startswith(prefix):
                out[k[len(prefix) :]] = v
                break
    return out


def load_mdlm(
    path: str | os.PathLike,
    config: DiTConfig | dict | None = None,
    *,
    use_ema: bool = True,
    map_location="cpu",
    **overrides,
) -> DiT:
    """Load an MDLM checkpoint from local files, no conversion step.

    ``path`` is either a directory in the HF ``kuleshov-group/mdlm-owt`` layout (``config.json``
    and ``model.safetensors``; ``pytorch_model.bin`` also accepted), a single ``.safetensors``
    file, or a Lightning ``.ckpt``. For a ``.ckpt`` the EMA weights
    (``ckpt['ema']['shadow_params']``, a list in ``backbone.parameters()`` order) are applied when
    present and ``use_ema``. ``config`` (or the directory's ``config.json``; for ``.ckpt`` the
    ``hyper_parameters``) sets the architecture; ``overrides`` patch it (e.g. ``dropout=0``).
    """
    path = os.fspath(path)
    cfg_dict: dict = {}
    ema_shadow = None
    if os.path.isdir(path):
        cfg_file = os.path.join(path, "config.json")
        if os.path.exists(cfg_file):
            with open(cfg_file) as f:
                cfg_dict = json.load(f)
        st = os.path.join(path, "model.safetensors")
        if os.path.exists(st):
            from safetensors.torch import load_file

            raw = load_file(st, device=str(map_location))
        elif os.path.exists(os.path.join(path, "pytorch_model.bin")):
            raw = torch.load(os.path.join(path, "pytorch_model.bin"), map_location=map_location)
        else:
            raise FileNotFoundError(f"mdfast: no model.safetensors or pytorch_model.bin in {path}")
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        raw = load_file(path, device=str(map_location))
    else:
        from mdfast.models.published import torch_load_tolerant

        ckpt = torch_load_tolerant(path, map_location)
        raw = ckpt.get("state_dict", ckpt)
        hp = ckpt.get("hyper_parameters", {})
        model_hp = hp.get("config", {}).get("model", {}) if isinstance(hp, dict) else {}
        if model_hp:
            cfg_dict = {
                "hidden_dim": model_hp.get("hidden_size"),
                "cond_dim": model_hp.get("cond_dim"),
                "n_blocks": model_hp.get("n_blocks"),
                "n_heads": model_hp.get("n_heads"),
                "dropout": model_hp.get("dropout"),
                "model_length": model_hp.get("length"),
            }
            cfg_dict = {k: v for k, v in cfg_dict.items() if v is not None}
        if use_ema and isinstance(ckpt.get("ema"), dict):
            ema_shadow = ckpt["ema"].get("shadow_params")
    sd = _strip_backbone(raw) or dict(raw)
    if isinstance(config, DiTConfig):
        cfg = config
    else:
        cfg_dict = {**cfg_dict, **(config or {})}
        if "vocab_size" not in cfg_dict and "vocab_embed.embedding" in sd:
            cfg_dict["vocab_size"] = sd["vocab_embed.embedding"].shape[0]
        cfg = DiTConfig.from_dict(cfg_dict)
    model = DiT(cfg, **overrides)
    apply_weights(model, sd, ema_shadow, what=f"MDLM checkpoint {path}")
    return model


def apply_weights(model: nn.Module, sd: dict, ema_shadow=None, *, what: str = "checkpoint"):
    """Load ``sd`` strictly (a missing rotary ``inv_freq`` buffer is filled in), then copy the
    EMA shadow parameters (a list in ``model.parameters()`` order) over them when given."""
    if hasattr(model, "rotary_emb"):
        sd.setdefault("rotary_emb.inv_freq", model.rotary_emb.inv_freq)
    load_state_dict_checked(model, sd, what=what)
    if ema_shadow is None:
        return
    params = list(model.parameters())
    if len(ema_shadow) < len(params):
        raise ValueError(
            f"mdfast: EMA in {what} has {len(ema_shadow)} shadow params, model has {len(params)}"
        )
    with torch.no_grad():
        for (name, p), s in zip(model.named_parameters(), ema_shadow, strict=False):
            if tuple(s.shape) != tuple(p.shape):
                raise ValueError(
                    f"mdfast: EMA shape mismatch at parameter '{name}': checkpoint has "
                    f"{list(s.shape)}, model has {list(p.shape)}"
                )
            p.copy_(s)
