"""DiT: forward against a straightforward reference written here, MDLM-layout checkpoints
(safetensors directory and Lightning .ckpt with EMA), trunk/head split, error messages."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mdfast.models.dit import DiT, DiTConfig, flash_attn_available, load_mdlm

CFG = dict(vocab_size=37, hidden_dim=32, cond_dim=16, n_blocks=2, n_heads=4, dropout=0.0)


class RefDIT(nn.Module):
    """MDLM's DIT written out plainly (explicit softmax attention, cos|cos rotary tables), with
    MDLM's parameter names. Parameters are filled with random values (no zero adaLN)."""

    def __init__(self, V, D, C, n_blocks, H, time_conditioning):
        super().__init__()
        self.H, self.D, self.tc = H, D, time_conditioning
        self.vocab_embed = nn.Module()
        self.vocab_embed.embedding = nn.Parameter(torch.randn(V, D))
        self.sigma_map = nn.Module()
        self.sigma_map.mlp = nn.Sequential(nn.Linear(256, C), nn.SiLU(), nn.Linear(C, C))
        self.rotary_emb = nn.Module()
        dh = D // H
        self.rotary_emb.register_buffer(
            "inv_freq", 1.0 / (10000 ** (torch.arange(0, dh, 2).float() / dh))
        )
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            b = nn.Module()
            b.norm1 = nn.Module()
            b.norm1.weight = nn.Parameter(1 + 0.1 * torch.randn(D))
            b.attn_qkv = nn.Linear(D, 3 * D, bias=False)
            b.attn_out = nn.Linear(D, D, bias=False)
            b.norm2 = nn.Module()
            b.norm2.weight = nn.Parameter(1 + 0.1 * torch.randn(D))
            b.mlp = nn.Sequential(
                nn.Linear(D, 4 * D), nn.GELU(approximate="tanh"), nn.Linear(4 * D, D)
            )
            b.adaLN_modulation = nn.Linear(C, 6 * D)
            self.blocks.append(b)
        self.output_layer = nn.Module()
        self.output_layer.norm_final = nn.Module()
        self.output_layer.norm_final.weight = nn.Parameter(1 + 0.1 * torch.randn(D))
        self.output_layer.linear = nn.Linear(D, V)
        self.output_layer.adaLN_modulation = nn.Linear(C, 2 * D)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() >= 1 and p is not self.vocab_embed.embedding:
                    p.add_(0.2 * torch.randn_like(p))

    @staticmethod
    def ln(x, w):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w

    def forward(self, x, sigma):
        B, L = x.shape
        h = self.vocab_embed.embedding[x]
        sigma = torch.zeros(B) if not self.tc else sigma
        sigma = sigma.to(self.vocab_embed.embedding.dtype)
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
        args = sigma[:, None] * freqs[None]
        c = torch.nn.functional.silu(self.sigma_map.mlp(torch.cat([args.cos(), args.sin()], -1)))
        t = torch.arange(L).to(sigma.dtype)
        f = torch.einsum("i,j->ij", t, self.rotary_emb.inv_freq)
        emb = torch.cat([f, f], -1)  # [L, dh]
        cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

        def rot(q):
            q1, q2 = q.chunk(2, -1)
            return q * cos + torch.cat([-q2, q1], -1) * sin

        dh = self.D // self.H
        for b in self.blocks:
            m = b.adaLN_modulation(c)[:, None]
            sh1, sc1, g1, sh2, sc2, g2 = m.chunk(6, -1)
            a = self.ln(h, b.norm1.weight) * (1 + sc1) + sh1
            q, k, v = b.attn_qkv(a).view(B, L, 3, self.H, dh).unbind(2)
            q, k = rot(q), rot(k)
            att = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(dh)
            o = torch.einsum("bhlm,bmhd->blhd", att.softmax(-1), v).reshape(B, L, self.D)
            h = h + g1 * b.attn_out(o)
            a = self.ln(h, b.norm2.weight) * (1 + sc2) + sh2
            h = h + g2 * b.mlp(a)
        ol = self.output_layer
        sh, sc = ol.adaLN_modulation(c)[:, None].chunk(2, -1)
        return ol.linear(self.ln(h, ol.norm_final.weight) * (1 + sc) + sh)


def _ref(tc=False):
    return RefDIT(
        CFG["vocab_size"], CFG["hidden_dim"], CFG["cond_dim"], CFG["n_blocks"], CFG["n_heads"], tc
    ).double()


def _write_hf_dir(ref, d, tc=False):
    from safetensors.torch import save_file

    sd = {f"backbone.{k}": v.float().contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, str(d / "model.safetensors"))
    hf_cfg = {k: v for k, v in CFG.items() if k != "vocab_size"}
    hf_cfg.update(
        vocab_size=CFG["vocab_size"],
        model_length=16,
        time_conditioning=tc,
        model_type="mdlm",
        return_dict=False,
    )
    (d / "config.json").write_text(json.dumps(hf_cfg))


def test_parameter_names_match_mdlm():
    model = DiT(DiTConfig(**CFG))
    assert list(model.state_dict()) == list(_ref().state_dict())


