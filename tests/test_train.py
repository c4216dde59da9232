"""Trainer: exact resume after a real SIGKILL, torchrun (gloo, 2 ranks) vs one process, gradient
accumulation, corrupt checkpoints, non-finite loss, atomic saves, LR schedule, EMA."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from mdfast.cli import main as cli_main
from mdfast.train import EMA, CheckpointError, NonFiniteLossError, TrainConfig, train
from mdfast.train import checkpoint as ckpt_io
from mdfast.train.trainer import lr_lambda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
for _k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(_k, None)

# tiny, fast: 2-layer 64-wide DiT on 32-token synthetic Markov text
SMALL = [
    "data.n=64",
    "data.length=16",
    "train.batch_size=8",
    "train.progress=false",
    "train.log_every=1",
    "train.tensorboard=false",
]


def _losses(out_dir) -> dict[int, str]:
    with open(os.path.join(out_dir, "log.csv"), newline="") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f)}


def _cli(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "mdfast.cli", *args],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    # interpolant objective: random t and masks every step, so the RNG state must be restored
    steps = 100
    common = [
        "train",
        "tiny-interpolant",
        *SMALL,
        f"train.steps={steps}",
        "train.ckpt_every=1",
        "train.keep_ckpts=2",
    ]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _cli([*common, f"train.out_dir={ref_dir}"])
    assert ref.returncode == 0, ref.stderr
    want = _losses(ref_dir)
    assert sorted(want) == list(range(1, steps + 1))

    proc = subprocess.Popen(
        [sys.executable, "-m", "mdfast.cli", *common, f"train.out_dir={run_dir}"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if ckpt_io.list_checkpoints(str(run_dir)) and proc.poll() is None:
                if ckpt_io.list_checkpoints(str(run_dir))[-1][0] >= 3:
                    break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # a real kill, possibly mid-checkpoint-write
    finally:
        proc.wait()
    resumed_from = ckpt_io.list_checkpoints(str(run_dir))[-1][0]
    print("killed; resuming from step", resumed_from)
    assert resumed_from < steps, "the run finished before it could be killed"

    res = _cli([*common, f"train.out_dir={run_dir}", "--resume"])
    assert res.returncode == 0, res.stderr
    got = _losses(run_dir)
    assert sorted(got) == list(range(1, steps + 1))
    # every loss after the resume point is bit-identical to the uninterrupted run's
    for s in range(resumed_from + 1, steps + 1):
        assert got[s] == want[s], (s, got[s], want[s])
    a = ckpt_io.load(str(ref_dir / f"ckpt-{steps:08d}.pt"))["model"]
    b = ckpt_io.load(str(run_dir / f"ckpt-{steps:08d}.pt"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _torchrun(args):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "mdfast.cli", *args],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_torchrun_two_ranks_equals_one_process(tmp_path):
    """Same global batch (8) on 1 process and on 2 gloo ranks (DDP with 2 micro-batches of 2 per
    rank, and FSDP2 with 4 per rank), for MDLM with dropout on: every sample draws the same t,
    mask and dropout masks from its keyed stream (seed, purpose, step, position in the global
    batch), so the runs differ only in float summation order (the token mean over a rank's
    half-batch, then the all-reduce; the gradient all-reduce). After 3 AdamW steps at lr 1e-3
    the parameters agree to atol 2e-6 (0.2% of a step) and the losses to 1e-6 relative. The
    FSDP2 run is then resumed to step 5 and compared again."""
    args = ["train", "tiny-mdlm", *SMALL, "model.dropout=0.1", "train.lr=1e-3", "train.warmup=0",
            "train.ema=0.9", "train.ckpt_every=3"]  # fmt: skip
    one = _cli([*args, "train.steps=5", f"train.out_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr
    ddp = _torchrun(
        [*args, "train.steps=3", "train.grad_accum=2", f"train.out_dir={tmp_path / 'ddp'}"]
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    fsdp = [*args, "train.fsdp=true", f"train.out_dir={tmp_path / 'fsdp'}"]
    r = _torchrun([*fsdp, "train.steps=3"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _torchrun([*fsdp, "train.steps=5", "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]

    def ck(name, step):
        return ckpt_io.load(str(tmp_path / name / f"ckpt-{step:08d}.pt"))

    for name, step in (("ddp", 3), ("fsdp", 3), ("fsdp", 5)):
        a, b = ck("one", step), ck(name, step)
        assert b["world_size"] == 2 and len(b["rng"]) == 2
        for k in a["model"]:
            torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=2e-6)
        for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True):
            torch.testing.assert_close(y, x, rtol=0, atol=2e-6)
    la, lb, lf = _losses(tmp_path / "one"), _losses(tmp_path / "ddp"), _losses(tmp_path / "fsdp")
    for s in (1, 2, 3):
        assert math.isclose(float(la[s]), float(lb[s]), rel_tol=1e-6)
    for s in (1, 2, 3, 4, 5):
        assert math.isclose(float(la[s]), float(lf[s]), rel_tol=1e-6)
    assert len({la[s] for s in la}) == len(la)  # the noise (and the loss) changes every step


def _tiny_mdlm(*overrides):
    """The tiny-mdlm preset's objective (dropout on) and training data, seeded init."""
    from mdfast.experiments import apply_overrides, get
    from mdfast.experiments.build import build_data, build_model, build_objective

    cfg = apply_overrides(get("tiny-mdlm"), ["model.dropout=0.1", *overrides])
    torch.manual_seed(0)
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    return objective, build_data(cfg["data"])[0]


