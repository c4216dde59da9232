"""Binarized-MNIST denoiser, objectives (MDLM baseline, naive-on-corrupted, ambient) and metrics
(exact-ELBO bits per pixel, digit Fréchet distance, classifier confidence)."""

from __future__ import annotations

import math

import pytest
import torch

from mdfast.experiments.mnist import frechet as dfm
from mdfast.experiments.mnist.data import MASK, BinarizedMNIST, CorruptedMNIST
from mdfast.experiments.mnist.model import MNISTUNet
from mdfast.experiments.mnist.objectives import (
    AmbientMDLM,
    MDLMBaseline,
    NaiveCorrupted,
    make_objective,
    pixel_ce,
)
from mdfast.metrics.elbo import nelbo_bits_per_token


def _tiny_unet():
    return MNISTUNet(base=8, mults=(1, 2), num_res_blocks=1)


@pytest.fixture(scope="module")
def digits():
    return BinarizedMNIST(train=False)


@pytest.fixture(scope="module")
def corrupted(digits):
    return CorruptedMNIST(masked_fraction=0.5, base=digits)


def test_unet_shapes_and_depends_on_x_only():
    torch.manual_seed(0)
    model = _tiny_unet()
    x = torch.randint(0, 3, (4, 28, 28))
    out = model(x)
    assert out.shape == (4, 28, 28, 3)
    assert torch.equal(model(x.view(4, 784)), out.reshape(4, 784, 3))
    # Per-sample: changing image 0 leaves the others' logits unchanged (GroupNorm, no batch stats).
    x2 = x.clone()
    x2[0] = MASK
    torch.testing.assert_close(model(x2)[1:], out[1:])
    with pytest.raises(ValueError, match="'x'"):
        model(torch.zeros(2, 100, dtype=torch.long))


@pytest.mark.parametrize("kind", ["baseline", "naive", "ambient", "ambient-reversed"])
def test_each_loss_lowers(kind, digits, corrupted):
    torch.manual_seed(0)
    model = _tiny_unet()
    objective = {
        "baseline": lambda: MDLMBaseline(model),
        "naive": lambda: NaiveCorrupted(model),
        "ambient": lambda: AmbientMDLM(model, masked_fraction=0.5, inner_steps=2),
        "ambient-reversed": lambda: AmbientMDLM(model, masked_fraction=0.5, role="reversed"),
    }[kind]()
    if kind == "baseline":
        batch = (digits.tokens[:64],)
    else:
        batch = (corrupted.x_obs[:64], corrupted.observed[:64])
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)

    def evaluate():
        torch.manual_seed(123)  # same masks and times before and after training
        with torch.no_grad():
            return objective.loss(batch)[0].item()

    before = evaluate()
    for _ in range(12):
        loss, metrics = objective.loss(batch)
        assert torch.isfinite(loss) and set(metrics) >= {"loss"}
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("kind", ["naive", "ambient", "reversed"])
def test_loss_never_reads_unobserved_pixels(kind, corrupted, digits):
    """Poison the unobserved pixels (the true values, flipped values, or garbage ids): the loss and
    its gradient are bit-identical for the same random draws."""
    torch.manual_seed(0)
    model = _tiny_unet()
    objective = (
        NaiveCorrupted(model)
        if kind == "naive"
        else AmbientMDLM(model, masked_fraction=0.5, role="student" if kind == "ambient" else kind)
    )
    x_obs, observed = corrupted.x_obs[:16], corrupted.observed[:16]
    truth = digits.tokens[:16]
    variants = [
        x_obs,
        torch.where(observed, x_obs, truth),
        torch.where(observed, x_obs, 1 - truth),
        torch.where(observed, x_obs, torch.full_like(x_obs, 7)),
    ]
    results = []
    for x in variants:
        torch.manual_seed(42)
        objective.zero_grad()
        loss, _ = objective.loss((x, observed))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in objective.parameters()])
        results.append((loss.detach(), grads))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert torch.equal(grads, results[0][1])


def test_baseline_is_mdlm_subs_nelbo_on_a_fixed_batch(fresh_seed, digits):
    """MDLMBaseline (now :class:`mdfast.diffusion.MDLM` with the pixel mask id) on a fixed batch
    equals the SUBS NELBO recomputed in float64 from the noised input and time it used:
    mean over pixels of 1[masked] · (1/t) · (logsumexp_{v ≠ MASK} z_v − z_{x0}), with t read back
    from the log-linear σ_t = −log(1 − (1 − ε)t) handed to the model."""
    from mdfast.diffusion import MDLM

    torch.manual_seed(fresh_seed % 2**31)
    net = _tiny_unet()
    torch.nn.init.normal_(net.out.weight, std=0.3)
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, sigma=None):
            out = self.net(x, sigma)
            seen.append((x.clone(), sigma.detach().double().clone(), out.detach().double()))
            return out

    objective = MDLMBaseline(Recorder())
    assert isinstance(objective, MDLM) and objective.mask_index == MASK
    x0, labels = digits.tokens[:16], digits.labels[:16]
    loss, metrics = objective((x0, labels))
    xt, sigma, logits = seen[0]
    eps = objective.schedule.eps
    t = -torch.expm1(-sigma) / (1 - eps)
    masked = xt == MASK
    assert masked.any() and (xt[~masked] == x0[~masked]).all()
    z = logits[..., :MASK]  # the mask class left out
    ce = torch.logsumexp(z, -1) - z.gather(-1, x0[..., None]).squeeze(-1)
    want = (masked * ce / t.view(-1, 1, 1)).mean()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(metrics["loss"], loss.detach())


