"""ADM UNet (seed parameter counts, Prime digit stem, super-token I/O), U-ViT (null class, CFG),
the causal transformer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mdfast.models import UNET_PRESETS, UVIT_PRESETS, CausalLM, UNet, UNetConfig, UViT


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("preset", "millions"),
    [("cifar10-mdm", 114.0), ("cifar10-prime-l2", 113.9), ("cifar10-supertoken", 133.8)],
)
def test_unet_parameter_counts_match_seed(preset, millions):
    with torch.device("meta"):
        m = UNet(UNET_PRESETS[preset])
    assert abs(_count(m) / 1e6 - millions) < 0.06


def test_unet_seed_io_shapes_on_meta():
    with torch.device("meta"):
        sup = UNet(UNET_PRESETS["cifar10-supertoken"])
        x = torch.zeros(2, 2, 32, 32, dtype=torch.long)
        assert sup(x).shape == (2, 2, 32, 32, 4097)
        prime = UNet(UNET_PRESETS["cifar10-prime-l2"])
        x = torch.zeros(2, 6, 32, 32, dtype=torch.long)
        assert prime(x).shape == (2, 3, 32, 32, 256)


def test_unet_prime_digit_stem_layout(fresh_seed):
    torch.manual_seed(fresh_seed)
    cfg = UNetConfig(
        tokens_per_pixel=3,
        digits=2,
        digit_vocab=5,
        token_dim=8,
        num_classes=16,
        image_size=8,
        model_channels=8,
        channel_mult=[3, 3],
        num_res_blocks=1,
        attention_resolutions=[4],
        num_head_channels=8,
        dropout=0.0,
    )
    m = UNet(cfg)
    x = torch.randint(0, 5, (2, 6, 8, 8))
    e = m.embed(x)  # [B, 3*8, H, W]
    table = m.digit_embed.weight
    for c in range(3):
        for j in range(2):
            want = table[x[:, 2 * c + j]].permute(0, 3, 1, 2)  # digit j of colour c
            torch.testing.assert_close(e[:, 8 * c + 4 * j : 8 * c + 4 * (j + 1)], want)
    out = m(x)
    assert out.shape == (2, 3, 8, 8, 16)
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


def test_unet_trains_and_time_input(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = UNet(UNET_PRESETS["tiny"])
    x = torch.randint(0, 5, (4, 1, 8, 8))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        logits = m(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 5), x.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    mt = UNet(UNET_PRESETS["tiny"], time_input=True)
    assert mt(x, torch.rand(4)).shape == (4, 1, 8, 8, 5)


def _perturbed_uvit(seed):
    torch.manual_seed(seed)
    m = UViT(UVIT_PRESETS["tiny"])
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_uvit_shapes_null_class_and_cfg(fresh_seed):
    m = _perturbed_uvit(fresh_seed)
    x = torch.randint(0, 9, (3, 8, 8))
    y = torch.randint(0, 4, (3,))
    zc = m(x, y)
    assert zc.shape == (3, 8, 8, 9)
    zu = m(x, torch.full((3,), m.null_class))
    torch.testing.assert_close(m(x), zu)  # no label = the null class
    assert not torch.allclose(zc, zu)  # the label matters
    for s in (0.0, 1.0, 2.5):
        torch.testing.assert_close(
            m.forward_with_cfg(x, y, s), zu + s * (zc - zu), rtol=1e-5, atol=1e-5
        )


def test_uvit_unpatchify_is_local(fresh_seed):
    """Changing one input cell changes the logits, and the patch layout maps the (i, j) cell's
    patch back to the (i, j) region: with attention removed (no mixing across patches) only the
    changed cell's 2×2 patch and its 3×3-conv halo may change."""
    m = _perturbed_uvit(fresh_seed)
    for blk in [*m.in_blocks, m.mid_block, *m.out_blocks]:
        nn.init.zeros_(blk.proj.weight)
        nn.init.zeros_(blk.proj.bias)
    with torch.no_grad():
        m.pos_embed.zero_()
    x = torch.randint(0, 9, (1, 8, 8))
    x2 = x.clone()
    x2[0, 4, 6] = (x2[0, 4, 6] + 1) % 9
    diff = (m(x) - m(x2)).abs().amax(-1)[0]
    changed = diff > 1e-6
    assert changed[4:6, 6:8].all()
    outside = torch.ones_like(changed)
    outside[3:7, 5:8] = False  # patch rows 4-5, cols 6-7 plus the conv halo
    assert not changed[outside].any()