def test_grad_accumulation_matches_full_batch_mdlm(tmp_path):
    """MDLM (keyed t, masks, dropout): grad_accum=2 on one process equals grad_accum=1 up to
    float summation order, like the 2-rank run."""
    runs = []
    for accum in (1, 2):
        obj, data = _tiny_mdlm()
        cfg = _cfg(tmp_path / f"a{accum}", steps=4, lr=1e-3, grad_accum=accum, ckpt_every=100)
        runs.append((train(obj, data, cfg)["losses"], obj.state_dict()))
    (la, pa), (lb, pb) = runs
    for x, y in zip(la, lb, strict=True):
        assert math.isclose(x, y, rel_tol=1e-6), (la, lb)
    for k in pa:
        torch.testing.assert_close(pb[k], pa[k], rtol=0, atol=2e-6)


def test_same_seed_same_run_bitwise_at_two_threads(tmp_path):
    """Two runs of tiny-mdlm with the same seed on 2 threads: bit-identical losses and weights.
    (The DiT's token embedding used to be ``E[x]``, whose CPU backward accumulates repeated
    tokens with parallel atomic adds in thread order.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for i in range(2):
            obj, data = _tiny_mdlm()
            cfg = _cfg(tmp_path / f"r{i}", steps=12, batch_size=16, lr=1e-3, ckpt_every=100)
            runs.append((train(obj, data, cfg)["losses"], obj.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (la, pa), (lb, pb) = runs
    assert la == lb
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_deterministic_flag_enables_deterministic_kernels_and_restores(tmp_path):
    seen = []

    class Probe(_Toy):
        def forward(self, batch):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().forward(batch)

    before = torch.are_deterministic_algorithms_enabled()
    train(Probe(), _toy_data(), _cfg(tmp_path, steps=2, deterministic=True))
    assert seen == [True, True]
    assert torch.are_deterministic_algorithms_enabled() == before
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")


class _Toy(nn.Module):
    """Linear regression objective (deterministic) with an optional NaN at a given call."""

    def __init__(self, nan_at: int = -1):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, batch):
        self.calls += 1
        x = batch[:, :4].float()
        y = batch[:, 4:].float()
        loss = ((self.lin(x) - y) ** 2).mean()
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach()}


def _toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return torch.cat([x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1], dim=1)


def _cfg(tmp_path, **kw):
    base = dict(
        out_dir=str(tmp_path),
        steps=6,
        batch_size=8,
        lr=1e-2,
        ckpt_every=2,
        log_every=1,
        progress=False,
        tensorboard=False,
    )
    return TrainConfig(**{**base, **kw})


def test_grad_accumulation_matches_full_batch(tmp_path):
    torch.manual_seed(0)
    a = _Toy()
    b = _Toy()
    b.load_state_dict(a.state_dict())
    train(a, _toy_data(), _cfg(tmp_path / "a"))
    train(b, _toy_data(), _cfg(tmp_path / "b", grad_accum=4))
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=k)


def test_nonfinite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    obj = _Toy(nan_at=5)
    with pytest.raises(NonFiniteLossError, match="at step 5"):
        train(obj, _toy_data(), _cfg(tmp_path))
    assert [s for s, _ in ckpt_io.list_checkpoints(str(tmp_path))] == [2, 4]
    state = ckpt_io.load(str(tmp_path / "ckpt-00000004.pt"))
    assert state["step"] == 4


def test_corrupt_checkpoint_clear_error_previous_kept(tmp_path):
    train(_Toy(), _toy_data(), _cfg(tmp_path, steps=4))
    good, bad = tmp_path / "ckpt-00000002.pt", tmp_path / "ckpt-00000004.pt"
    good_bytes = good.read_bytes()
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncate
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*ckpt-00000002\.pt"):
        train(_Toy(), _toy_data(), _cfg(tmp_path, steps=8, resume="auto"))
    assert good.read_bytes() == good_bytes
    # resuming from the previous good one works and continues
    out = train(_Toy(), _toy_data(), _cfg(tmp_path, steps=6, resume=str(good)))
    assert out["step"] == 6 and len(out["losses"]) == 4


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    train(_Toy(), _toy_data(), _cfg(tmp_path, steps=2))
    before = (tmp_path / "ckpt-00000002.pt").read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.save({"x": 1}, str(tmp_path), 4)
    assert [s for s, _ in ckpt_io.list_checkpoints(str(tmp_path))] == [2]
    assert (tmp_path / "ckpt-00000002.pt").read_bytes() == before


def test_cli_resume_of_corrupt_checkpoint_exits_nonzero(tmp_path, capsys):
    args = [
        "train",
        "tiny-ar",
        *SMALL,
        "train.steps=2",
        "train.ckpt_every=1",
        f"train.out_dir={tmp_path}",
    ]
    assert cli_main(args) == 0
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"garbage")
    assert cli_main([*args, "train.steps=4", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "ckpt-00000001.pt" in err


def test_lr_schedule_warmup_constant_cosine():
    f = lr_lambda(TrainConfig(warmup=4, steps=14, lr_schedule="constant"))
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    g = lr_lambda(TrainConfig(warmup=4, steps=14, lr_schedule="cosine", min_lr_ratio=0.1))
    assert g(3) == 1.0 and math.isclose(g(4), 1.0)
    assert math.isclose(g(9), 0.1 + 0.9 * 0.5)  # halfway through the cosine span
    assert math.isclose(g(14), 0.1)
    with pytest.raises(ValueError, match="constant"):
        lr_lambda(TrainConfig(lr_schedule="linear"))(0)


def test_ema_update_formula(fresh_seed):
    torch.manual_seed(fresh_seed)
    m = nn.Linear(3, 2)
    ema = EMA(m, decay=0.9, warmup=True)
    start = [p.detach().clone() for p in m.parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    ema.update()
    d = min(0.9, 2 / 11)
    for s, p0, p in zip(ema.shadow_params, start, m.parameters(), strict=True):
        torch.testing.assert_close(s, d * p0 + (1 - d) * p.detach())
    sd = ema.state_dict()
    assert sd["num_updates"] == 1 and len(sd["shadow_params"]) == 2


def test_bf16_autocast_and_tensorboard_logging(tmp_path, monkeypatch):
    """bf16 autocast trains (finite, decreasing loss); scalars go to TensorBoard when
    ``torch.utils.tensorboard`` imports (a recording stand-in here: tensorboard is optional)."""
    import types

    logged = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            logged.append((key, step))

        def close(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    torch.manual_seed(0)
    toy, data = _Toy(), _toy_data()
    before = float(toy(data)[0].detach())
    cfg = _cfg(tmp_path, steps=20, lr=0.1, precision="bf16", tensorboard=True)
    out = train(toy, data, cfg)
    assert all(math.isfinite(v) for v in out["losses"])
    assert float(toy(data)[0].detach()) < 0.5 * before
    assert ("loss", 1) in logged and ("lr", 20) in logged and ("mse", 20) in logged


def test_torn_log_row_is_dropped_on_resume(tmp_path):
    train(_Toy(), _toy_data(), _cfg(tmp_path, steps=4))
    with open(tmp_path / "log.csv", "a") as f:
        f.write("1")  # a kill mid-write of the next row leaves a prefix
    train(_Toy(), _toy_data(), _cfg(tmp_path, steps=6, resume="auto"))
    assert list(_losses(tmp_path)) == [1, 2, 3, 4, 5, 6]
