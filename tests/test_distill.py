"""Few-step distillation: SDTT's rounds and teacher targets, one round lowering KL(student‖
teacher) at the doubled step, the divergences, ReDi's seeded ε, coupling files (round trip,
header checks, the same ε from the stored seeds, the same file on 1 or 2 ranks) and the
``mdfast distill`` command's bad-input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from mdfast import rng
from mdfast.cli import main as cli_main
from mdfast.diffusion import MDLM, IMDMBackbone, imdm_posterior, seeded_eps
from mdfast.diffusion.imdm import EPS_STREAM_NAME
from mdfast.distill import (
    SDTT,
    CouplingFile,
    CouplingWriter,
    ReDi,
    RoundSchedule,
    divergence,
    generate_coupling,
    subs_log_probs,
    teacher_targets,
    transfer_weights,
)
from mdfast.experiments.data import synthetic_text
from mdfast.experiments.generation import read_samples
from mdfast.metrics.total_correlation import total_correlation
from mdfast.models.dit import DiT, DiTConfig
from mdfast.schedules import get_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
for _k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(_k, None)
V, MASK = 8, 8


def _dit(seed: int = 0, std: float = 0.2, length: int = 6) -> DiT:
    torch.manual_seed(seed)
    dit = DiT(DiTConfig(vocab_size=V + 1, hidden_dim=32, cond_dim=16, n_blocks=1, n_heads=2,
                        dropout=0.0, model_length=length))  # fmt: skip
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=std)
    return dit


def test_round_schedule():
    r = RoundSchedule(start_steps=64, num_distill_steps=2, round_steps=100)
    assert r.rounds == 6 and r.total_steps == 600  # students of 32, 16, 8, 4, 2, 1 steps
    assert [r.student_steps(k) for k in range(6)] == [32, 16, 8, 4, 2, 1]
    assert r.dt(1) == pytest.approx(2 * r.dt(0)) and r.dt(0) == pytest.approx(0.999 / 64)
    assert r.round_of(0) == 0 and r.round_of(99) == 0 and r.round_of(100) == 1
    with pytest.raises(ValueError, match=r"train\.steps <= 600"):
        r.round_of(600)
    lm1b = RoundSchedule(1024, 2, 10_000)  # IMDM's LM1B recipe: 70k steps end at 8 steps
    assert lm1b.rounds == 10 and lm1b.student_steps(6) == 8
    assert RoundSchedule(64, 2, 100, min_steps=4).rounds == 4
    with pytest.raises(ValueError, match=r"'objective\.start_steps'=1 leaves zero steps"):
        RoundSchedule(start_steps=1)
    with pytest.raises(ValueError, match=r"'objective\.round_steps'"):
        RoundSchedule(64, 2, 0)
    with pytest.raises(ValueError, match=r"'objective\.num_distill_steps'"):
        RoundSchedule(64, 1, 10)


def test_divergences(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    s = torch.randn(50, 7, generator=g, dtype=torch.float64).log_softmax(-1)
    t = torch.randn(50, 7, generator=g, dtype=torch.float64).log_softmax(-1)
    ref = torch.nn.functional.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(divergence("kl-bwd", s, t), ref)  # KL(s ‖ t)
    torch.testing.assert_close(divergence("kl-fwd", s, t), divergence("kl-bwd", t, s))
    torch.testing.assert_close(divergence("tvd", s, t), 0.5 * (s.exp() - t.exp()).abs().sum(-1))
    torch.testing.assert_close(divergence("mse", s, t), ((s - t) ** 2).sum(-1))
    for name in ("kl-bwd", "kl-fwd", "tvd", "mse"):
        assert (divergence(name, s, t) > 0).all() and divergence(name, s, s).abs().max() < 1e-12
    with pytest.raises(ValueError, match=r"'objective\.loss'"):
        divergence("js", s, t)
    logits = torch.randn(4, V + 1, generator=g)
    lp = subs_log_probs(logits, MASK)
    torch.testing.assert_close(lp, logits[:, :MASK].log_softmax(-1))


class _CallTeacher(torch.nn.Module):
    """Logits that say which call made them: call k puts mass on token k only."""

    def __init__(self):
        super().__init__()
        self.k = 0

    def trunk(self, x, *args, **kw):
        h = torch.full((*x.shape, 1), float(self.k))
        self.k += 1
        return h

    def head(self, h):
        return torch.nn.functional.one_hot(h[:, 0].long(), V + 1).float() * 50.0


def test_teacher_targets_come_from_the_step_each_position_unmasks(fresh_seed):
    """Over 60k masked positions, the share of targets taken from teacher call 0, call 1 and the
    last call (still masked) matches the unmask probabilities of the two steps (chi-square)."""
    B, L, n = 6000, 10, 2
    torch.manual_seed(fresh_seed)
    sched = get_schedule("loglinear")
    t = torch.full((B,), 0.7)
    dt = 0.2
    xt = torch.full((B, L), MASK)
    rows, target = teacher_targets(_CallTeacher(), xt, None, t, dt, n, sched, MASK,
                                   generator=torch.Generator().manual_seed(fresh_seed))  # fmt: skip
    assert rows.numel() == B * L and target.shape == (B * L, V)
    src = target.argmax(-1)
    # call 1 is the last call: a position unmasked at step 1 and one still masked both take it
    a = [float(sched.alpha(torch.tensor(0.7 - k * dt, dtype=torch.float64))) for k in range(3)]
    p0 = float(imdm_posterior(a[0], a[1])[0])
    counts = [int((src == 0).sum()), int((src == 1).sum())]
    assert sum(counts) == B * L
    p = stats.chisquare(counts, [p0 * B * L, (1 - p0) * B * L]).pvalue
    assert p > 1e-7, (counts, p0)


class _OneHotState(torch.nn.Module):
    """A teacher whose prediction at a masked position is the one-hot of the previous position's
    token (uniform if that one is masked): its 2-step targets differ from a 1-step guess."""

    def trunk(self, x, *args, **kw):
        prev = torch.roll(x, 1, dims=1)
        return torch.nn.functional.one_hot(prev, V + 1).float()

    def head(self, h):
        return h * 20.0


def test_targets_see_the_tokens_unmasked_at_earlier_steps(fresh_seed):
    torch.manual_seed(fresh_seed)
    B, L = 400, 6
    xt = torch.full((B, L), MASK)
    t = torch.ones(B)
    _, target = teacher_targets(_OneHotState(), xt, None, t, 0.5, 2, get_schedule("linear"),
                                   MASK)  # fmt: skip
    # step 2 ends at t = 0: every position gets a target; those of step 2 whose left neighbour
    # unmasked at step 1 are peaked, those of step 1 are uniform
    peaked = target.exp().max(-1).values > 0.9
    uniform = (target.exp() - 1 / V).abs().max(-1).values < 1e-6
    assert (peaked | uniform).all() and peaked.any() and uniform.any()


def test_teacher_draws_are_keyed_per_sample(fresh_seed):
    """Under a NoiseKey the teacher's events, tokens and ε redraws of sample g depend on
    (seed, step, g) only: a sub-batch of the key's samples gets the same targets as in the full
    batch (what makes 1 and N processes train alike); with another step they change."""
    B, L, seed = 8, 6, fresh_seed % 2**40
    teacher = _OneHotState()
    teacher.draw_eps = lambda shape, device, generator=None, stream=(): rng.draw(
        rng.Purpose.EPSILON, (*shape, 2), *stream, device=device
    )
    xt = torch.full((B, L), MASK)
    eps = torch.zeros(B, L, 2)
    t = torch.ones(B)
    args = (0.3, 3, get_schedule("linear"), MASK)
    key = rng.NoiseKey(seed, 5, torch.arange(B), B)
    with rng.noise_key(key):
        rows, full = teacher_targets(teacher, xt, eps, t, *args, fix_eps=False)
    sub = [1, 4, 6]
    with rng.noise_key(key.select(sub)):
        rows_s, part = teacher_targets(teacher, xt[sub], eps[sub], t[sub], *args, fix_eps=False)
    pick = torch.cat([torch.arange(b * L, (b + 1) * L) for b in sub])
    assert torch.equal(rows[pick] % L, rows_s % L)
    torch.testing.assert_close(part, full[pick], rtol=0, atol=0)
    with rng.noise_key(rng.NoiseKey(seed, 6, torch.arange(B), B)):
        _, other = teacher_targets(teacher, xt, eps, t, *args, fix_eps=False)
    assert not torch.equal(other, full)


@pytest.mark.parametrize("base", ["mdlm", "imdm"])
def test_one_round_lowers_kl_at_the_doubled_step(base, fresh_seed):
    """The teacher: a tiny MDLM trained briefly on Markov-chain text (an IMDM backbone with a
    non-zero ε branch around it for IM-SDTT). The student starts as the teacher with a perturbed
    output head, and trains for one round (teacher: 2 steps of dt = 0.999/4; student: one step
    of 2·dt): the mean KL(student ‖ teacher targets) over fixed evaluation draws at least halves
    (measured: 4- to 2000-fold over seeds), and the teacher is unchanged. The next round copies the
    student into the teacher."""
    torch.manual_seed(fresh_seed)
    data = synthetic_text(512, 6, V, seed=fresh_seed % 1000, temperature=0.5)
    model = _dit(fresh_seed % 1000, std=0.02)
    pre = MDLM(model, MASK)
    opt = torch.optim.Adam(pre.parameters(), lr=3e-3)
    for _ in range(100):
        loss, _ = pre(data[torch.randint(0, 512, (64,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if base == "imdm":
        model = IMDMBackbone(model, MASK)
        torch.nn.init.normal_(model.eps_mlp.fc2.weight, std=0.05)
    obj = SDTT(model, MASK, start_steps=4, round_steps=60)
    with torch.no_grad():
        head = obj.model.head_weight
        head.add_(0.3 * torch.randn_like(head))

    def kl() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(1234)
        with torch.no_grad():
            out = sum(float(obj(data[i * 64 : (i + 1) * 64])[0]) for i in range(4)) / 4
        torch.set_rng_state(state)
        return out

    teacher0 = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    before = kl()
    opt = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=3e-3)
    for step in range(60):
        obj.begin_step(step)
        loss, metrics = obj(data[torch.randint(0, 512, (32,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = kl()
    assert after < 0.5 * before, (before, after)
    assert metrics["student_steps"] == 2.0 and int(obj.round) == 0
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, teacher0[k]), k
    obj.begin_step(60)  # round 1: the student becomes the teacher, dt doubles
    assert int(obj.round) == 1 and obj.dt == pytest.approx(2 * 0.999 / 4)
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, obj.model.state_dict()[k]), k
    state = obj.state_dict()  # the round and the teacher are in the checkpoint
    assert int(state["round"]) == 1 and any(k.startswith("teacher.") for k in state)
    with pytest.raises(ValueError, match="past the last round"):
        obj.begin_step(120)


def test_transfer_weights_and_mismatches():
    dit = _dit()
    student = IMDMBackbone(_dit(seed=5), MASK)
    transfer_weights(dit, student)
    x = torch.randint(0, V + 1, (3, 6))
    torch.testing.assert_close(student(x), dit(x), rtol=0, atol=0)  # the MDLM, exactly
    with pytest.raises(ValueError, match=r"objective\.base=imdm"):
        transfer_weights(student, _dit())
    other = DiT(DiTConfig(vocab_size=V + 3, hidden_dim=32, cond_dim=16, n_blocks=1, n_heads=2))
    with pytest.raises(ValueError, match=r"model\.vocab_size"):
        transfer_weights(dit, other)
    wide = DiT(DiTConfig(vocab_size=V + 1, hidden_dim=64, cond_dim=16, n_blocks=1, n_heads=2))
    with pytest.raises(ValueError, match="model"):
        transfer_weights(dit, wide)


def _coupling(tmp_path, rows=10, length=5, vocab=V + 1, eps_stream=EPS_STREAM_NAME):
    g = torch.Generator().manual_seed(0)
    w = CouplingWriter(str(tmp_path / "c"), rows, length, vocab)
    w.create()
    xt = torch.randint(0, vocab, (rows, length), generator=g)
    x0 = torch.randint(0, vocab - 1, (rows, length), generator=g)
    ts = torch.rand(rows, generator=g, dtype=torch.float64)
    seeds = torch.randint(0, 2**31, (rows,), generator=g)
    w.write(0, xt[:6], x0[:6], ts[:6], seeds[:6])
    w.write(6, xt[6:], x0[6:], ts[6:], seeds[6:])
    w.finish({"mask_id": vocab - 1, "tokenizer": "gpt2", "noise_dim": 32, "eps_stream": eps_stream})
    return xt, x0, ts, seeds


def test_coupling_file_round_trip_and_checks(tmp_path):
    xt, x0, ts, seeds = _coupling(tmp_path)
    cf = CouplingFile(str(tmp_path / "c"))
    b = cf.__getitems__(torch.tensor([7, 0, 3]))
    assert torch.equal(b["xt"], xt[[7, 0, 3]]) and torch.equal(b["input_ids"], x0[[7, 0, 3]])
    assert torch.equal(b["t"], ts[[7, 0, 3]]) and torch.equal(b["eps_seed"], seeds[[7, 0, 3]])
    assert cf[2]["xt"].shape == (5,) and len(cf) == 10 and cf.header["dtype"] == "uint16"
    cf.check_compatible(vocab_size=V + 1, mask_index=MASK, length=5, tokenizer="gpt2",
                        noise_dim=32)  # fmt: skip
    for kw, option in ((("vocab_size", 50258), "model.vocab_size"),
                       (("mask_index", 3), "objective.mask_index"),
                       (("length", 128), "data.length"),
                       (("tokenizer", "bert-base-uncased"), "data.tokenizer"),
                       (("noise_dim", 768), "objective.noise_dim")):  # fmt: skip
        with pytest.raises(ValueError, match=option):
            cf.check_compatible(**dict([kw]))
    with pytest.raises(FileExistsError, match="overwrite"):
        CouplingWriter(str(tmp_path / "c"), 10, 5, V + 1).create()
    _coupling(tmp_path / "old", eps_stream="mdfast-imdm-eps/1")  # seeds of another ε keying
    with pytest.raises(ValueError, match=r"data\.path.*keys ε by 'mdfast-imdm-eps/1'"):
        CouplingFile(str(tmp_path / "old" / "c")).check_compatible(noise_dim=32)
    with open(tmp_path / "c" / "x0.bin", "r+b") as f:
        f.truncate(7)
    with pytest.raises(ValueError, match=r"x0\.bin"):
        CouplingFile(str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="redi-data"):
        CouplingFile(str(tmp_path / "nope"))


class _SpyTeacher(IMDMBackbone):
    """Records the ε of its first call after ``pending`` is set (the start of a sampler run)."""

    def __init__(self, dit):
        super().__init__(dit, MASK, noise_dim=4)
        torch.nn.init.normal_(self.eps_mlp.fc2.weight, std=0.3)
        self.first: list[torch.Tensor] = []
        self.pending = False

    def hidden(self, xt, sigma=None, eps=None):
        if self.pending:
            self.first.append(eps.clone())
            self.pending = False
        return super().hidden(xt, sigma, eps)


@torch.no_grad()
def test_coupling_regenerates_the_teachers_eps_from_its_seeds(tmp_path, fresh_seed, monkeypatch):
    """The ε the teacher started each pair from is the ε the ReDi objective regenerates from the
    stored seed; ignore_seed draws another; the pairs keep x_t's unmasked tokens."""
    import mdfast.distill.redi as redi_mod

    teacher = _SpyTeacher(_dit(3)).eval()
    source = torch.randint(0, V, (40, 6))
    out = str(tmp_path / "c")
    real = redi_mod.imdm

    def imdm_spy(model, **kw):
        model.pending = True
        return real(model, **kw)

    monkeypatch.setattr(redi_mod, "imdm", imdm_spy)
    header = generate_coupling(teacher, source, out, pairs=30, mask_index=MASK,
                               model_vocab_size=V + 1, steps=4, batch_size=16,
                               seed=fresh_seed % 2**40)  # fmt: skip
    assert header["rows"] == 30 and header["noise_dim"] == 4 and header["perturbed"]
    cf = CouplingFile(out)
    batch = cf.__getitems__(torch.arange(30))
    recorded = torch.cat(teacher.first)  # two chunks of 16 and 14 pairs
    assert recorded.shape == (30, 6, 4)
    torch.testing.assert_close(recorded, seeded_eps(batch["eps_seed"], 6, 4))
    keep = batch["xt"] != MASK
    assert torch.equal(batch["input_ids"][keep], batch["xt"][keep])
    assert (batch["input_ids"] != MASK).all() and ((batch["t"] > 0) & (batch["t"] < 1)).all()

    # ReDi regenerates exactly that ε (a spy on the student's embedding input)
    seen = {}
    student = IMDMBackbone(_dit(4), MASK, noise_dim=4)
    real_embeds = student.embeds

    def embeds(x, eps):
        seen["eps"] = eps
        return real_embeds(x, eps)

    student.embeds = embeds
    obj = ReDi(student, MASK)
    loss, _ = obj(batch)
    assert torch.isfinite(loss)
    torch.testing.assert_close(seen["eps"], recorded)
    obj.ignore_seed = True
    obj(batch)
    assert not torch.allclose(seen["eps"], recorded)
    with pytest.raises(ValueError, match=r"data\.name=coupling"):
        obj(batch["input_ids"])