@pytest.mark.parametrize("tc", [False, True])
def test_hf_layout_roundtrip_matches_reference(tmp_path, fresh_seed, tc):
    torch.manual_seed(fresh_seed)
    ref = _ref(tc)
    _write_hf_dir(ref, tmp_path, tc)
    model = load_mdlm(tmp_path).double()
    assert model.config.time_conditioning == tc and model.config.n_blocks == 2
    x = torch.randint(0, CFG["vocab_size"], (3, 16))
    sigma = torch.rand(3)
    want = ref(x, sigma)
    got = model(x, sigma)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # trunk/head split: selected rows equal the full logits' rows
    rows = torch.rand(3, 16) < 0.4
    part = model.head(model.trunk(x, sigma), rows)
    torch.testing.assert_close(part, got[rows], rtol=1e-12, atol=1e-12)
    # the samplers' split interface: hidden(x) then head(h_rows [R, D])
    flat = model.hidden(x, sigma).reshape(-1, CFG["hidden_dim"])[rows.reshape(-1)]
    torch.testing.assert_close(model.head(flat), got[rows], rtol=1e-12, atol=1e-12)
    idx = rows.reshape(-1).nonzero().squeeze(-1)
    torch.testing.assert_close(model.head(model.trunk(x, sigma), idx), part, rtol=1e-12, atol=1e-12)


def test_fp32_forward_and_save_roundtrip(tmp_path, fresh_seed):
    torch.manual_seed(fresh_seed)
    ref = _ref()
    _write_hf_dir(ref, tmp_path)
    model = load_mdlm(tmp_path)
    x = torch.randint(0, CFG["vocab_size"], (2, 16))
    want = ref(x, None).float()
    torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4)
    model.save_mdlm(tmp_path / "again")
    again = load_mdlm(tmp_path / "again")
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_lightning_ckpt_uses_ema(tmp_path, fresh_seed):
    torch.manual_seed(fresh_seed)
    ref = _ref().float()
    ema_ref = _ref().float()
    shadow = [p.detach().clone() for p in ema_ref.parameters()]
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in ref.state_dict().items()},
        "ema": {"decay": 0.9999, "num_updates": 3, "shadow_params": shadow},
        "hyper_parameters": {
            "config": {
                "model": {
                    "hidden_size": 32,
                    "cond_dim": 16,
                    "n_blocks": 2,
                    "n_heads": 4,
                    "dropout": 0.0,
                }
            }
        },
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    x = torch.randint(0, CFG["vocab_size"], (2, 16))
    with_ema = load_mdlm(tmp_path / "last.ckpt")
    torch.testing.assert_close(with_ema(x), ema_ref(x, None), rtol=1e-4, atol=1e-4)
    raw = load_mdlm(tmp_path / "last.ckpt", use_ema=False)
    torch.testing.assert_close(raw(x), ref(x, None), rtol=1e-4, atol=1e-4)


def test_shape_mismatch_names_first_parameter(tmp_path):
    _write_hf_dir(_ref(), tmp_path)
    with pytest.raises(ValueError, match=r"'vocab_embed\.embedding'"):
        load_mdlm(tmp_path, config={"hidden_dim": 64})
    with pytest.raises(ValueError, match=r"'blocks\.0\.mlp\.0\.weight'"):
        load_mdlm(tmp_path, config={"mlp_ratio": 2})


def test_missing_keys_error(tmp_path):
    _write_hf_dir(_ref(), tmp_path)
    with pytest.raises(KeyError, match="missing"):
        load_mdlm(tmp_path, config={"n_blocks": 3})


def test_unknown_preset_lists_valid():
    with pytest.raises(ValueError, match="small"):
        DiT("huge")


def test_presets_sizes():
    with torch.device("meta"):
        small = DiT("small", vocab_size=50258)
    n = sum(p.numel() for p in small.parameters())
    assert 169_000_000 < n < 170_500_000  # MDLM small: ~169.6M
    assert DiT("tiny").config.n_blocks == 2


def test_causal_matches_sdpa_is_causal(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = DiT("tiny", causal=True).double()
    for p in m.parameters():
        nn.init.normal_(p, std=0.1)
    x = torch.randint(0, 64, (2, 12))
    full = m(x)
    # position i must not depend on positions > i
    x2 = x.clone()
    x2[:, 8:] = (x2[:, 8:] + 1) % 64
    torch.testing.assert_close(m(x2)[:, :8], full[:, :8])


@pytest.mark.skipif(
    not (torch.cuda.is_available() and flash_attn_available()), reason="needs CUDA + flash-attn"
)
def test_flash_matches_sdpa(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = DiT("tiny").cuda()
    for p in m.parameters():
        nn.init.normal_(p, std=0.1)
    x = torch.randint(0, 64, (2, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        m.config.attn_backend = "sdpa"
        a = m(x).float()
        m.config.attn_backend = "flash"
        b = m(x).float()
    torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_pytorch_model_bin_layout(tmp_path, fresh_seed):
    torch.manual_seed(fresh_seed)
    ref = _ref().float()
    _write_hf_dir(ref, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({f"backbone.{k}": v for k, v in ref.state_dict().items()},
               tmp_path / "pytorch_model.bin")  # fmt: skip
    x = torch.randint(0, CFG["vocab_size"], (2, 16))
    torch.testing.assert_close(load_mdlm(tmp_path)(x), ref(x, None), rtol=1e-4, atol=1e-4)
