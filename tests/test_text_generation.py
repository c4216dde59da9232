"""Text generation: the causal DiT's KV-cached incremental forward and AR sampling (cached ==
uncached, per-sample keyed), every sampler of every text objective through ``mdfast sample``,
JSONL output (same seed twice, resume after an interruption), conditioning, ``mdfast
eval-samples`` and the bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch
from text_fixtures import tiny_text_run

from mdfast import sampling
from mdfast.cli import main
from mdfast.models import DiT


def _run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def _causal(vocab=40, length=48):
    torch.manual_seed(0)
    m = DiT("tiny", causal=True, vocab_size=vocab, model_length=length).eval()
    with torch.no_grad():
        for p in m.parameters():  # random, non-zero head and adaLN
            p.normal_(0, 0.08)
    return m


def test_kv_cached_forward_equals_the_full_causal_forward():
    m = _causal()
    x = torch.randint(0, 40, (3, 48))
    with torch.no_grad():
        full = m(x)
        cache = m.new_cache(48)
        inc = torch.cat([m(x[:, :5], cache=cache), m(x[:, 5:6], cache=cache),
                         m(x[:, 6:20], cache=cache), m(x[:, 20:21], cache=cache)], 1)  # fmt: skip
    assert cache.length == 21
    torch.testing.assert_close(inc, full[:, :21], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="KV cache holds 48"):
        with torch.no_grad():
            m(x, cache=cache)
    with pytest.raises(ValueError, match="causal"):
        DiT("tiny").new_cache(8)


def test_ar_sampling_cached_equals_uncached_and_is_keyed_per_sample():
    m = _causal()
    kw = {"length": 48, "bos_index": 0, "seed": 3, "top_p": 0.9, "temperature": 0.9}
    with torch.no_grad():
        a = sampling.ar_sample(m, batch_size=3, **kw)
        b = sampling.ar_sample(m, batch_size=3, kv_cache=False, **kw)
        c = sampling.ar_sample(m, batch_size=2, sample_index=[1, 2], **kw)
    assert torch.equal(a.x, b.x) and a.nfe == 47 and b.nfe == 47
    assert torch.equal(a.x[1:], c.x)  # sample g's draws do not depend on its batch
    assert len({tuple(r) for r in a.x.tolist()}) == 3


_MDLM = ["ddpm", "ddpm_cache", "first_hitting", "remdm-cap", "remdm-rescale", "remdm-conf",
         "remdm-loop", "remdm-fb", "remdm-dfm"]  # fmt: skip
_CASES = [("tiny-mdlm", s, []) for s in _MDLM] + [
    ("tiny-mdlm", "ddpm_cache", ["sample.semi_ar=true", "sample.stride_length=4",
                                 "sample.num_strides=2"]),
    ("tiny-sedd", "analytic", []), ("tiny-sedd", "ddpm", []), ("tiny-sedd", "remdm-cap", []),
    ("tiny-ar", "ar", []), ("tiny-ar", "ar", ["sample.kv_cache=false", "sample.top_k=5"]),
    ("tiny-imdm", "imdm", []),
]  # fmt: skip


@pytest.mark.parametrize(("preset", "sampler", "extra"), _CASES)
def test_every_sampler_runs_from_the_cli(tmp_path, capsys, preset, sampler, extra):
    out = tmp_path / "s.jsonl"
    args = ["sample", preset, "model.random_init=true", "data.length=16", "sample.steps=6",
            f"sample.sampler={sampler}", "sample.num_samples=3", "sample.batch_size=2",
            f"sample.out={out}", "sample.progress=false", *extra]  # fmt: skip
    rc, stdout, err = _run(args, capsys)
    assert rc == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    recs = _lines(out)
    assert [r["index"] for r in recs] == [0, 1, 2] and summary["written"] == 3
    width = 16 + (8 if "sample.semi_ar=true" in extra else 0)
    mask = {"tiny-ar": None}.get(preset, 32)
    for r in recs:
        assert r["sampler"] == sampler and r["settings"]["steps"] == 6 and r["nfe"] >= 1
        assert len(r["ids"]) == width and mask not in r["ids"]
        assert r["wall_s"] >= 0 and r["batch_size"] in (1, 2)


def test_same_seed_same_jsonl_and_resume(tmp_path, capsys):
    def run(out, n=6, bs=2, preset="tiny-mdlm", sampler="remdm-conf"):
        args = ["sample", preset, "model.random_init=true", "data.length=16", "sample.steps=8",
                f"sample.sampler={sampler}", f"sample.num_samples={n}", f"sample.batch_size={bs}",
                f"sample.out={out}", "sample.progress=false", "sample.seed=7"]  # fmt: skip
        rc, stdout, err = _run(args, capsys)
        assert rc == 0, err
        return json.loads(stdout.strip().splitlines()[-1])

    def strip(recs):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in recs]

    run(tmp_path / "a.jsonl")
    run(tmp_path / "b.jsonl")
    a = _lines(tmp_path / "a.jsonl")
    assert strip(a) == strip(_lines(tmp_path / "b.jsonl"))
    assert len({tuple(r["ids"]) for r in a}) == 6
    # interrupted after two batches, the third line torn mid-write: resumes with the rest
    text = (tmp_path / "a.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "c.jsonl").write_text("".join(text[:4]) + text[4][:25])
    summary = run(tmp_path / "c.jsonl")
    assert summary["resumed"] == 4 and summary["written"] == 2
    assert strip(_lines(tmp_path / "c.jsonl")) == strip(a)
    # each sample on its own stream: the batch size does not change the samples
    for preset, sampler in (("tiny-ar", "ar"), ("tiny-mdlm", "first_hitting"),
                            ("tiny-mdlm", "remdm-loop"), ("tiny-sedd", "analytic"),
                            ("tiny-imdm", "imdm")):  # fmt: skip
        run(tmp_path / "d.jsonl", n=5, bs=2, preset=preset, sampler=sampler)
        run(tmp_path / "e.jsonl", n=5, bs=3, preset=preset, sampler=sampler)
        ids = [[r["ids"] for r in _lines(tmp_path / f)] for f in ("d.jsonl", "e.jsonl")]
        assert ids[0] == ids[1], (preset, sampler)
        (tmp_path / "d.jsonl").unlink()
        (tmp_path / "e.jsonl").unlink()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny MDLM and a tiny AR trained two steps on a prepared corpus with a tiny BPE."""
    root = tmp_path_factory.mktemp("gen")
    v, data, model = tiny_text_run(root, 80, seed=2)
    model.append("train.steps=2")
    assert main(["prepare-text", "mdlm-shakespeare", *data]) == 0
    runs = {}
    for name, obj in (
        ("mdlm", f"objective.mask_index={v}"),
        ("ar", f"objective.exclude_index={v}"),
    ):
        runs[name] = [f"{name}-shakespeare", *data, *model, obj, f"train.out_dir={root / name}"]
        assert main(["train", *runs[name]]) == 0
    return root, runs


