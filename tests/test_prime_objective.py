"""objective.name=prime (mdfast.diffusion.prime_objective): the loss equals prime_ce on hand-built
batches in both layouts, the image token / digit layouts, super-tokens through the objective,
the mixture label, imputation, and the backbone checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mdfast import digits as codec
from mdfast import reference
from mdfast.diffusion.prime import digit_schedule
from mdfast.diffusion.prime_objective import PrimeObjective
from mdfast.models.dit import DiTConfig
from mdfast.models.prime_dit import PrimeDiT
from mdfast.models.unet import UNet
from mdfast.sampling.prime import PrimeSamplerSettings


class Recorder(nn.Module):
    """A stub backbone: records its inputs, returns fixed logits."""

    def __init__(self, logits: torch.Tensor, labels: int = 0):
        super().__init__()
        self.out = nn.Parameter(logits.clone())
        self.seen: list = []
        self.labels = labels

    def forward(self, x, label=None):
        self.seen.append((x.clone(), None if label is None else label.clone()))
        return self.out


def _fixed_times(objective, t):
    objective.process.sample_times = lambda b, device=None, generator=None: t.to(device)


@pytest.mark.parametrize("training", [True, False])
def test_image_loss_is_prime_ce_of_the_digits_the_model_saw(training, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    b, s, ell, c = 2, 4, 2, 256
    images = torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8)
    logits = torch.randn(b, 3, s, s, c, generator=g, dtype=torch.float64)
    model = Recorder(logits)
    obj = PrimeObjective(model, num_classes=c, num_digits=ell, image_size=s, weighting="uniform")
    obj.train(training)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    _fixed_times(obj, t)
    loss, metrics = obj({"input_ids": images})
    x, _ = model.seen[0]
    # the model input: channel c·ℓ + j holds digit j of colour c, or the mask id 16
    assert x.shape == (b, 3 * ell, s, s)
    digits = codec.encode(images.long(), c, ell)  # [B, 3, H, W, ℓ]
    for j in range(ell):
        for col in range(3):
            seen = x[:, col * ell + j]
            assert ((seen == 16) | (seen == digits[:, col, :, :, j])).all()
    digits_t = x.view(b, 3, ell, s, s).permute(0, 1, 3, 4, 2).reshape(b, -1, ell)
    tokens = images.long().reshape(b, -1)
    mode = "joint" if training else "elbo"
    per = reference.prime_ce(
        logits.reshape(-1, c), tokens.reshape(-1), digits_t.reshape(-1, ell), 16, mode
    ).view(b, -1)
    if not training:  # eval: the ELBO weight |α'|/(1-α) of each image's time
        per = per * digit_schedule(t, "polynomial", n=3.0)[1][:, None]
        assert metrics["bits_per_dim"].item() == pytest.approx(loss.item() / math.log(2))
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-10)


def test_image_loss_with_elbo_weighting_and_super_tokens(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    b, s = 2, 2
    images = torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8)
    logits = torch.randn(b, 2, s, s, 4097, generator=g, dtype=torch.float64)
    model = Recorder(logits)
    obj = PrimeObjective(
        model,
        num_classes=4096,
        num_digits=1,
        image_size=s,
        super_token=True,
        weighting="elbo",
        schedule_n=2.0,
    )
    t = torch.tensor([0.25, 0.6], dtype=torch.float64)
    _fixed_times(obj, t)
    loss, _ = obj(images)
    x, _ = model.seen[0]
    tokens = codec.super_encode(images.long())  # [B, 2, H, W]
    assert ((x == 4096) | (x == tokens)).all()
    per = reference.prime_ce(
        logits[..., :4096].reshape(-1, 4096), tokens.reshape(-1), x.reshape(-1, 1), 4096, "joint"
    ).view(b, -1)
    per = per * digit_schedule(t, "polynomial", n=2.0)[1][:, None]
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-10)
    # the objective's own codec: images -> tokens -> digits -> images
    back = obj.decode(obj.process.encode(obj.tokens(images)))
    assert torch.equal(back, images)
    assert obj.bits_per_dim(torch.tensor(math.log(2.0))).item() == pytest.approx(2 / 3)


def test_sequence_loss_with_prime_dit_equals_prime_ce(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    c, ell, length = 50, 2, 6
    model = PrimeDiT(
        DiTConfig(
            vocab_size=c,
            hidden_dim=32,
            cond_dim=16,
            n_blocks=1,
            n_heads=2,
            dropout=0.0,
            model_length=length,
        ),
        num_digits=ell,
    )
    obj = PrimeObjective(
        model, num_classes=c, num_digits=ell, layout="sequence", convention="mdlm", weighting="elbo"
    )
    x0 = torch.randint(0, c, (3, length))
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    _fixed_times(obj, t)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    loss, _ = obj(x0)
    digits_t, logits = seen[0]
    per = reference.prime_ce(
        logits.double().reshape(-1, c),
        x0.reshape(-1),
        digits_t.reshape(-1, ell),
        model.base,
        "joint",
    ).view(3, -1)
    per = per * (1 / t)[:, None]  # log-linear: the ELBO weight is 1/t
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-5)
    # PrimeDiT embeds a token as its ℓ digit rows of one shared table, concatenated
    emb = model.embed(digits_t)
    table = model.vocab_embed.embedding
    assert torch.equal(emb[0, 0], torch.cat([table[digits_t[0, 0, j]] for j in range(ell)]))


def test_mixture_label_reaches_the_model_and_sampling_draws_one_per_sample():
    k = 3
    model = Recorder(torch.zeros(8, 1, 2, 2, 16), labels=k)
    obj = PrimeObjective(
        model, num_classes=16, num_digits=2, image_size=2, channels=1, mixture_labels=k
    )
    obj(torch.randint(0, 16, (8, 1, 2, 2), dtype=torch.uint8))
    label = model.seen[0][1]
    assert label is not None and label.shape == (8,) and 0 <= label.min() <= label.max() < k
    model.seen.clear()
    obj.sample(8, PrimeSamplerSettings(nfe=2, seed=5), device="cpu")
    labels = {tuple(lab.tolist()) for _, lab in model.seen}
    assert len(labels) == 1  # the same label for every call of one sample
    assert max(next(iter(labels))) < k


def test_unet_label_conditioning_changes_the_output(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    net = UNet("tiny", num_labels=4)
    for p in net.parameters():  # the zero-initialised output conv hides everything else
        nn.init.normal_(p, std=0.05)
    x = torch.randint(0, 5, (2, 1, 8, 8))
    a = net(x, label=torch.tensor([0, 0]))
    b = net(x, label=torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    assert torch.equal(net(x), net(x, label=torch.tensor([4, 4])))  # no label = padding row
    with pytest.raises(ValueError, match="no label input"):
        UNet("tiny")(x, label=torch.tensor([0, 0]))


def _tiny_unet(ell: int, c: int = 16):
    return UNet(
        "tiny",
        tokens_per_pixel=1,
        digits=ell,
        digit_vocab=codec.prime_base(c, ell) + 1,
        num_classes=c,
        image_size=4,
        channel_mult=[1, 2],
        attention_resolutions=[2],
    )


def test_imputation_never_changes_the_fixed_subtokens(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    c, ell = 16, 4
    model = _tiny_unet(ell, c)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    obj = PrimeObjective(model, num_classes=c, num_digits=ell, image_size=4, channels=1).eval()
    images = torch.randint(0, c, (6, 1, 4, 4), dtype=torch.uint8)
    settings = PrimeSamplerSettings(
        nfe=8, carry_over=True, corrector_parameters=(20.0, 1.0), seed=fresh_seed % 2**62
    )
    out, start = obj.impute(images, [0, 2], settings)
    want = codec.encode(images.long(), c, ell)
    got = codec.encode(out.long(), c, ell)
    assert torch.equal(got[..., [0, 2]], want[..., [0, 2]])
    assert (start[..., [1, 3]] == obj.process.mask_id).all()
    assert not torch.equal(got, want)  # the free digits were sampled, not copied
    with pytest.raises(ValueError, match="subtoken_index"):
        obj.impute(images, [4], settings)


def test_backbone_mismatches_are_named():
    with pytest.raises(ValueError, match=r"model\.digit_vocab=3"):
        PrimeObjective(_tiny_unet(2, 16), num_classes=16, num_digits=4, image_size=4, channels=1)
    with pytest.raises(ValueError, match="mixture_labels"):
        PrimeObjective(
            UNet("tiny", num_labels=2),
            num_classes=4,
            num_digits=1,
            image_size=8,
            channels=1,
            mixture_labels=3,
        )
    with pytest.raises(ValueError, match="super_token"):
        PrimeObjective(_tiny_unet(1), num_classes=16, num_digits=1, super_token=True)
    with pytest.raises(ValueError, match="num_digits"):
        PrimeDiT(DiTConfig(vocab_size=50, hidden_dim=30, n_heads=2), num_digits=4)


def test_nll_is_per_image_and_a_bound_in_bits(fresh_seed):
    torch.manual_seed(fresh_seed % 2**31)
    obj = PrimeObjective(
        _tiny_unet(2), num_classes=16, num_digits=2, image_size=4, channels=1
    ).eval()
    images = torch.randint(0, 16, (3, 1, 4, 4), dtype=torch.uint8)
    out = obj.nll(images, num_times=4)
    assert out["bits_per_dim"].shape == (3,)
    assert torch.allclose(out["bits_per_dim"], out["nll"] / (16 * math.log(2)))
    assert (out["bits_per_dim"] > 0).all()


def test_split_likelihood_is_keyed_and_agrees_with_the_training_loss(fresh_seed):
    """mdfast eval's estimator for Prime (mdfast.metrics.likelihood): the same numbers for any
    batch size, PrimeObjective.nll is that estimator (same keys, same numbers), and it agrees
    with the objective's eval-mode loss (stratified times, the ELBO weights; also unbiased)
    within their standard errors."""
    from mdfast import rng
    from mdfast.metrics.likelihood import evaluate_likelihood, supports

    torch.manual_seed(fresh_seed % 2**31)
    obj = PrimeObjective(
        _tiny_unet(2), num_classes=16, num_digits=2, image_size=4, channels=1
    ).eval()
    for p in obj.parameters():
        nn.init.normal_(p, std=0.1)
    images = torch.randint(0, 16, (24, 1, 4, 4), dtype=torch.uint8)
    data = {"input_ids": images}
    assert supports(obj)
    a = evaluate_likelihood(obj, data, K=8, seed=3, batch_size=5)
    b = evaluate_likelihood(obj, data, K=8, seed=3, batch_size=24)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["tokens"] == 24 * 16  # fp32 convs
    halves = [obj.nll(images[s : s + 12], num_times=8, seed=3, index=torch.arange(s, s + 12))
              for s in (0, 12)]  # fmt: skip
    nll = torch.cat([h["nll"] for h in halves])
    assert float(nll.sum() / (24 * 16)) == pytest.approx(a["loss"], rel=1e-6)
    with torch.no_grad():
        losses = []
        for step in range(96):
            with rng.noise_key(rng.NoiseKey.for_batch(fresh_seed % 2**31, step, 24)):
                losses.append(float(obj(images)[0]))
    mc = torch.tensor(losses, dtype=torch.float64)
    se = (mc.std() / len(mc) ** 0.5).item()
    assert abs(a["loss"] - mc.mean().item()) < 5 * math.hypot(a["stderr"], se)


@pytest.mark.parametrize("ell", [1, 2, 4])
def test_split_likelihood_of_a_uniform_model_is_log_c(ell):
    """A backbone with uniform logits (the UNet's zero-initialised output layer) pays log b per
    masked digit, so its NELBO per token is ℓ log b ∫|α'| dt = log C · (α_max − α_min): for
    the polynomial times in (0, 1 − ε], log C · (1 − ε)³ exactly in expectation. The keyed
    lattice estimate must be tight (the lattice covers t evenly) and match within 5 standard
    errors (a flipped mask is off by a factor ~4, with a wide error)."""
    from mdfast.metrics.likelihood import evaluate_likelihood

    obj = PrimeObjective(
        _tiny_unet(ell), num_classes=16, num_digits=ell, image_size=4, channels=1
    ).eval()
    images = torch.randint(0, 16, (64, 1, 4, 4), dtype=torch.uint8)
    assert torch.all(obj.logits(obj.masked_digits(1)) == 0)
    out = evaluate_likelihood(obj, {"input_ids": images}, K=16, seed=5, batch_size=64)
    exact = math.log(16) * (1 - obj.process.eps) ** 3
    assert 0 < out["stderr"] < 0.05 * exact, out
    assert abs(out["loss"] - exact) < 5 * out["stderr"] + 1e-9, (out["loss"], exact)


class _Spy(nn.Module):
    """A backbone that records what it is given (digits [B, ℓ, H, W], label) and returns zero
    logits [B, 1, H, W, C]."""

    def __init__(self, c: int):
        super().__init__()
        self.c, self.seen = c, []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, label=None):
        self.seen.append((x.clone(), None if label is None else label.clone()))
        return torch.zeros(x.shape[0], 1, *x.shape[2:], self.c) + self.w


def test_training_noise_is_keyed_whole_or_split(fresh_seed):
    """Under the trainer's NoiseKey, a sample's flip, mixture label, time and digit mask depend
    on (seed, step, its global index) only: the backbone sees the same input for it whether the
    global batch is one micro-batch or two, and a different step or seed changes the draws."""
    from mdfast import rng

    seed, b = fresh_seed % 2**62, 8
    images = torch.randint(0, 16, (b, 1, 4, 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(fresh_seed % 2**31))  # fmt: skip
    obj = PrimeObjective(_Spy(16), num_classes=16, num_digits=2, image_size=4, channels=1,
                         hflip=True, mixture_labels=3)  # fmt: skip

    def inputs(step, key_seed=seed):
        obj.model.seen.clear()
        idx = torch.arange(b)
        for part in (idx[: b // 2], idx[b // 2 :]):
            with rng.noise_key(rng.NoiseKey(key_seed, step, part, b)):
                obj(images[part])
        split = [torch.cat(z) for z in zip(*obj.model.seen, strict=True)]
        obj.model.seen.clear()
        with rng.noise_key(rng.NoiseKey.for_batch(key_seed, step, b)):
            obj(images)
        whole = list(obj.model.seen[0])
        return split, whole

    split, whole = inputs(3)
    assert torch.equal(split[0], whole[0]) and torch.equal(split[1], whole[1])
    masked = whole[0] == obj.process.mask_id
    assert masked.any() and not masked.all() and len(set(whole[1].tolist())) > 1
    for other in (inputs(4)[1], inputs(3, seed + 1)[1]):
        assert not torch.equal(other[0], whole[0])
