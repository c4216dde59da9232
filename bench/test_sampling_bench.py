"""pytest-benchmark suite of the sampling step and samplers at small sizes (CI runs it with
--benchmark-disable: each body runs once as a test). ``python -m bench.sampling`` is the full
benchmark that writes bench/results/sampling.csv."""

from __future__ import annotations

import pytest
import torch

from bench.sampling import FullLogits, _step_cases, e2e_model
from mdfast import sampling

B, L, V, T = 2, 128, 4096, 256


@pytest.mark.parametrize(
    "provider", ["seed_step", "seed_cached_step", "mdfast_step", "mdfast_events"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step(benchmark, provider, dtype):
    benchmark.group = f"sampling step B={B} L={L} V={V} {dtype}"
    cases = _step_cases(B, L, V, 2 / T, dtype, "cpu", with_seed=provider.startswith("seed"))
    benchmark(cases[provider][0])


@pytest.mark.parametrize("name", ["ddpm", "ddpm_cache", "first_hitting"])
def test_sampler(benchmark, name):
    benchmark.group = "samplers L=64 V=256 T=64"
    model = FullLogits(e2e_model("tiny", 256, 64, "cpu"))
    fn = {
        "ddpm": sampling.ddpm,
        "ddpm_cache": sampling.ddpm_cache,
        "first_hitting": sampling.first_hitting,
    }[name]
    result = benchmark.pedantic(
        lambda: fn(model, batch_size=1, length=64, mask_index=255, steps=64, seed=0),
        rounds=3,
        iterations=1,
    )
    assert (result.x != 255).all()
