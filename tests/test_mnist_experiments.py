"""Binarized-MNIST experiment wiring: datasets per experiment, checkpoints (round trip, named as
the seed's, mismatch errors), the PNG grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdfast.experiments import mnist as exp
from mdfast.experiments.mnist.data import MASK


def test_training_data_per_experiment():
    x0, labels = exp.training_data("baseline", train=False)
    assert x0.shape == (500, 28, 28) and labels.shape == (500,)
    x_obs, observed, labels = exp.training_data("ambient", masked_fraction=0.5, train=False)
    assert x_obs.shape == observed.shape == (500, 28, 28)
    assert (x_obs[~observed] == MASK).all() and (x_obs[observed] != MASK).all()
    with pytest.raises(ValueError, match="masked_fraction"):
        exp.training_data("naive", masked_fraction=1.0, train=False)
    with pytest.raises(ValueError, match="unknown experiment"):
        exp.training_data("diffusion", train=False)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    model = exp.build_model({"base": 8, "mults": (1, 2), "num_res_blocks": 1, "patch": 2})
    torch.nn.init.normal_(model.out.weight)  # non-zero outputs
    path = exp.save_checkpoint(
        tmp_path / "ambient_mnist_final.pth", model, experiment="ambient", masked_fraction=0.9
    )
    loaded, meta = exp.load_checkpoint(path, experiment="ambient")
    assert meta["experiment"] == "ambient" and meta["masked_fraction"] == 0.9
    x = torch.randint(0, 3, (2, 28, 28))
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(exp.CheckpointMismatchError, match="'ambient', expected 'baseline'"):
        exp.load_checkpoint(path, experiment="baseline")
    other = tmp_path / "dit.pt"
    torch.save({"model": {}, "step": 3}, other)
    with pytest.raises(exp.CheckpointMismatchError, match="not a binarized-MNIST checkpoint"):
        exp.load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exp.load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown model preset"):
        exp.build_model("huge")


def test_save_grid_png(tmp_path):
    from PIL import Image

    tokens = torch.zeros(10, 28, 28, dtype=torch.long)
    tokens[3, 5:20, 14] = 1
    path = exp.save_grid(tokens, tmp_path / "g.png", nrow=5, scale=1)
    img = torch.from_numpy(np.asarray(Image.open(path)).copy())
    assert img.shape == (62, 152)
    # Digit 3 sits in row 0, column 3: its stroke is white, everything else in its cell black.
    cell = img[2:30, 2 + 3 * 30 : 2 + 3 * 30 + 28]
    assert (cell[5:20, 14] == 255).all() and (cell == 255).sum() == 15


def test_cli_presets(tmp_path, capsys):
    """`mdfast train/eval mnist-*`: the presets run through the shared trainer and CLI."""
    import json

    from mdfast import cli

    out = str(tmp_path / "run")
    common = ["model.preset=demo", f"train.out_dir={out}", "data.masked_fraction=0.5"]
    assert cli.main(["train", "mnist-ambient", "train.steps=2", "train.batch_size=8", *common]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "mnist-ambient", "eval.sequences=8", *common]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["loss"] > 0
    assert cli.main(["train", "mnist-baseline", "model.preset=huge"]) != 0
    assert "unknown model.preset 'huge'" in capsys.readouterr().err


def test_table_run_names():
    from mdfast.experiments.mnist.table import RUNS, parse_run

    assert parse_run("baseline") == ("baseline", 0.0, {})
    assert parse_run("naive@0.5") == ("naive", 0.5, {})
    assert parse_run("ambient@0.9") == ("ambient", 0.9, {"consistency_weight": 1.0})
    assert parse_run("ambient-easy@0.5")[2] == {"consistency_weight": 0.0}
    assert parse_run("ambient-l0.1-k8-kl@0.9")[2] == {
        "consistency_weight": 0.1,
        "inner_steps": 8,
        "divergence": "kl",
    }
    assert parse_run("ambient-reversed@0.9")[2]["role"] == "reversed"
    for name in RUNS:
        parse_run(name)
    for bad in ("ambient", "naive-l1@0.5", "ambient-x3@0.5", "ambient@1.0", "mdlm@0.5"):
        with pytest.raises(ValueError, match="run name"):
            parse_run(bad)


def test_diagnostics_rows(tmp_path):
    """The consistency-gradient diagnostics on a tiny model: one row per variant plus the easy
    loss's, cosines in [-1, 1], and the probe's held-out parts."""
    from mdfast.experiments.mnist.diagnostics import diagnose

    torch.manual_seed(0)
    model = exp.build_model({"base": 8, "mults": (1, 2), "num_res_blocks": 1, "patch": 2})
    torch.nn.init.normal_(model.out.weight, std=0.1)
    rows = diagnose(
        model,
        masked_fraction=0.5,
        variants=["ambient-k1", "ambient-reversed"],
        batches=2,
        batch_size=8,
        probe_steps=1,
    )
    assert [r["variant"] for r in rows] == ["easy", "ambient-k1", "ambient-reversed"]
    for r in rows:
        assert -1 <= r["cos_oracle"] <= 1 and r["norm_ratio"] > 0
        assert 0 < r["below_after_probe"] < 2 and 0 < r["below_before"] < 2
    with pytest.raises(ValueError, match="not an ambient run name"):
        diagnose(model, masked_fraction=0.5, variants=["naive"], batches=1)
