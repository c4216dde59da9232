"""Released MDM-Prime image checkpoints (the seed's flow_matching UNet names) load into
mdfast.models.UNet: names mapped, constant scale-shifts folded, EMA shadows applied, ℓ / C
mismatches named. The test writes a checkpoint in the seed's layout from a small UNet."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch
from torch import nn

from mdfast.models.mdm_prime_checkpoint import (
    CheckpointMismatchError,
    load_mdm_prime_checkpoint,
)
from mdfast.models.unet import UNET_PRESETS, ResBlock, UNet

SMALL = replace(
    UNET_PRESETS["tiny"],
    tokens_per_pixel=3,
    digits=2,
    digit_vocab=17,
    token_dim=16,
    num_classes=256,
    model_channels=16,
    channel_mult=[3, 4],
    num_res_blocks=1,
    attention_resolutions=[4],
    num_head_channels=16,
    image_size=8,
    dropout=0.0,
)


def _seed_layout(model: UNet, gen: torch.Generator):
    """The state dict the seed's DiscretePrimeUNetModel would hold for ``model``'s function, with a
    random constant scale-shift per res-block, and the scale-shifts (block name -> table)."""
    blocks = {n for n, m in model.named_modules() if isinstance(m, ResBlock)}
    sd, tables = {}, {}
    for key, value in model.state_dict().items():
        if key == "digit_embed.weight":
            sd["pixel_embedding.embedding_table.weight"] = value
            continue
        block = next((b for b in blocks if key.startswith(b + ".out_layers.0.")), None)
        if block is not None and key.endswith(".weight"):  # the seed registers it before
            tables[block] = 0.3 * torch.randn(1, 2 * value.numel(), generator=gen)
            sd[f"unet.{block}.emb_layers.embedding_table"] = tables[block]
        sd["unet." + key.replace(".skip.", ".skip_connection.")] = value
    return sd, tables


def _expected(model: UNet, tables: dict, x: torch.Tensor) -> torch.Tensor:
    """``model`` with GN(h)·(1 + s) + h' after each res-block's second norm (the seed's form)."""
    hooks = []
    for name, table in tables.items():
        norm = model.get_submodule(name).out_layers[0]
        scale, shift = table.reshape(-1).chunk(2)

        def hook(mod, args, out, scale=scale, shift=shift):
            return out * (1 + scale[None, :, None, None]) + shift[None, :, None, None]

        hooks.append(norm.register_forward_hook(hook))
    try:
        return model(x)
    finally:
        for h in hooks:
            h.remove()


def _args(**kw):
    base = {
        "target_length": 2,
        "vocab_size": 256,
        "super_token": False,
        "use_uniform_mixture": False,
        "mixture_classes": 4,
        "base": 16,
    }
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def seed_checkpoint(tmp_path, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    torch.manual_seed(fresh_seed % 2**31)
    model = UNet(SMALL).eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.2, generator=gen)
    sd, tables = _seed_layout(model, gen)
    x = torch.randint(0, 17, (2, 6, 8, 8), generator=gen)
    return model, sd, tables, x, tmp_path


def test_released_layout_loads_with_folded_scale_shift(seed_checkpoint):
    model, sd, tables, x, tmp = seed_checkpoint
    path = tmp / "checkpoint-4249.pth"
    torch.save({"model": sd, "epoch": 4249, "args": _args()}, path)
    loaded, args = load_mdm_prime_checkpoint(path, use_ema=False, base=SMALL)
    assert args["target_length"] == 2
    with torch.no_grad():
        want = _expected(model, tables, x)
        got = loaded.eval()(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(model(x), want, atol=1e-3)  # the scale-shifts do matter


def test_ema_shadows_replace_the_weights(seed_checkpoint):
    model, sd, tables, x, tmp = seed_checkpoint
    names = list(sd)
    wrapped = {f"model.{k}": torch.zeros_like(v) for k, v in sd.items()}  # the raw weights
    wrapped["num_updates"] = torch.tensor(10)
    wrapped.update({f"shadow_params.{i}": sd[k] for i, k in enumerate(names)})
    path = tmp / "ema.pth"
    torch.save({"model": wrapped, "args": _args()}, path)
    ema, _ = load_mdm_prime_checkpoint(path, use_ema=True, base=SMALL)
    raw, _ = load_mdm_prime_checkpoint(path, use_ema=False, base=SMALL)
    with torch.no_grad():
        want = _expected(model, tables, x)
        assert torch.allclose(ema.eval()(x), want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(raw.eval()(x), want, atol=1e-3)
    bare = tmp / "bare.pth"
    torch.save({"model": sd, "args": _args()}, bare)
    with pytest.raises(CheckpointMismatchError, match="no EMA weights"):
        load_mdm_prime_checkpoint(bare, use_ema=True, base=SMALL)


def test_checkpoint_that_disagrees_is_named(seed_checkpoint):
    _, sd, _, _, tmp = seed_checkpoint
    path = tmp / "c.pth"
    torch.save({"model": sd, "args": _args()}, path)
    with pytest.raises(CheckpointMismatchError, match="digits=2, the preset expects 4"):
        load_mdm_prime_checkpoint(path, use_ema=False, base=SMALL, expect={"digits": 4})
    torch.save({"model": sd, "args": _args(target_length=4)}, path)
    with pytest.raises(CheckpointMismatchError, match="ℓ=4"):
        load_mdm_prime_checkpoint(path, use_ema=False, base=SMALL)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointMismatchError, match="not an MDM-Prime image checkpoint"):
        load_mdm_prime_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_mdm_prime_checkpoint(tmp / "missing.pth")


def test_label_conditioned_checkpoint_keeps_its_label_layers(tmp_path, fresh_seed):
    """The real uniform mixture (num_classes in the seed's UNet): label_emb and the res-blocks'
    emb_layers.1 keep their names."""
    cfg = replace(SMALL, digits=1, digit_vocab=257, num_classes=257, num_labels=4)
    model = UNet(cfg)
    sd = {
        (
            "pixel_embedding.embedding_table.weight"
            if k == "digit_embed.weight"
            else "unet." + k.replace(".skip.", ".skip_connection.")
        ): v
        for k, v in model.state_dict().items()
    }
    assert any(".emb_layers.1.weight" in k for k in sd) and "unet.label_emb.weight" in sd
    path = tmp_path / "mix.pth"
    torch.save({"model": sd, "args": _args(target_length=1, use_uniform_mixture=True)}, path)
    loaded, _ = load_mdm_prime_checkpoint(path, use_ema=False, base=SMALL)
    x = torch.randint(0, 257, (2, 3, 8, 8))
    label = torch.tensor([1, 3])
    assert torch.equal(loaded(x, label=label), model(x, label=label))