def _run(args, torchrun: bool = False):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node=2"] if torchrun else [sys.executable])  # fmt: skip
    return subprocess.run([*launcher, "-m", "mdfast.cli", *args], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_distill_cli_end_to_end_and_sharded_couplings(tmp_path):
    """mdlm → imdm checkpoint → IM-SDTT → couplings on 1 process and on 2 torchrun ranks (the
    same bytes) → IM-ReDi → imdm samples with duplicates (total correlation)."""
    small = ["data.n=64", "data.length=8", "model.model_length=8", "train.batch_size=8",
             "train.progress=false", "train.tensorboard=false"]  # fmt: skip
    mdlm = str(tmp_path / "mdlm")
    assert cli_main(["train", "tiny-mdlm", *small, "train.steps=4", f"train.out_dir={mdlm}"]) == 0
    sd = str(tmp_path / "sd")
    assert (
        cli_main(
            [
                "distill",
                "sdtt",
                "tiny-imsdtt",
                *small,
                "train.steps=999",
                "objective.start_steps=4",
                "objective.round_steps=3",
                f"model.init_from={mdlm}/ckpt-00000004.pt",
                f"train.out_dir={sd}",
            ]
        )
        == 0
    )
    teacher = f"{sd}/ckpt-00000006.pt"  # 2 rounds (students of 2 and 1 steps) of 3 steps
    gen = ["distill", "redi-data", "tiny-imredi", f"model.init_from={teacher}", "data.pairs=40",
           "data.gen_batch_size=16", "data.teacher_steps=4", "data.length=8"]  # fmt: skip
    one = _run([*gen, f"data.path={tmp_path / 'c1'}"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _run([*gen, f"data.path={tmp_path / 'c2'}"], torchrun=True)
    assert two.returncode == 0, two.stderr[-2000:]
    for name in ("xT", "x0", "ts", "seeds"):
        a = np.fromfile(tmp_path / "c1" / f"{name}.bin", dtype=np.uint8)
        b = np.fromfile(tmp_path / "c2" / f"{name}.bin", dtype=np.uint8)
        assert a.size and np.array_equal(a, b), name
    redi = str(tmp_path / "redi")
    run = ["model.model_length=8", "train.batch_size=8", "train.progress=false",
           "train.tensorboard=false"]  # fmt: skip
    assert cli_main(["distill", "redi", "tiny-imredi", *run, "train.steps=2", "data.length=8",
                     f"model.init_from={teacher}", f"data.path={tmp_path / 'c1'}",
                     f"train.out_dir={redi}"]) == 0  # fmt: skip
    out = tmp_path / "samples.jsonl"
    r = _run(["sample", "tiny-imredi", f"train.out_dir={redi}", "sample.steps=2",
              "sample.batch_size=5", "sample.num_samples=12", "sample.duplicate=4",
              f"sample.out={out}"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["sampler"] == "imdm" and res["shape"] == [12, 8]
    rows = sorted(read_samples(str(out)), key=lambda r: r["index"])
    x = torch.tensor([r["ids"] for r in rows])
    assert rows[0]["settings"]["duplicate"] == 4 and int(x.max()) < 32  # tiny presets: mask 32
    tc = total_correlation(x, torch.arange(12) % 3)  # duplicates: index mod 12 / 4
    assert tc["groups"] == 3 and tc["tc"] >= 0


def test_distill_cli_bad_input(tmp_path, capsys):
    small = ["data.n=32", "data.length=8", "model.model_length=8", "train.batch_size=8",
             "train.progress=false", "train.tensorboard=false"]  # fmt: skip
    imdm = str(tmp_path / "imdm")
    assert cli_main(["train", "tiny-imdm", *small, "train.steps=1", f"train.out_dir={imdm}"]) == 0
    ck = f"model.init_from={imdm}/ckpt-00000001.pt"

    def err(args) -> str:
        capsys.readouterr()
        assert cli_main(args) != 0
        return capsys.readouterr().err

    assert "objective.base=imdm" in err(["distill", "sdtt", "tiny-sdtt", *small, ck])
    assert "model.vocab_size" in err(["distill", "sdtt", "tiny-imsdtt", *small, ck,
                                      "model.vocab_size=40"])  # fmt: skip
    assert "objective.mask_index" in err(["distill", "sdtt", "tiny-imsdtt", *small, ck,
                                          "objective.mask_index=5"])  # fmt: skip
    assert "'objective.start_steps'=1 leaves zero steps" in err(
        ["distill", "sdtt", "tiny-imsdtt", *small, ck, "objective.start_steps=1"]
    )
    assert "model.init_from" in err(["distill", "sdtt", "tiny-imsdtt", *small])
    run = ["model.model_length=8", "train.batch_size=8", "train.progress=false"]
    assert "objective.name=sdtt" in err(["distill", "sdtt", "tiny-imredi", *run, ck])
    _coupling(tmp_path)  # vocab 9, length 5, gpt2, noise_dim 32
    c = f"data.path={tmp_path / 'c'}"
    base = ["distill", "redi", "tiny-imredi", *run, ck, c]
    assert "data.length" in err([*base, "data.length=8", "model.vocab_size=9",
                                 "objective.mask_index=8"])  # fmt: skip
    assert "data.tokenizer" in err([*base, "data.length=5", "data.tokenizer=bert-base-uncased",
                                    "model.vocab_size=9", "objective.mask_index=8"])  # fmt: skip
    assert "model.vocab_size" in err([*base, "data.length=5"])
