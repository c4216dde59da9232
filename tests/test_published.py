"""Published checkpoints in their own layouts: SEDD's hub directory and training-run directory,
MDLM's AR baseline (blocks without adaLN, checked against an independent forward written here),
and Lightning pickles whose config classes are not importable."""

from __future__ import annotations

import json
import math
import os
import sys
import types

import torch
import torch.nn.functional as F

from mdfast.models import DiT, DiTConfig
from mdfast.models.published import load_pretrained

CFG = dict(vocab_size=21, hidden_dim=32, cond_dim=16, n_blocks=2, n_heads=2, dropout=0.0)


def _randomized(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def test_sedd_hub_directory_and_run_directory(tmp_path):
    from safetensors.torch import save_file

    ref = _randomized(DiT(DiTConfig(**CFG, time_conditioning=True)))
    x = torch.randint(0, 21, (2, 7))
    sigma = torch.tensor([0.3, 2.0])
    want = ref(x, sigma)
    hub = tmp_path / "sedd-small"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({
        "model": {"hidden_size": 32, "cond_dim": 16, "n_blocks": 2, "n_heads": 2,
                  "scale_by_sigma": True, "dropout": 0.0, "length": 7},
        "tokens": 20, "graph": {"type": "absorb"}, "noise": {"type": "loglinear"}}))  # fmt: skip
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, hub / "model.safetensors")
    cfg = DiTConfig(**CFG, time_conditioning=True)
    got = load_pretrained(str(hub), cfg).eval()
    assert torch.allclose(got(x, sigma), want)
    # a training run: .hydra/config.yaml + checkpoints-meta/checkpoint.pth with the EMA
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("tokens: 20\n")
    (run / "checkpoints-meta").mkdir()
    shadow = [p.detach() + 1.0 for p in ref.parameters()]
    torch.save({"model": ref.state_dict(), "ema": {"decay": 0.9999, "shadow_params": shadow},
                "step": 5}, run / "checkpoints-meta" / "checkpoint.pth")  # fmt: skip
    ema = load_pretrained(str(run), cfg)
    assert all(torch.equal(p, s) for p, s in zip(ema.parameters(), shadow, strict=True))
    raw = load_pretrained(str(run), cfg, use_ema=False).eval()
    assert torch.allclose(raw(x, sigma), want)
    bad = DiTConfig(**{**CFG, "hidden_dim": 64}, time_conditioning=True)
    try:
        load_pretrained(str(hub), bad)
    except ValueError as e:
        assert "model.hidden_size=32" in str(e)
    else:
        raise AssertionError("a config mismatch must be an error")


def _mdlm_ar_forward(sd: dict, x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """MDLM's ``models/autoregressive.py`` forward, written out: pre-LN causal blocks without
    adaLN, rotate-half rotary on q and k, then linear(LN(x)); mask logit at −1000, log-softmax."""

    def ln(h, w):
        return F.layer_norm(h.float(), [h.shape[-1]]) * w

    h = sd["vocab_embed.embedding"][x]
    b, s, d = h.shape
    dh = d // n_heads
    inv = 1.0 / (10_000 ** (torch.arange(0, dh, 2).float() / dh))
    fr = torch.outer(torch.arange(s).float(), inv)
    cos, sin = fr.cos()[None, :, None], fr.sin()[None, :, None]

    def rot(t):
        t1, t2 = t[..., : dh // 2], t[..., dh // 2 :]
        return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], -1)

    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = f"blocks.{i}."
        qkv = (ln(h, sd[p + "norm1.weight"]) @ sd[p + "attn_qkv.weight"].T).view(
            b, s, 3, n_heads, dh
        )
        q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)  # fmt: skip
        h = h + att.transpose(1, 2).reshape(b, s, d) @ sd[p + "attn_out.weight"].T
        m = ln(h, sd[p + "norm2.weight"]) @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"]
        h = h + F.gelu(m, approximate="tanh") @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
        i += 1
    out = ln(h, sd["output_layer.norm_final.weight"]) @ sd["output_layer.linear.weight"].T
    out = out + sd["output_layer.linear.bias"]
    out[..., -1] = -1000.0
    return out.log_softmax(-1)


def test_mdlm_ar_checkpoint_loads_into_a_causal_dit(tmp_path):
    torch.manual_seed(2)
    d, v = 32, 21
    sd = {"vocab_embed.embedding": torch.randn(v, d)}
    for i in range(2):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + 0.1 * torch.randn(d),
               p + "attn_qkv.weight": 0.2 * torch.randn(3 * d, d),
               p + "attn_out.weight": 0.2 * torch.randn(d, d),
               p + "norm2.weight": 1 + 0.1 * torch.randn(d),
               p + "mlp.0.weight": 0.2 * torch.randn(4 * d, d),
               p + "mlp.0.bias": torch.randn(4 * d),
               p + "mlp.2.weight": 0.2 * torch.randn(d, 4 * d),
               p + "mlp.2.bias": torch.randn(d)}  # fmt: skip
    sd |= {"output_layer.norm_final.weight": torch.ones(d),
           "output_layer.linear.weight": 0.3 * torch.randn(v, d),
           "output_layer.linear.bias": torch.randn(v)}  # fmt: skip
    ema = [t + 0.01 * torch.randn_like(t) for t in sd.values()]  # parameters() order
    # the Lightning pickle also holds a config object of a package that is not installed here
    mod = types.ModuleType("not_installed_cfg")

    class RunConfig:
        def __init__(self):
            self.model = {"hidden_size": d}

    RunConfig.__module__ = "not_installed_cfg"
    RunConfig.__qualname__ = "RunConfig"
    mod.RunConfig = RunConfig
    sys.modules["not_installed_cfg"] = mod
    try:
        torch.save({"state_dict": {"backbone." + k: t for k, t in sd.items()},
                    "ema": {"shadow_params": ema}, "hyper_parameters": {"config": RunConfig()}},
                   tmp_path / "ar.ckpt")  # fmt: skip
    finally:
        del sys.modules["not_installed_cfg"]
    cfg = DiTConfig(vocab_size=v, hidden_dim=d, cond_dim=16, n_blocks=2, n_heads=2, dropout=0.0)
    x = torch.randint(0, v - 1, (3, 9))
    model = load_pretrained(str(tmp_path / "ar.ckpt"), cfg, causal=True).eval()
    want = _mdlm_ar_forward(dict(zip(sd, ema, strict=True)), x, 2)
    got = model(x).float()
    got[..., -1] = -math.inf
    assert torch.allclose(got.log_softmax(-1)[..., :-1], want[..., :-1], atol=1e-5)
    raw = load_pretrained(str(tmp_path / "ar.ckpt"), cfg, causal=True, use_ema=False).eval()
    got = raw(x).float()
    got[..., -1] = -math.inf
    assert torch.allclose(got.log_softmax(-1)[..., :-1], _mdlm_ar_forward(sd, x, 2)[..., :-1],
                          atol=1e-5)  # fmt: skip


def test_missing_checkpoint_path_is_named(tmp_path):
    try:
        load_pretrained(str(tmp_path / "nope.ckpt"), DiTConfig(**CFG))
    except FileNotFoundError as e:
        assert "nope.ckpt" in str(e) and "model.init_from" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")
    assert not os.path.exists(tmp_path / "nope.ckpt")