def test_ambient_bad_masked_fraction():
    with pytest.raises(ValueError, match="'masked_fraction'"):
        AmbientMDLM(_tiny_unet(), masked_fraction=1.0)


def test_reversed_consistency_target_is_exact_step():
    """The previous (reversed-role) variant, ``role="reversed"``: the model at the data's level is
    the student and its target comes from one exact reverse step to s = t − step_back: each
    masked pixel stays masked with probability s/t, the others take the student's sample, and the
    second model call flags exactly the still-masked pixels (the seed flagged the revealed set)."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen.append(x.clone())
            logits = torch.zeros(*x.shape, 3)
            logits[..., 1] = 30.0  # the student is sure every pixel is on
            return logits + self.bias

    obj = AmbientMDLM(Recorder(), masked_fraction=0.6, role="reversed", step_back=0.2)
    torch.manual_seed(0)
    n = 64
    observed = torch.rand(n, 28, 28) > 0.6
    x_obs = torch.zeros(n, 28, 28, dtype=torch.long).masked_fill(~observed, MASK)
    obj.consistency_loss(x_obs)
    student_in, teacher_in = seen
    assert torch.equal(student_in, x_obs)
    masked = ~observed
    still = teacher_in == MASK
    assert not (still & observed).any()  # observed pixels stay as they are
    assert torch.equal(teacher_in[observed], x_obs[observed])
    assert (teacher_in[masked & ~still] == 1).all()  # revealed pixels carry the student's sample
    t = masked.flatten(1).float().mean(1)
    expected = ((t - 0.2) / t * masked.flatten(1).sum(1)).sum()
    got = still.sum().float()
    sd = math.sqrt(float(expected) * 0.4)
    assert abs(got - expected) < 6 * sd, (got, expected)


def test_ambient_options_are_checked():
    model = _tiny_unet()
    for kw, name in [
        ({"role": "teacher"}, "'role'"),
        ({"divergence": "l1"}, "'divergence'"),
        ({"inner_steps": 0}, "'inner_steps'"),
        ({"subsample": 1.5}, "'subsample'"),
    ]:
        with pytest.raises(ValueError, match=name):
            AmbientMDLM(model, masked_fraction=0.5, **kw)
    with pytest.raises(ValueError, match="inner_steps"):
        make_objective("naive", model, inner_steps=2)


def test_pixel_ce_matches_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 3, dtype=torch.float64)
    target = torch.randint(0, 2, (5, 7))
    weight = torch.rand(5, 7, dtype=torch.float64)
    got = pixel_ce(logits, target, weight)
    ref = -torch.log_softmax(logits[..., :2], -1).gather(-1, target[..., None])[..., 0] * weight
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def _independent_pixels(digits, count: int = 64):
    """(model predicting every pixel independently with probabilities θ = the pixel means,
    ``count`` digits, their exact NLL Σ_i −log p_θ(x_i) in bits per pixel [count])."""
    theta = digits.tokens.float().mean(0).clamp(0.02, 0.98)

    def model(x):
        logits = torch.zeros(*x.shape, 3)
        logits[..., 1] = torch.log(theta / (1 - theta))
        return logits

    x0 = digits.tokens[:count]
    exact = -(x0 * theta.log() + (1 - x0) * (1 - theta).log()).flatten(1).sum(1)
    return model, x0, exact / (784 * math.log(2))


def test_elbo_exact_for_independent_pixels(digits):
    """A model predicting every pixel independently with probabilities θ has NELBO equal to its
    exact NLL Σ_i −log p_θ(x_i) (any-order form: every mask set gives the same sum)."""
    model, x0, exact = _independent_pixels(digits)
    exact_bpp = exact.mean().item()
    got, stderr = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=4)
    assert abs(got - exact_bpp) < 6 * stderr + 1e-9
    assert 0 < exact_bpp < 1


@pytest.mark.parametrize("t_max", [0.5, 0.9])
def test_elbo_part_below_t_max_independent_pixels(digits, t_max):
    """Independent pixels: every k-subset has the same mean CE, so the part from t < t_max is
    Σ_k P(Bin(n, t_max) ≥ k) · NLL/n = t_max · NLL."""
    model, x0, exact = _independent_pixels(digits)
    want = t_max * exact.mean().item()
    got, stderr = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=4, t_max=t_max)
    assert abs(got - want) < 6 * stderr + 1e-9


@pytest.mark.parametrize("t_max", [0.3, 0.9])
def test_elbo_part_below_t_max_level_dependent_model(digits, t_max):
    """A model whose prediction depends on the number k of masked pixels only: E[mean CE | k] =
    f(k) is known exactly, and the part from t < t_max is Σ_k P(Bin(n, t_max) ≥ k) · f(k), the
    weights of the time integral ∫_0^{t_max} (1/t) P(k | t) dt; it is below the full NELBO."""
    n = 784
    x0 = digits.tokens[:128]

    def p_on(k):
        return torch.sigmoid(4.0 * k / n - 3.0)

    def model(x):
        k = (x == MASK).flatten(1).sum(1).double()
        logits = torch.zeros(*x.shape, 3)
        logits[..., 1] = torch.logit(p_on(k)).float().view(-1, 1, 1)
        return logits

    k = torch.arange(1, n + 1, dtype=torch.float64)
    on = x0.flatten(1).double().mean(1)  # fraction of "on" pixels per image
    f = -(on[:, None] * p_on(k).log() + (1 - on[:, None]) * (1 - p_on(k)).log())  # [N, n]
    binom = torch.distributions.Binomial(n, torch.tensor(t_max, dtype=torch.float64))
    pmf = binom.log_prob(torch.arange(0, n + 1, dtype=torch.float64)).exp()
    w = pmf.flip(0).cumsum(0).flip(0)[1:]  # P(Bin ≥ k), k = 1..n
    want = ((f * w).sum(1) / (n * math.log(2))).mean().item()
    got, stderr = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=8, t_max=t_max)
    assert abs(got - want) < 6 * stderr + 1e-9, (got, want, stderr)
    full, _ = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=2)
    assert got < full


def test_elbo_bad_input(digits):
    with pytest.raises(ValueError, match="'x0'"):
        nelbo_bits_per_token(_tiny_unet(), digits.tokens[:0], mask_index=MASK)
    with pytest.raises(ValueError, match="'repeats'"):
        nelbo_bits_per_token(_tiny_unet(), digits.tokens[:2], mask_index=MASK, repeats=0)
    for t_max in (0.0, 1.5):
        with pytest.raises(ValueError, match="'t_max'"):
            nelbo_bits_per_token(_tiny_unet(), digits.tokens[:2], mask_index=MASK, t_max=t_max)


def test_frechet_zero_for_same_data_large_for_noise(tmp_path):
    clf = dfm.load_classifier(tmp_path)
    assert (tmp_path / "digit_classifier_v1.pt").is_file()
    assert (
        dfm.load_classifier(tmp_path)
        .state_dict()["head.weight"]
        .equal(clf.state_dict()["head.weight"])
    )
    train = BinarizedMNIST(train=True).tokens
    a, b = train[0::2], train[1::2]
    same = dfm.digit_frechet(a, b, clf)
    noise = (torch.rand(a.shape, generator=torch.Generator().manual_seed(0)) < 0.13).long()
    far = dfm.digit_frechet(a, noise, clf)
    assert dfm.frechet_distance(dfm.features(clf, a)[0], dfm.features(clf, a)[0]) < 1e-6
    assert same < 0.02 * far, (same, far)
    conf_digits = dfm.classifier_confidence(b, clf)
    conf_noise = dfm.classifier_confidence(noise, clf)
    assert conf_digits["confidence"] > 0.8 > conf_noise["confidence"]
    assert conf_digits["class_entropy_bits"] > 3.2  # all ten classes equally present


def test_frechet_matches_closed_form_gaussians():
    """Two Gaussians with known moments: d² = |μa−μb|² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½)."""
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64) * 2 + 1
    # Σa = I, Σb = 4I: d² = 3·1 + 3 + 12 − 2·3·2 = 6
    assert abs(dfm.frechet_distance(a, b) - 6.0) < 0.1


def test_elbo_keyed_noise_does_not_depend_on_batch_size(digits):
    """With ``seed`` each image's masks are keyed by (seed, repeat, its index): the estimate is
    the same whatever the evaluation batch size, and another seed gives another estimate."""
    x0 = digits.tokens[:24]

    def model(x):  # depends on how many pixels are masked, so the masks matter
        k = (x == MASK).flatten(1).sum(1).float()
        logits = torch.zeros(*x.shape, 3)
        logits[..., 1] = (4.0 * k / 784 - 3.0).view(-1, 1, 1)
        return logits

    a = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=2, batch_size=24, seed=3)
    b = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=2, batch_size=7, seed=3)
    c = nelbo_bits_per_token(model, x0, mask_index=MASK, repeats=2, batch_size=24, seed=4)
    assert a[0] == pytest.approx(b[0], rel=1e-6) and a[1] == pytest.approx(b[1], rel=1e-5)
    assert a[0] != pytest.approx(c[0], rel=1e-6)
