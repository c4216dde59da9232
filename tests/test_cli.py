"""The `mdfast` command: help lists presets, overrides round-trip, bad keys/presets/values
error with the valid choices, train + eval end to end on a tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mdfast import experiments
from mdfast.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_help_lists_presets(capsys):
    names = ("tiny-mdlm", "mdlm-owt-small", "sedd-owt-small", "interpolant-imagenet-uvit")
    for args in ([], ["train"], ["eval"], ["sample"]):
        with pytest.raises(SystemExit) as e:
            main([*args, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        for name in names:
            assert name in out, (args, out)
    # and through the module entry point, as the console script runs it
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "mdfast.cli", "--help"], env=env,
                       capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0 and all(n in r.stdout for n in names), r.stderr


def test_console_script_declared():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'mdfast = "mdfast.cli:main"' in text


def test_presets_subcommand(capsys):
    rc, out, _ = _run(["presets"], capsys)
    assert rc == 0 and out.split() == experiments.preset_names()


def test_override_round_trip(capsys):
    rc, out, _ = _run(["train", "tiny-mdlm", "train.steps=7", "model.hidden_dim=32",
                       "objective.T=5", "train.betas=[0.8, 0.95]", "train.compile=false",
                       "train.lr=2e-4", "data.vocab=20", "--print-config"], capsys)  # fmt: skip
    assert rc == 0
    cfg = json.loads(out)
    assert cfg["train"]["steps"] == 7 and cfg["model"]["hidden_dim"] == 32
    assert cfg["objective"]["T"] == 5 and cfg["train"]["betas"] == [0.8, 0.95]
    assert cfg["train"]["compile"] is False and cfg["train"]["lr"] == 2e-4
    assert cfg["data"]["vocab"] == 20 and cfg["model"]["n_blocks"] == 2  # untouched: preset
    # the printed config, fed back as overrides of every field, reproduces itself
    args = [f"{s}.{k}={json.dumps(v) if not isinstance(v, str) else v}"
            for s, sec in cfg.items() for k, v in sec.items()]  # fmt: skip
    assert experiments.apply_overrides(experiments.get("tiny-mdlm"), args) == cfg


def test_preset_switch_then_patch(capsys):
    rc, out, _ = _run(["train", "tiny-mdlm", "model.preset=small", "model.n_blocks=3",
                       "--print-config"], capsys)  # fmt: skip
    cfg = json.loads(out)
    assert rc == 0 and cfg["model"]["hidden_dim"] == 768 and cfg["model"]["n_blocks"] == 3


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["train", "tiny-mdlm", "train.stpes=3"], r"unknown config key 'train.stpes'.*'steps'"),
        (["train", "tiny-mdlm", "modle.x=1"], r"unknown config section 'modle'.*'model'"),
        (["train", "no-such-preset"], r"unknown preset 'no-such-preset'.*tiny-mdlm"),
        (["eval", "tiny-mdlm", "eval.sequences=many"], r"bad value for 'eval.sequences'"),
        (["train", "tiny-mdlm", "model.preset=huge"], r"unknown model.preset 'huge'.*small"),
        (["train", "tiny-mdlm", "objective.name=bogus"], r"objective.name 'bogus'.*mdlm"),
        (["train", "tiny-mdlm", "train.steps"], r"section.key=value"),
    ],
)
def test_bad_input_lists_valid_choices(args, pattern, capsys):
    import re

    rc, _, err = _run(args, capsys)
    assert rc == 2
    assert re.search(pattern, err), err


def test_train_then_eval(tmp_path, capsys):
    base = ["tiny-ar", "data.n=64", "data.length=16", "train.batch_size=8", "train.steps=3",
            "train.progress=false", f"train.out_dir={tmp_path}", "train.ema=0.9"]  # fmt: skip
    rc, out, err = _run(["train", *base], capsys)
    assert rc == 0, err
    assert "trained to step 3" in out
    assert (tmp_path / "log.csv").exists() and (tmp_path / "ckpt-00000003.pt").exists()
    rc, out, err = _run(["eval", *base, "eval.sequences=16", "eval.batch_size=8"], capsys)
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["checkpoint"].endswith("ckpt-00000003.pt") and res["sequences"] == 16
    assert 0 < res["loss"] < 10


def test_eval_from_mdlm_directory(tmp_path, capsys):
    """`model.init_from=<HF-layout dir>` loads MDLM weights with no conversion step."""
    import torch

    from mdfast.models import DiT

    torch.manual_seed(0)
    dit = DiT("tiny", vocab_size=33)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.3 * torch.randn_like(p))
    dit.save_mdlm(tmp_path / "mdlm")
    base = ["eval", "tiny-mdlm", "eval.sequences=16", f"train.out_dir={tmp_path / 'none'}"]
    rc, out, err = _run([*base, f"model.init_from={tmp_path / 'mdlm'}"], capsys)
    assert rc == 0, err
    loaded = json.loads(out.strip().splitlines()[-1])
    rc, out, err = _run(base, capsys)  # no checkpoint, no weights: a clear error
    assert rc == 1 and "no checkpoint found" in err and "model.random_init=true" in err
    rc, out, err = _run([*base, "model.random_init=true"], capsys)
    assert rc == 0, err
    fresh = json.loads(out.strip().splitlines()[-1])
    assert loaded["checkpoint"] is None and loaded["loss"] != fresh["loss"]


def test_register_objective_is_overridable(monkeypatch, capsys):
    from mdfast.experiments import build, registry

    registry.load_experiments()
    monkeypatch.setattr(registry, "OBJECTIVES", dict(registry.OBJECTIVES))
    build.register_objective("toy", {"alpha": 0.5}, lambda model, o: ("toy", o))
    assert build.OBJECTIVE_DEFAULTS["toy"] == {"alpha": 0.5}
    rc, out, err = _run(["train", "tiny-mdlm", "objective.name=toy", "objective.alpha=0.25",
                         "--print-config"], capsys)  # fmt: skip
    assert rc == 0, err
    cfg = json.loads(out)
    assert cfg["objective"] == {"name": "toy", "alpha": 0.25}
    assert build.build_objective(cfg["objective"], None) == ("toy", {"alpha": 0.25})


def test_eval_uses_the_checkpoint_config(tmp_path, capsys):
    """A run trained with overrides evaluates from its checkpoint without repeating them."""
    train_args = ["train", "tiny-ar", "model.hidden_dim=32", "model.n_heads=2", "data.n=64",
                  "data.length=16", "train.batch_size=8", "train.steps=2", "train.progress=false",
                  f"train.out_dir={tmp_path}"]  # fmt: skip
    assert _run(train_args, capsys)[0] == 0
    rc, out, err = _run(["eval", "tiny-ar", f"--ckpt={tmp_path / 'ckpt-00000002.pt'}",
                         "eval.sequences=8"], capsys)  # fmt: skip
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["sequences"] == 8


@pytest.mark.parametrize(("preset", "sampler"), [("tiny-mdlm", "ddpm_cache"),
                                                 ("tiny-sedd", "analytic")])  # fmt: skip
def test_train_then_sample(tmp_path, capsys, preset, sampler):
    import torch

    base = [preset, "data.n=64", "data.length=16", "train.batch_size=8", "train.steps=2",
            "train.progress=false", f"train.out_dir={tmp_path}"]  # fmt: skip
    assert _run(["train", *base], capsys)[0] == 0
    out_file = tmp_path / "samples.pt"
    rc, out, err = _run(["sample", *base, f"sample.sampler={sampler}", "sample.steps=8",
                         "sample.batch_size=3", f"sample.out={out_file}"], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["shape"] == [3, 16] and 1 <= res["nfe"] <= 8
    x = torch.load(out_file)
    assert x.shape == (3, 16) and x.min() >= 0 and x.max() < 32  # no mask id left


def test_sample_sampler_without_meaning_for_the_objective(tmp_path, capsys):
    rc, _, err = _run(["sample", "tiny-ar", f"train.out_dir={tmp_path}", "model.random_init=true",
                       "sample.sampler=ddpm_cache"], capsys)  # fmt: skip
    assert rc == 2 and "sample.sampler 'ddpm_cache'" in err and "objective 'ar'" in err
