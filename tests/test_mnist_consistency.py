"""The consistency losses of ambient MNIST on tiny distributions with closed-form posteriors
p(x0 | x_s), and the reverse chain that reaches x_s.

The denoiser of these tests is a table: one parameter vector per input configuration (a base-3
code over {0, 1, MASK} of n ≤ 4 pixels), so every level's — indeed every input's — output comes
from its own parameters and a gradient shows exactly which inputs were trained."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mdfast.experiments.mnist.consistency import (
    consistency_loss,
    reverse_chain,
    reversed_consistency_loss,
)
from mdfast.experiments.mnist.data import MASK


class TableDenoiser(torch.nn.Module):
    """logit p(x0_i = 1 | x) = theta[code(x), i] (the 0-class logit is 0, the mask class's is
    ignored by the losses)."""

    def __init__(self, theta: torch.Tensor):
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone().float())
        self.n = theta.shape[1]
        self.powers = 3 ** torch.arange(self.n)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.powers).sum(-1)

    def forward(self, x):
        on = self.theta[self.code(x)]
        return torch.stack([torch.zeros_like(on), on, torch.full_like(on, -50.0)], -1)


def configs(n: int):
    return [torch.tensor(c) for c in itertools.product((0, 1, MASK), repeat=n)]


def true_table(joint: dict[tuple, float], n: int) -> torch.Tensor:
    """theta*[code(x), i] = logit p(x0_i = 1 | the visible pixels of x) for masked i, by
    enumeration (0 for visible i)."""
    theta = torch.zeros(3**n, n, dtype=torch.float64)
    powers = 3 ** torch.arange(n)
    for x in configs(n):
        consistent = [
            (v, p) for v, p in joint.items() if all(x[j] == MASK or x[j] == v[j] for j in range(n))
        ]
        total = sum(p for _, p in consistent)
        for i in range(n):
            if x[i] != MASK:
                continue  # a visible pixel's output is never read
            on = sum(p for v, p in consistent if v[i] == 1) / total
            theta[int((x * powers).sum()), i] = math.log(on / (1 - on))
    return theta


def product_joint(p: list[float]) -> dict[tuple, float]:
    joint = {}
    for v in itertools.product((0, 1), repeat=len(p)):
        joint[v] = math.prod(pi if vi else 1 - pi for pi, vi in zip(p, v, strict=True))
    return joint


def draw_data(joint, batch: int, t_d: float, gen: torch.Generator) -> torch.Tensor:
    """``batch`` draws of x0 from ``joint``, each pixel then hidden with probability t_d."""
    values = torch.tensor(list(joint), dtype=torch.long)
    probs = torch.tensor(list(joint.values()), dtype=torch.float64)
    x0 = values[torch.multinomial(probs, batch, replacement=True, generator=gen)]
    hidden = torch.rand(x0.shape, generator=gen, dtype=torch.float64) < t_d
    return x0.masked_fill(hidden, MASK)


FACTORISED = [0.2, 0.7, 0.5, 0.9]
# Two correlated pixels: p(00) = .45, p(11) = .35, p(01) = p(10) = .1.
CORRELATED = {(0, 0): 0.45, (1, 1): 0.35, (0, 1): 0.1, (1, 0): 0.1}


def _grad(loss_fn, model, x, **kw):
    model.zero_grad()
    loss, _ = loss_fn(model, x, **kw)
    loss.backward()
    return loss.detach(), model.theta.grad.clone()


@pytest.mark.parametrize("u", [0.05, 0.3, 0.6, 0.95])
@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("divergence", ["brier", "kl"])
def test_true_posteriors_are_stationary_at_every_level(u, inner_steps, divergence):
    """Independent pixels, the model equal to the true posteriors everywhere: the loss and its
    gradient vanish at every s = u·τ < τ (here exactly, every x_s having the teacher's
    marginals)."""
    joint = product_joint(FACTORISED)
    model = TableDenoiser(true_table(joint, 4))
    gen = torch.Generator().manual_seed(1)
    x = draw_data(joint, 4096, 0.6, gen)
    torch.manual_seed(2)
    loss, grad = _grad(
        consistency_loss,
        model,
        x,
        inner_steps=inner_steps,
        divergence=divergence,
        subsample=1,
        levels=torch.full((x.shape[0],), u),
    )
    assert abs(loss.item()) < 1e-6
    assert grad.abs().max().item() < 1e-6


def _wrong_below_teacher(n: int, shift: float):
    """(table, teacher row): the true posteriors of the factorised distribution on the
    all-masked input (the teacher's input below), every other input shifted by ``shift``."""
    theta = true_table(product_joint(FACTORISED), n)
    teacher = 3**n - 1
    wrong = theta + shift
    wrong[teacher] = theta[teacher]
    return wrong, teacher


@pytest.mark.parametrize("shift", [-1.0, 1.5])
def test_gradient_reaches_only_the_student_and_points_to_the_truth(shift):
    """Teacher input all-masked (its parameters at the truth), every input below it off by
    ``shift``: the gradient lands on the lower-level inputs only, and on each of them it points
    back to the truth (same sign as the error); the teacher's row gets none."""
    n = 4
    wrong, teacher = _wrong_below_teacher(n, shift)
    model = TableDenoiser(wrong)
    x = torch.full((2048, n), MASK)
    torch.manual_seed(0)
    _, grad = _grad(consistency_loss, model, x, inner_steps=2, subsample=1)
    assert grad[teacher].abs().max().item() == 0.0
    trained = grad != 0
    assert trained.any(1).sum() >= 20  # many lower-level inputs trained
    assert (torch.sign(grad[trained]) == math.copysign(1, shift)).all()


def test_reversed_role_trains_the_teacher_level_instead():
    """The previous variant on the same set-up: the lower levels get no gradient, and the true
    posterior at the data's level is not a minimiser (its gradient pulls it towards the wrong
    lower levels)."""
    n = 4
    wrong, teacher = _wrong_below_teacher(n, 1.5)
    model = TableDenoiser(wrong)
    x = torch.full((2048, n), MASK)
    torch.manual_seed(0)
    _, grad = _grad(reversed_consistency_loss, model, x, step_back=0.5)
    rows = (grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert rows == [teacher]
    # The lower levels predict "on" too often: the teacher is pulled up (negative gradient).
    assert (grad[teacher] < -1e-3).all()


def _mean_gradient(loss_fn, joint, repeats: int, batch: int, u: float, **kw):
    model = TableDenoiser(true_table(joint, 2))
    grads = []
    for r in range(repeats):
        x = draw_data(joint, batch, 0.8, torch.Generator().manual_seed(100 + r))
        torch.manual_seed(200 + r)
        grads.append(_grad(loss_fn, model, x, levels=torch.full((batch,), u), subsample=1, **kw)[1])
    g = torch.stack(grads).double()
    return g.mean(0), g.std(0) / math.sqrt(repeats)


@pytest.mark.parametrize("u", [0.2, 0.7])
def test_brier_is_stationary_at_correlated_truth_and_per_sample_kl_is_not(u):
    """Two correlated pixels (chain exact: at most one other pixel is revealed before the
    student's): at the true posteriors the expected gradient of the two-sample squared distance
    is zero (within 5 standard errors); the per-sample KL's is not (it pulls p(x0_i | x0_j) towards
    the teacher's marginal)."""
    mean, se = _mean_gradient(consistency_loss, CORRELATED, 12, 20_000, u, divergence="brier")
    assert (mean.abs() <= 5 * se + 1e-7).all(), (mean, se)
    mean_kl, se_kl = _mean_gradient(consistency_loss, CORRELATED, 12, 20_000, u, divergence="kl")
    assert (mean_kl.abs() / (se_kl + 1e-12)).max() > 20, (mean_kl, se_kl)


def test_reverse_chain_law():
    """K steps from τ = 1 to s: a pixel is still masked with probability s/τ, the revealed values
    are Bernoulli of the predicting model, both chains share the reveal sets but draw their values
    independently, and step k's model call sees masked fraction t_k."""
    n_img, n_pix, steps, s = 64, 400, 4, 0.2
    seen = []

    class Constant(torch.nn.Module):
        def forward(self, x):
            seen.append((x == MASK).double().mean().item())
            on = torch.full(x.shape, math.log(0.3 / 0.7))
            return torch.stack([torch.zeros_like(on), on, on], -1)

    x = torch.full((2, n_img, n_pix), MASK)
    gen = torch.Generator().manual_seed(0)
    reveal = torch.rand(n_img, n_pix, generator=gen, dtype=torch.float64)
    grid = torch.linspace(1.0, s, steps + 1, dtype=torch.float64).expand(n_img, -1)
    first = torch.full((n_img, n_pix), 0.3)
    x_s = reverse_chain(
        Constant(),
        x,
        first,
        reveal,
        grid,
        lambda c, k: torch.rand(n_img, n_pix, generator=gen, dtype=torch.float64),
    )
    total = n_img * n_pix
    still = (x_s[0] == MASK).double().mean().item()
    assert abs(still - s) < 6 * math.sqrt(s * (1 - s) / total)
    assert torch.equal(x_s[0] == MASK, x_s[1] == MASK)
    revealed = x_s[:, x_s[0] != MASK].double()
    on = revealed.mean().item()
    assert abs(on - 0.3) < 6 * math.sqrt(0.21 / revealed.numel())
    assert (revealed[0] != revealed[1]).double().mean().item() > 0.3  # 2·0.3·0.7 = 0.42
    assert len(seen) == steps - 1
    for k, frac in enumerate(seen, start=1):
        t = grid[0, k].item()
        assert abs(frac - t) < 6 * math.sqrt(t * (1 - t) / total), (k, frac, t)


def test_subsample_takes_every_other_sample():
    """Only the samples whose index is a multiple of ``subsample`` reach the model."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return torch.zeros(*x.shape, 3)

    x = torch.full((10, 6), MASK)
    consistency_loss(Recorder(), x, inner_steps=2, subsample=2)
    assert seen == [5, 10, 10]  # teacher, one inner step (2 chains), student (2 chains)
    with pytest.raises(ValueError, match="'subsample'"):
        consistency_loss(Recorder(), x, subsample=0)
    with pytest.raises(ValueError, match="'inner_steps'"):
        consistency_loss(Recorder(), x, inner_steps=0)
    with pytest.raises(ValueError, match="'divergence'"):
        consistency_loss(Recorder(), x, divergence="l2")


class Recorder(TableDenoiser):
    """A :class:`TableDenoiser` that keeps every input it is called on."""

    def __init__(self, theta):
        super().__init__(theta)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return super().forward(x)


def test_keyed_noise_does_not_depend_on_the_batch_split():
    """Under the trainer's NoiseKey the consistency term of sample g (its level, reveal times and
    values, hence its x_s) is keyed by its global index: the whole batch in one call and the same
    batch in two micro-batches give the student the same inputs, and the same samples take part
    (global index a multiple of ``subsample``)."""
    from mdfast import rng

    n, batch = 4, 8
    theta = torch.randn(3**n, n, generator=torch.Generator().manual_seed(0))
    x = draw_data(product_joint(FACTORISED), batch, 0.7, torch.Generator().manual_seed(1))
    x[::2, 0] = MASK  # every participant has a masked pixel

    def student_inputs(parts):
        inputs, levels = [], []
        for rows in parts:
            model = Recorder(theta)
            key = rng.NoiseKey(7, 3, torch.tensor(rows), batch)
            with rng.noise_key(key):
                _, metrics = consistency_loss(model, x[rows], inner_steps=3)
            inputs.append(model.seen[-1].view(2, -1, n))  # student pass: [chain, sample, pixel]
            levels.append(metrics["level"])
        return torch.cat(inputs, 1), torch.stack(levels).mean()

    whole, level = student_inputs([list(range(batch))])
    split, level_split = student_inputs([[0, 1, 2], [3, 4, 5, 6, 7]])
    assert whole.shape == (2, batch // 2, n)
    assert torch.equal(whole, split)
    torch.testing.assert_close(level, level_split)
