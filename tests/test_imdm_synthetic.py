"""The synthetic task: its data, metrics (the ideal MDLM's all-equal rate against the sampler
with the exact denoiser), the total correlation, and the whole pipeline at tiny settings."""

from __future__ import annotations

import json
import math
import os

import torch
from scipy import stats

from mdfast import sampling
from mdfast.experiments.imdm_synthetic.data import synthetic_align
from mdfast.experiments.imdm_synthetic.metrics import (
    all_equal_fraction,
    first_token_entropy,
    ideal_mdlm_all_equal,
)
from mdfast.experiments.imdm_synthetic.pipeline import MODELS, run
from mdfast.experiments.imdm_synthetic.table import claim_reproduced, markdown_table
from mdfast.metrics.total_correlation import entropy_bits, total_correlation


def test_data_and_metrics():
    x = synthetic_align(500, 6, 5, seed=3)
    assert x.shape == (500, 6) and (x == x[:, :1]).all()
    assert all_equal_fraction(x) == 1.0
    assert set(x[:, 0].tolist()) == set(range(5))
    assert abs(first_token_entropy(x) - math.log(5)) < 0.05
    y = x.clone()
    y[:100, 2] = (y[:100, 2] + 1) % 5
    assert all_equal_fraction(y) == 0.8
    assert ideal_mdlm_all_equal(1, 10, 32) == 32.0**-9


class ExactAlign:
    """The exact denoiser of the task: uniform over the V tokens where everything is masked,
    otherwise the visible token everywhere (mask logit −inf)."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, x):
        B, L = x.shape
        logits = torch.zeros(B, L, self.vocab + 1)
        logits[..., self.vocab] = float("-inf")
        seen = x != self.vocab
        first = torch.where(seen, x, self.vocab).min(dim=1).values
        hot = torch.nn.functional.one_hot(first.clamp(max=self.vocab - 1), self.vocab + 1).float()
        visible = seen.any(dim=1)
        logits[visible] = torch.where(hot[visible, None, :] > 0, 0.0, float("-inf")).expand(
            -1, L, -1
        )
        return logits


def test_ideal_mdlm_formula_matches_the_sampler(fresh_seed):
    """The closed form of the ideal MDLM's all-equal rate against the IMDM sampler (no ε) with the
    exact denoiser, 2 and 3 steps, V = 4, L = 5 (binomial test, p > 1e-7)."""
    V, L, n = 4, 5, 20_000
    for steps in (2, 3):
        res = sampling.imdm(ExactAlign(V), batch_size=n, length=L, mask_index=V, steps=steps,
                            seed=(fresh_seed + steps) % 2**40)  # fmt: skip
        k = int((res.x == res.x[:, :1]).all(dim=1).sum())
        p = ideal_mdlm_all_equal(steps, L, V)
        assert stats.binomtest(k, n, p).pvalue > 1e-7, (steps, k / n, p)
        assert V ** -(L - 1) < p < 1  # between the 1-step rate and the data's


def test_total_correlation():
    g = torch.Generator().manual_seed(0)
    # identical duplicates: no freedom left given the shared noise
    base = torch.randint(0, 5, (10, 4), generator=g)
    same = base.repeat(8, 1)
    groups = torch.arange(10).repeat(8)
    tc = total_correlation(same, groups)
    assert tc["tc"] == 0 and tc["groups"] == 10 and tc["group_size"] == 8
    # within a group all positions equal one uniform token: Σ H_j − H = (L − 1) H exactly
    tok = torch.arange(4).repeat(6)  # 24 samples, each token 6 times: H = 2 bits
    x = tok[:, None].repeat(1, 3)
    r = total_correlation(x, torch.zeros(24, dtype=torch.int64))
    assert r["joint_entropy"] == 2.0 and r["tc"] == 4.0
    assert entropy_bits(torch.tensor([1, 1, 0, 2])) == 1.5
    assert math.isnan(total_correlation(x[:1], torch.zeros(1))["tc"])


def test_pipeline_end_to_end_tiny(tmp_path):
    """Every stage at tiny settings: MDLM → IMDM → SDTT / IM-SDTT → couplings → IM-ReDi and its
    two ablations → the table; a second run skips every finished stage."""
    out = str(tmp_path / "syn")
    res = run(out, scale="tiny", steps_list=(1, 2))
    assert list(res["metrics"]) == [label for label, _, _ in MODELS]
    for row in res["metrics"].values():
        for k in (1, 2):
            assert 0 <= row[k]["all_equal"] <= 1 and row[k]["first_token_entropy"] >= 0
    assert set(res["timing"]) >= {"mdlm", "imdm", "sdtt", "imsdtt", "coupling", "imredi",
                                  "evaluation"}  # fmt: skip
    assert all("wall_s" in v for k, v in res["timing"].items())
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["scale"] == "tiny"
    table = open(os.path.join(out, "table.md")).read()
    assert "| IM-ReDi, ignore_seed |" in table and "Claim" in table
    assert isinstance(claim_reproduced(res)[0], bool)
    again = run(out, scale="tiny", steps_list=(1, 2, 4))  # + a step sweep table
    assert again["timing"]["mdlm"] == {"skipped": True}
    assert again["timing"]["imredi_as_mdlm"] == {"skipped": True}
    table = open(os.path.join(out, "table.md")).read()
    assert "by sampling steps" in table and "| IM-ReDi | " in table.split("by sampling")[1]
    assert markdown_table(json.load(open(os.path.join(out, "results.json")))) == table.strip()
