"""The MDM-Prime experiment package: presets, the seed's command line mapped onto them, and
``mdfast train`` / ``mdfast sample`` / NLL on the CPU-scale digits preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdfast import experiments
from mdfast.cli import main as cli
from mdfast.experiments.prime import seed_cli
from mdfast.experiments.prime.digits8 import load_digits8
from mdfast.experiments.prime.presets import PRESETS


def test_every_prime_preset_resolves_with_consistent_digits():
    for name in PRESETS:
        cfg = experiments.apply_overrides(experiments.get(name), [])
        m, o = cfg["model"], cfg["objective"]
        assert o["name"] == "prime"
        digits = m.get("digits", m.get("num_digits"))
        assert digits == o["num_digits"], name
        if m["name"] == "unet" and not o["super_token"]:
            from mdfast.digits import prime_base

            assert m["digit_vocab"] == prime_base(o["num_classes"], digits) + 1, name
    assert experiments.get("prime-cifar10-l2")["sample"]["timestep_parameters"] == [1.0, 1.7, 0.0]
    assert experiments.get("prime-cifar10-mixture")["model"]["num_labels"] == 4


README_TRAIN = (
    "--dataset cifar10 --use_ema --output_dir {out} --target_length 2 --epochs 4251 "
    "--carry_over --temperature_parameters -0.2 2.0 1.0 --use_corrector_step "
    "--corrector_parameters 16.0 2.0 0.75 --use_timestep_scheduler "
    "--timestep_parameters 1.0 1.7 0.0"
)


def test_seed_flags_map_onto_the_preset(tmp_path):
    args = seed_cli.parser().parse_args(README_TRAIN.format(out=tmp_path).split())
    name, raw = seed_cli.preset_for(args)
    assert name == "prime-cifar10-l2"
    cfg = experiments.apply_overrides(raw, seed_cli._overrides(args, None))
    assert cfg["sample"]["corrector_parameters"] == [16.0, 2.0, 0.75]
    assert cfg["sample"]["timestep_parameters"] == [1.0, 1.7, 0.0] and cfg["sample"]["carry_over"]
    assert cfg["train"]["ema"] == 0.999 and cfg["train"]["batch_size"] == 64
    assert cfg["train"]["betas"] == [0.9, 0.95] and cfg["train"]["out_dir"] == str(tmp_path)
    # the corrector / warp flags count only with their switches, as in the seed
    args = seed_cli.parser().parse_args(
        ["--corrector_parameters", "1", "2", "3", "--dataset", "imagenet", "--super_token"]
    )
    name, raw = seed_cli.preset_for(args)
    cfg = experiments.apply_overrides(raw, seed_cli._overrides(args, "eval_fid"))
    assert name == "prime-imagenet32-supertoken" and cfg["sample"]["corrector_parameters"] == []
    assert cfg["objective"]["schedule_n"] == 2.0 and cfg["objective"]["num_classes"] == 4096


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ("--target_length 2 --base 10", "--base 10 cannot be used"),
        ("--dataset mnist", "--dataset"),
        ("--super_token --target_length 2", "--target_length must be 1"),
        ("--target_length 2 --vocab_size 300", "--vocab_size"),
        ("--from_huggingface --resume x.pth", "never downloads"),
        ("--mode compute_nll_bpd --resume missing.pth", "missing.pth"),
    ],
)
def test_seed_cli_bad_input_is_named(flags, match, capsys, tmp_path):
    with pytest.raises(SystemExit):
        seed_cli.main([*flags.split(), "--output_dir", str(tmp_path)])
    assert match in capsys.readouterr().err


def test_digits8_data_is_16_levels_with_a_held_out_split():
    train, held = load_digits8("train"), load_digits8("eval")
    assert train["input_ids"].shape == (1497, 1, 8, 8) and held["input_ids"].shape[0] == 300
    assert int(train["input_ids"].max()) == 15 and train["input_ids"].dtype == torch.uint8


def test_train_sample_and_nll_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    small = [
        "model.model_channels=16",
        "model.token_dim=16",
        "model.num_head_channels=8",
        f"train.out_dir={out}",
        "train.steps=3",
        "train.batch_size=8",
        "train.ckpt_every=3",
        "train.progress=false",
    ]
    assert cli(["train", "prime-digits8-l2", *small]) == 0
    assert (
        cli(
            [
                "sample",
                "prime-digits8-l2",
                *small,
                "sample.num_samples=6",
                "sample.batch_size=4",
                "sample.steps=4",
                "sample.carry_over=true",
                "sample.corrector_parameters=[8.0, 1.0]",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = sorted((out / "samples_nfe4").glob("batch_*.npy"))
    assert [f.name for f in files] == ["batch_00000.npy", "batch_00001.npy"]
    arrays = [np.load(f) for f in files]
    assert sum(a.shape[0] for a in arrays) == 6 and max(a.max() for a in arrays) < 16
    assert report["grid"] and (out / "samples_nfe4" / "grid.png").is_file()
    assert (
        cli(
            [
                "sample",
                "prime-digits8-l2",
                *small,
                "sample.num_samples=2",
                "sample.batch_size=3",
                "sample.steps=3",
                "sample.subtoken_index=[0]",
                f"sample.out={tmp_path / 'imp'}",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "imp").iterdir()) == [
        "imputation_00000.png",
        "imputation_00001.png",
    ]
    capsys.readouterr()
    assert cli(["eval", "prime-digits8-l2", *small, "eval.K=2", "eval.sequences=10"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["estimator"] == "nelbo" and ev["bound"] and ev["tokens"] == 10 * 64
    from mdfast.experiments.prime.evaluation import nll_bpd

    _, objective, _ = _load(out)
    r = nll_bpd(objective, load_digits8("eval")["input_ids"][:5], num_times=3, progress=False)
    assert r["images"] == 5 and 0 < r["bits_per_dim"] < 8 and r["stderr"] > 0


def _load(out):
    from mdfast.experiments.build import build_model, build_objective
    from mdfast.train import checkpoint as ckpt_io

    state = ckpt_io.load(ckpt_io.latest_checkpoint(str(out)))
    cfg = state["config"]
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    objective.load_state_dict(state["model"])
    return cfg, objective.eval(), state


def test_toy_density_points_sampler_and_plot(tmp_path):
    from PIL import Image

    from mdfast.diffusion.prime_objective import PrimeObjective
    from mdfast.experiments.prime.toy import ToyMLP, density_from_image, draw_points, plot
    from mdfast.sampling.prime import PrimeSamplerSettings

    arr = np.zeros((16, 16), np.uint8)
    arr[2:6, 9:14] = 255
    Image.fromarray(arr).save(tmp_path / "d.png")
    density = density_from_image(str(tmp_path / "d.png"), size=16)
    assert density.sum() == pytest.approx(1.0)
    pts = draw_points(density, 500, seed=1)
    assert ((pts[:, 0] >= 2) & (pts[:, 0] < 6) & (pts[:, 1] >= 9) & (pts[:, 1] < 14)).all()
    model = ToyMLP(16, 2, hidden=16)
    obj = PrimeObjective(
        model, num_classes=16, num_digits=2, layout="sequence", convention="mdlm", weighting="elbo"
    ).eval()
    loss, _ = obj(pts[:8])
    assert torch.isfinite(loss)
    samples = obj.sample(10, PrimeSamplerSettings(nfe=4, seed=3), length=2)
    assert samples.shape == (10, 2) and int(samples.max()) < 16
    assert plot(density, {2: samples}, tmp_path / "toy.png").is_file()
    with pytest.raises(FileNotFoundError, match="--image"):
        density_from_image(str(tmp_path / "missing.png"))


def test_seed_command_line_end_to_end_on_imagenet32_pickles(tmp_path, monkeypatch, capsys):
    """Train (no --mode), then compute_nll_bpd, sample_data, imputation and eval_fid's missing
    Inception file, with the seed's flags on ImageNet-32 pickles the test writes; a small UNet
    stands in for the 114M-parameter one."""
    import pickle

    rng = np.random.default_rng(0)
    for i in range(1, 11):
        (tmp_path / "train").mkdir(exist_ok=True)
        with open(tmp_path / "train" / f"train_data_batch_{i}", "wb") as f:
            pickle.dump(
                {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [1, 2]}, f
            )
    (tmp_path / "val").mkdir()
    with open(tmp_path / "val" / "val_data", "wb") as f:
        pickle.dump(
            {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [3, 4, 5, 6]}, f
        )
    real = seed_cli.preset_for

    def small(args):
        name, raw = real(args)
        raw["model"] = {
            "name": "unet",
            "preset": "tiny",
            "tokens_per_pixel": 3,
            "digits": 2,
            "digit_vocab": 17,
            "num_classes": 256,
            "image_size": 32,
            "model_channels": 16,
            "token_dim": 16,
            "channel_mult": [1, 2],
            "attention_resolutions": [8],
            "num_head_channels": 16,
        }
        return name, raw

    monkeypatch.setattr(seed_cli, "preset_for", small)
    out = tmp_path / "out"
    common = [
        "--dataset",
        "imagenet",
        "--target_length",
        "2",
        "--data_path",
        str(tmp_path),
        "--output_dir",
        str(out),
        "--device",
        "cpu",
        "--use_ema",
    ]
    assert seed_cli.main([*common, "--epochs", "1", "--batch_size", "5"]) == 0  # 20 / 5 steps
    assert (out / "ckpt-00000004.pt").is_file()
    assert (
        seed_cli.main(
            [*common, "--mode", "compute_nll_bpd", "--nll_times", "2", "--batch_size", "3"]
        )
        == 0
    )
    nll = json.loads((out / "compute_nll_bpd.json").read_text())
    assert nll["images"] == 4 and nll["num_times"] == 2 and 0 < nll["bits_per_dim"] < 16
    assert (
        seed_cli.main(
            [
                *common,
                "--mode",
                "sample_data",
                "--split_size",
                "3",
                "--nfe",
                "3",
                "--batch_size",
                "2",
                "--carry_over",
                "--use_corrector_step",
                "--corrector_parameters",
                "4",
                "1",
                "0.75",
            ]
        )
        == 0
    )
    target = (
        out
        / "fid_samples"
        / "temp=1.0_temp_n=0.0_temp_b=0.0_cor=4.0_cor_n=1.0_cor_b=0.75_step=3_co"
    )
    assert sorted(p.name for p in target.iterdir()) == [
        "batch_00000.npy",
        "batch_00001.npy",
        "grid.png",
    ]
    assert np.load(target / "batch_00001.npy").shape == (1, 32, 32, 3)
    assert (
        seed_cli.main(
            [
                *common,
                "--mode",
                "imputation",
                "--fid_samples",
                "2",
                "--batch_size",
                "2",
                "--nfe",
                "3",
                "--subtoken_index",
                "0",
            ]
        )
        == 0
    )
    assert len(list((out / "imputation").glob("imputation_*.png"))) == 2
    monkeypatch.setenv("MDFAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SystemExit):
        seed_cli.main([*common, "--mode", "eval_fid", "--nfe", "2", "--fid_samples", "2"])
    assert "weights-inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