def test_conditioning_and_eval_samples(text_run, tmp_path, capsys):
    root, runs = text_run
    common = ["sample.steps=8", "sample.progress=false", "sample.num_samples=4",
              "sample.batch_size=4"]  # fmt: skip
    prompt = tmp_path / "prompt.jsonl"
    rc, _, err = _run(["sample", *runs["mdlm"], *common, "sample.prompt=the other",
                       f"sample.out={prompt}"], capsys)  # fmt: skip
    assert rc == 0, err
    recs = _lines(prompt)
    P = len(recs[0]["prefix_ids"])
    assert P >= 2 and all(r["ids"][:P] == recs[0]["prefix_ids"] for r in recs)
    assert all(r["text"].startswith("the other") for r in recs)
    for sampler in ("ddpm_cache", "remdm-loop"):  # remasking never touches the infix
        infix = tmp_path / f"infix-{sampler}.jsonl"
        rc, _, err = _run(["sample", *runs["mdlm"], *common, "sample.infix=the hat",
                           "sample.infix_at=5", f"sample.sampler={sampler}", "sample.eta=0.5",
                           f"sample.out={infix}"], capsys)  # fmt: skip
        assert rc == 0, err
        recs = _lines(infix)
        fixed = recs[0]["fixed"]
        assert fixed[0] == 5 and len(fixed) >= 2 and recs[0]["prefix_ids"] == []
        ids = [r["ids"] for r in recs]
        assert all(row[5 : 5 + len(fixed)] == ids[0][5 : 5 + len(fixed)] for row in ids)
        assert len({tuple(row) for row in ids}) == 4
    cond = tmp_path / "cond.jsonl"
    rc, _, err = _run(["sample", *runs["ar"], *common, f"sample.cond_data={root / 'prep'}",
                       "sample.prefix_len=6", "sample.cond_repeats=2", f"sample.out={cond}"],
                      capsys)  # fmt: skip
    assert rc == 0, err
    recs = _lines(cond)
    assert recs[0]["cond_row"] == recs[1]["cond_row"] != recs[2]["cond_row"]
    assert all(len(r["reference_ids"]) == 10 and r["ids"][:6] == r["prefix_ids"] for r in recs)
    rc, stdout, err = _run(["eval-samples", str(cond), "--judge", str(root / "ar"),
                            "--no-mauve"], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["conditional"] and res["gen_ppl"] > 1 and 0 < res["entropy"] <= 2.31
    rc, stdout, err = _run(["eval-samples", str(prompt), "--judge", str(root / "ar"),
                            "--references", str(root / "prep")], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["samples"] == 4 and 0 <= res["mauve"] <= 1 and res["tokens"] > 0


def test_bad_input_names_the_option(text_run, tmp_path, capsys):
    root, runs = text_run
    rc, _, err = _run(["sample", "tiny-ar", "model.random_init=true",
                       "sample.sampler=remdm-cap"], capsys)  # fmt: skip
    assert rc == 2 and "sample.sampler" in err and "'ar'" in err
    rc, _, err = _run(["sample", "tiny-mdlm", "model.random_init=true", "sample.preset=nope"],
                      capsys)  # fmt: skip
    assert rc == 2 and "sample.preset" in err
    rc, _, err = _run(["sample", *runs["ar"], "sample.infix=hat", "sample.infix_at=3"], capsys)
    assert rc == 2 and "prefix only" in err
    out = tmp_path / "s.jsonl"
    base = ["sample", "tiny-mdlm", "model.random_init=true", "data.length=16",
            "sample.num_samples=2", "sample.progress=false", f"sample.out={out}"]  # fmt: skip
    assert _run([*base, "sample.steps=4"], capsys)[0] == 0
    rc, _, err = _run([*base, "sample.steps=5"], capsys)
    assert rc == 1 and "sample.out" in err and "steps" in err
    rc, _, err = _run(["eval-samples", str(out), "--judge", str(root / "ar")], capsys)
    assert rc == 1 and "no texts" in err
    other = tmp_path / "other.jsonl"
    rc, _, err = _run(["sample", *runs["ar"], "sample.num_samples=2", "sample.progress=false",
                       f"sample.out={other}"], capsys)  # fmt: skip
    assert rc == 0, err
    rc, _, err = _run(["eval-samples", str(other), "--judge", str(root / "mdlm")], capsys)
    assert rc == 2 and "--judge" in err and "'mdlm'" in err
    rc, _, err = _run(["eval-samples", str(other), "--judge", str(tmp_path)], capsys)
    assert rc == 1 and "--judge" in err
    recs = _lines(other)
    for r in recs:
        r["tokenizer"] = "bert-base-uncased"
    other.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rc, _, err = _run(["eval-samples", str(other), "--judge", str(root / "ar"),
                       "--references", str(root / "prep")], capsys)  # fmt: skip
    assert rc == 2 and "--references" in err


class _MarkovLM:
    """A causal model whose next-token logits depend on the last token only:
    logits[b, j] = W[x[b, j]] + c[j], so the law of AR samples is a Markov chain."""

    def __init__(self, W, c):
        self.W, self.c = W, c

    def __call__(self, x):
        return self.W[x] + self.c[: x.shape[1]]


def test_ar_sampling_draws_the_exact_law(fresh_seed):
    """Two sampled tokens after BOS, temperature 0.8 and top-k 3 of V = 5 with class 4
    excluded: the 25-cell joint against p(x1 | BOS) p(x2 | x1) (chi-square, 6000 samples)."""
    from scipy import stats

    V, tau, k, n = 5, 0.8, 3, 6000
    g = torch.Generator().manual_seed(fresh_seed)
    W = torch.randn(V, V, generator=g, dtype=torch.float64)
    c = torch.randn(3, V, generator=g, dtype=torch.float64)

    def step(prev: int, j: int) -> torch.Tensor:
        z = (W[prev] + c[j]) / tau
        z[V - 1] = float("-inf")
        z[z < z.topk(k).values[-1]] = float("-inf")
        return torch.softmax(z, 0)

    law = torch.stack([step(0, 0)[a] * step(a, 1) for a in range(V)]).reshape(-1)
    res = sampling.ar_sample(_MarkovLM(W.float(), c.float()), batch_size=n, length=3,
                             bos_index=0, seed=fresh_seed % 2**40, temperature=tau, top_k=k,
                             exclude_index=V - 1, kv_cache=False)  # fmt: skip
    counts = torch.bincount(res.x[:, 1] * V + res.x[:, 2], minlength=V * V).double()
    keep = law > 0
    assert counts[~keep].sum() == 0
    p = stats.chisquare(counts[keep].numpy(), (law[keep] * n).numpy()).pvalue
    assert p > 1e-6, p
