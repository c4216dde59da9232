"""pytest-benchmark suite of the MDM-Prime kernels and their seed-style references at small
shapes (`pytest bench/test_prime_bench.py`); bench/prime.py runs the full-size sweep."""

from __future__ import annotations

import pytest
import torch

from bench.prime import problem
from mdfast import ops, reference

LOSS_SHAPES = [(4, 256, 256, 2), (4, 256, 256, 8), (1, 64, 50257, 4)]  # (B, L, C, ℓ)


@pytest.mark.parametrize("mode", ["joint", "elbo"])
@pytest.mark.parametrize("provider", ["mdfast", "reference"])
@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=lambda s: f"B{s[0]}-L{s[1]}-C{s[2]}-l{s[3]}")
def test_loss_fwd_bwd(benchmark, mode, provider, shape):
    batch, length, c, ell = shape
    logits, x, digits, base = problem(batch, length, c, ell, 0.5)

    def run():
        z = logits.detach().requires_grad_()
        if provider == "mdfast":
            loss = ops.prime_ce(z, x, digits, base=base, mode=mode)
        else:
            loss = reference.prime_ce(z, x, digits, base, mode)
        loss.sum().backward()
        return z.grad

    grad = benchmark(run)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("mode", ["exact", "marginal"])
@pytest.mark.parametrize("provider", ["mdfast", "reference"])
@pytest.mark.parametrize("ell", [2, 4])
def test_sample_step_last(benchmark, mode, provider, ell):
    logits, _, digits, base = problem(4, 256, 256, ell, 0.5)
    gen = torch.Generator().manual_seed(0)

    def run():
        if provider == "mdfast":
            return ops.prime_sample_step(
                logits, digits, base=base, alpha_t=0.5, alpha_s=1.0, mode=mode, seed=1, offset=0
            )
        return reference.prime_sample_step(
            logits, digits, base, 0.5, 1.0, 1.0, mode, None, generator=gen
        )

    out = benchmark(run)
    assert (out != base).all()
