"""Corpus → prepare-text → train → eval with the ``mdfast`` command: under torchrun with 2 gloo
ranks (the evaluation equals the one-process one: every draw is keyed by sequence), resumed
mid-epoch on the memory-mapped file, with ``train.compile=true``, header/preset mismatches as
clear errors, and the MDLM/ReMDM Hydra-key entry point."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from text_fixtures import tiny_text_run

from mdfast.cli import main
from mdfast.experiments import mdlm_compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
for _k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(_k, None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A jsonl corpus, a tiny GPT-2-format BPE and the overrides of a tiny MDLM on them."""
    root = tmp_path_factory.mktemp("text")
    v, data, model = tiny_text_run(root, 120, seed=4)
    model += [f"objective.mask_index={v}", "train.log_every=1", "train.tensorboard=false"]
    assert main(["prepare-text", "mdlm-shakespeare", *data]) == 0
    return root, data, model


def _run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _losses(out_dir):
    with open(os.path.join(out_dir, "log.csv"), newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_torchrun_prepare_train_eval(corpus, tmp_path, capsys):
    """`mdfast train` then `mdfast eval` under torchrun (2 gloo ranks) on the prepared files; the
    2-rank evaluation equals the one-process one."""
    root, data, model = corpus
    out = tmp_path / "run"
    args = ["mdlm-shakespeare", *data, *model, f"train.out_dir={out}", "train.steps=3"]
    ev = ["eval.K=2", "eval.batch_size=3", f"eval.out={tmp_path / 'two.json'}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "mdfast.cli"]  # fmt: skip
    for cmd in (["train", *args], ["eval", *args, *ev]):
        r = subprocess.run([*torchrun, *cmd], env=ENV, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "ckpt-00000003.pt").exists()
    two = json.loads((tmp_path / "two.json").read_text())
    rc, stdout, err = _run(["eval", *args, "eval.K=2", "eval.batch_size=5"], capsys)
    assert rc == 0, err
    one = json.loads(stdout.strip().splitlines()[-1])
    n_val = json.loads((root / "prep" / "validation.json").read_text())["rows"]
    assert one["sequences"] == two["sequences"] == n_val and one["tokens"] == n_val * 16
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)
    assert (
        one["bound"] and one["K"] == 2 and one["ppl"] == pytest.approx(2.718281828 ** one["loss"])
    )
    rc, stdout, err = _run(["sample", *args, "sample.steps=4", "sample.batch_size=2",
                            "--device", "cpu"], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["shape"] == [2, 16] and res["device"] == "cpu"
    assert len(res["text"]) == 2 and all(isinstance(t, str) and t for t in res["text"])


def test_resume_mid_epoch_on_token_file(corpus, tmp_path, capsys):
    """Rows: ~30 train rows, batch 8, so step 2 ends mid-epoch; 2 + 3 resumed = 5 straight."""
    _, data, model = corpus
    base = ["train", "mdlm-shakespeare", *data, *model, "train.ckpt_every=2"]
    assert _run([*base, "train.steps=5", f"train.out_dir={tmp_path / 'a'}"], capsys)[0] == 0
    assert _run([*base, "train.steps=2", f"train.out_dir={tmp_path / 'b'}"], capsys)[0] == 0
    rc, _, err = _run([*base, "train.steps=5", f"train.out_dir={tmp_path / 'b'}", "--resume"],
                      capsys)  # fmt: skip
    assert rc == 0, err
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [a[s] for s in range(1, 6)] == [b[s] for s in range(1, 6)]


def test_compile_runs_and_matches_eager(corpus, tmp_path, capsys, monkeypatch):
    """``train.compile=true`` traces the whole objective (DiT trunk + fused projection/CE op)
    with Dynamo and AOTAutograd; the aot_eager backend keeps the test fast on CPU (inductor's
    C++ codegen takes about a minute here and is exercised on the GPU machine)."""
    _, data, model = corpus
    calls = []
    real = torch.compile

    def compile_aot_eager(m, **kw):
        calls.append(type(m).__name__)
        return real(m, **{**kw, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    base = ["train", "mdlm-shakespeare", *data, *model, "train.steps=2", "train.ckpt_every=100"]
    assert _run([*base, f"train.out_dir={tmp_path / 'e'}"], capsys)[0] == 0
    rc, _, err = _run([*base, f"train.out_dir={tmp_path / 'c'}", "train.compile=true"], capsys)
    assert rc == 0, err
    assert calls == ["MDLM"]
    e, c = _losses(tmp_path / "e"), _losses(tmp_path / "c")
    for s in (1, 2):
        assert c[s] == pytest.approx(e[s], rel=1e-4)


def test_header_mismatch_and_missing_data_are_clear_errors(corpus, tmp_path, capsys):
    _, data, model = corpus
    base = ["train", "mdlm-shakespeare", *data, *model, "train.steps=1",
            f"train.out_dir={tmp_path}"]  # fmt: skip
    rc, _, err = _run([*base, "model.vocab_size=500"], capsys)
    assert (
        rc == 1 and "train.json' field 'model_vocab_size'" in err and "model.vocab_size=500" in err
    )
    rc, _, err = _run([*base, "objective.mask_index=3"], capsys)
    assert rc == 1 and "field 'mask_id'" in err
    rc, _, err = _run([*base, "data.length=32"], capsys)
    assert rc == 1 and "field 'length' = 16" in err and "data.length=32" in err
    rc, _, err = _run([*base, f"data.path={tmp_path / 'nothing'}"], capsys)
    assert rc == 1 and "does not exist" in err and "prepare-text" in err
    rc, _, err = _run(["prepare-text", "mdlm-shakespeare", *data[1:],
                       f"data.source={tmp_path / 'missing.jsonl'}"], capsys)  # fmt: skip
    assert rc == 1 and "missing.jsonl' does not exist" in err
    rc, _, err = _run(["prepare-text", "mdlm-shakespeare", "train.steps=1"], capsys)
    assert rc == 2 and "data.key=value overrides only" in err


def test_mdlm_readme_commands_translate():
    cmd, ignored = mdlm_compat.translate([
        "mode=ppl_eval", "loader.batch_size=16", "loader.eval_batch_size=16",
        "data=openwebtext-split", "model=small", "parameterization=sedd", "backbone=dit",
        "model.length=1024", f"eval.checkpoint_path={ROOT}", "time_conditioning=True",
        "sampling.predictor=analytic", "+wandb.offline=true"])  # fmt: skip
    assert cmd[:2] == ["eval", "sedd-owt-small"]
    assert f"model.init_from={ROOT}" in cmd and "eval.batch_size=16" in cmd
    assert "model.time_conditioning=True" in cmd and ignored == ["wandb.offline"]
    cmd, _ = mdlm_compat.translate([
        "mode=sample_eval", "data=openwebtext-split", "model=small", "parameterization=subs",
        "sampling.steps=1024", "sampling.num_sample_batches=5000", "sampling.nucleus_p=0.9",
        "sampling.sampler=remdm-loop", "sampling.eta=0.02", "sampling.semi_ar=True",
        "sampling.stride_length=512", "sampling.num_strides=2", "T=0", "seed=1"])  # fmt: skip
    assert cmd[:2] == ["sample", "mdlm-owt-small"]
    for want in ("sample.sampler=remdm-loop", "sample.eta=0.02", "sample.top_p=0.9",
                 "sample.num_batches=5000", "sample.semi_ar=True", "sample.stride_length=512",
                 "sample.num_strides=2", "objective.T=0", "sample.seed=1"):  # fmt: skip
        assert want in cmd, (want, cmd)
    cmd, _ = mdlm_compat.translate(["mode=ppl_eval", "data=ptb", "parameterization=ar"])
    assert cmd[:2] == ["eval", "ar-owt-small"] and "eval.datasets=[ptb]" in cmd
    cmd, _ = mdlm_compat.translate(["data=lm1b", "model=small", "loader.global_batch_size=512"])
    assert cmd[:2] == ["train", "mdlm-lm1b"] and "train.batch_size=512" in cmd
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sampling.foo'\]"):
        mdlm_compat.translate(["mode=train", "sampling.foo=1"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        mdlm_compat.translate(["mode=ppl_eval", "eval.checkpoint_path=kuleshov-group/mdlm-owt"])
    assert mdlm_compat.main(["mode=train", "parameterization=d3pm"]) == 2


def test_compat_entry_point_runs_mdfast(corpus, tmp_path, capsys):
    """The Hydra-key command trains through mdfast (mdfast.* options pass through)."""
    _, data, model = corpus
    extra = [f"mdfast.{o}" for o in [*data, *model]]
    rc = mdlm_compat.main(["mode=train", "parameterization=subs", "data=openwebtext-split",
                           "model=tiny", "trainer.max_steps=1", "model.length=16",
                           f"mdfast.train.out_dir={tmp_path}", *extra])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "ckpt-00000001.pt").exists()