def test_causal_lm_is_causal(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = CausalLM("tiny")
    for p in m.parameters():
        nn.init.normal_(p, std=0.1)
    x = torch.randint(0, 64, (2, 10))
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 3) % 64
    torch.testing.assert_close(m(x2)[:, :6], m(x)[:, :6])
    assert not torch.allclose(m(x2)[:, 6:], m(x)[:, 6:])


def _preset_cases():
    from mdfast.experiments.mnist.model import MODEL_PRESETS, MNISTUNet
    from mdfast.models import DIT_PRESETS, DiT

    cases = []
    for name in DIT_PRESETS:
        cases.append((DiT, DIT_PRESETS, name, {"n_blocks": 1, "time_conditioning": True}))
        cases.append((CausalLM, DIT_PRESETS, name, {"dropout": 0.25}))
    for name in UNET_PRESETS:
        cases.append((UNet, UNET_PRESETS, name, {"time_input": True, "num_res_blocks": 1}))
    for name in UVIT_PRESETS:
        cases.append((UViT, UVIT_PRESETS, name, {"time_cond": True, "depth": 2}))
    for name in MODEL_PRESETS:
        cases.append((MNISTUNet, MODEL_PRESETS, name, {"dropout": 0.5}))
    return cases


@pytest.mark.parametrize(
    ("cls", "table", "name", "overrides"),
    _preset_cases(),
    ids=lambda v: v.__name__ if isinstance(v, type) else v if isinstance(v, str) else "",
)
def test_constructor_never_changes_a_preset(cls, table, name, overrides):
    """Building a model from a preset with overrides, then editing the model's config, leaves the
    preset table as it was (the UNet and U-ViT used to setattr the overrides on the preset)."""
    import copy

    before = copy.deepcopy(table)
    with torch.device("meta"):
        if isinstance(table[name], dict):  # the MNIST net takes its preset as keyword arguments
            m = cls(**{**table[name], **overrides})
        else:
            m = cls(table[name], **overrides)
            for key, value in overrides.items():
                assert getattr(m.config, key) == value
            for value in vars(m.config).values():
                if isinstance(value, list):
                    value.append(99)  # the model's config shares no list with the preset
    assert table == before


def test_constructor_rejects_unknown_override():
    with pytest.raises(TypeError, match=r"unknown UNet config field\(s\) \['chanel_mult'\]"):
        UNet(UNET_PRESETS["tiny"], chanel_mult=[1])
    with pytest.raises(ValueError, match="unknown U-ViT preset 'huge'"):
        UViT("huge")


@pytest.mark.parametrize(("dim", "scale", "dtype"), [(64, 1.0, torch.float32), (33, 1000.0,
                         torch.float32), (256, 1.0, torch.float64)])  # fmt: skip
def test_sinusoidal_embedding_formula(fresh_seed, dim, scale, dtype):
    """[cos(s·t·f_j) | sin(s·t·f_j)] with f_j = 10000^(−j/h) (float32 frequencies), a zero column
    for odd widths; float64 t is computed in float64."""
    from mdfast.models.embeddings import sinusoidal_embedding

    g = torch.Generator().manual_seed(fresh_seed)
    t = torch.rand(7, generator=g, dtype=dtype) * (1.0 if scale != 1.0 else 50.0)
    half = dim // 2
    freqs = (10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)).float().double()
    args = scale * t.double()[:, None] * freqs[None]
    want = torch.cat([args.cos(), args.sin()], -1)
    if dim % 2:
        want = torch.cat([want, torch.zeros(7, 1, dtype=torch.float64)], -1)
    got = sinusoidal_embedding(t, dim, scale=scale)
    assert got.dtype == torch.promote_types(dtype, torch.float32) and got.shape == (7, dim)
    # float32 frequencies (exp in float32: within 2 ulp), and float32 arguments for float32 t
    tol = args.abs().max().item() * (2**-22 if dtype == torch.float64 else 2**-20) + 1e-7
    torch.testing.assert_close(got.double(), want, rtol=0, atol=tol)
    with pytest.raises(ValueError, match="'t' must be 1-d"):
        sinusoidal_embedding(t[:, None], dim)
