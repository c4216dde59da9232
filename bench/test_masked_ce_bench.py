"""pytest-benchmark suite of masked_ce / linear_masked_ce (forward + backward) against the
references of mdfast.reference, at sizes that run in seconds on a CPU.

    python -m pytest bench/test_masked_ce_bench.py --benchmark-group-by=param:case

The full sweep with CSV rows and plots is ``python -m bench.masked_ce``. No timing is asserted.
"""

from __future__ import annotations

import pytest
import torch

from bench.masked_ce import _ce_inputs, _ce_step, _linear_inputs, _linear_step
from mdfast import baselines, ops, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CE_PROVIDERS = {
    "mdfast": lambda z, t, w, ex: ops.masked_ce(z, t, w, ex),
    "mdfast_inplace": lambda z, t, w, ex: ops.masked_ce(z, t, w, ex, inplace_backward=True),
    "reference": reference.masked_ce,
    "torch_ce": baselines.masked_ce_cross_entropy,
}
CE_CASES = {"N512-V50258-fp32-0.5": (512, 50258, torch.float32, 0.5)}
CE_CASES["N512-V30522-bf16-1.0"] = (512, 30522, torch.bfloat16, 1.0)


@pytest.mark.parametrize("provider", list(CE_PROVIDERS))
@pytest.mark.parametrize("case", list(CE_CASES))
def test_masked_ce_fwd_bwd(benchmark, provider, case):
    n, v, dtype, frac = CE_CASES[case]
    logits, target, weight = _ce_inputs(n, v, dtype, frac, DEVICE)
    leaf = logits.requires_grad_()
    step = _ce_step(CE_PROVIDERS[provider], leaf, target, weight, v - 1)

    def run():
        step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"masked_ce {case}"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert torch.isfinite(leaf.grad).all()


LINEAR_PROVIDERS = {"mdfast": ops.linear_masked_ce, "reference": reference.linear_masked_ce}


@pytest.mark.parametrize("provider", list(LINEAR_PROVIDERS))
def test_linear_masked_ce_fwd_bwd(benchmark, provider):
    n, d, v = 256, 256, 8192
    hidden, weight, bias, target, row_weight = _linear_inputs(n, d, v, torch.bfloat16, 0.5, DEVICE)
    leaves = [t.requires_grad_() for t in (hidden, weight, bias)]
    step = _linear_step(LINEAR_PROVIDERS[provider], leaves, target, row_weight, v - 1)

    def run():
        step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"linear_masked_ce N{n}-D{d}-V{v}-bf16-0.5"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)
