"""The CPU-scale test of ReMDM's claim: does remasking beat MDLM's samplers at equal steps T?

    python -m mdfast.experiments.text_sample_repro        # or: make text-sample-repro

On the Shakespeare models of :mod:`mdfast.experiments.text_repro` (its checkpoints under
``--runs`` are reused, else that module trains MDLM and AR there): MDLM ``ddpm_cache`` and
``first_hitting`` and ReMDM ``cap`` and ``loop`` (the paper's settings, nucleus p = 0.9 for
every sampler as in the paper's tables) at T in {16, 64, 256}, plus the AR model's ancestral
samples (p = 0.9) and a data row (held-out text). Each row: ``--samples`` sequences of 128
tokens from ``mdfast sample`` (JSONL under ``<out>/samples/``, resumable), then with the AR model
as judge and featurizer: gen PPL (MDLM's recipe), entropy (ReMDM's), MAUVE against as many
validation rows (evenly spaced; the data row uses the rows between them).

Writes ``<out>/table.md``, ``<out>/results.json`` and the plot ``docs/text/sample_repro.png``
(metric vs T per sampler); prints the table. Set ``OMP_NUM_THREADS`` (1 on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main"]

_SAMPLERS = (
    ("mdlm-ddpm_cache", "MDLM ddpm_cache", ["sample.preset=mdlm-nucleus"]),
    ("mdlm-first_hitting", "MDLM first_hitting",
     ["sample.preset=mdlm-nucleus", "sample.sampler=first_hitting"]),
    ("remdm-cap", "ReMDM cap (η=0.008)", ["sample.preset=remdm-cap"]),
    ("remdm-loop", "ReMDM loop", ["sample.preset=remdm-loop"]),
)  # fmt: skip
_STEPS = (16, 64, 256)


def _cli(argv: list[str]) -> None:
    from mdfast.cli import main as cli_main

    rc = cli_main(argv)
    if rc != 0:
        raise SystemExit(f"mdfast {' '.join(argv)} failed with status {rc}")


def _checkpoint(run: str) -> str | None:
    from mdfast.train import checkpoint as ckpt_io

    return ckpt_io.latest_checkpoint(run) if os.path.isdir(run) else None


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("gen_ppl", "gen PPL (AR judge) ↓"), ("entropy", "entropy (nats)"),
               ("mauve", "MAUVE ↑"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for name, title, _ in _SAMPLERS:
            pts = sorted((r["T"], r[key]) for r in rows if r["key"] == name)
            ls = "--" if name.startswith("mdlm") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", label=title)
        for key2, color in (("ar", "k"), ("data", "tab:gray")):
            ref = [r[key] for r in rows if r["key"] == key2]
            if ref:
                ax.axhline(ref[0], color=color, ls=":", label=key2.upper() if key2 == "ar" else
                           "data (held out)")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(_STEPS), [str(t) for t in _STEPS])
        ax.set_xlabel("sampling steps T")
        ax.set_title(label)
        if key == "gen_ppl":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdfast.experiments.text_sample_repro",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--runs", default="runs/text-repro", help="text_repro's output directory")
    p.add_argument("--data", default="data/text/shakespeare")
    p.add_argument("--out", default="runs/text-sample-repro")
    p.add_argument("--plot", default="docs/text/sample_repro.png")
    p.add_argument("--samples", type=int, default=32, help="sequences per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default=",".join(map(str, _STEPS)), help="the T values")
    a = p.parse_args(argv)
    import torch

    from mdfast.experiments import sample_eval, text_repro
    from mdfast.experiments.generation import read_samples
    from mdfast.metrics import text as mt

    t_start, cpu_start = time.perf_counter(), time.process_time()
    times = {}
    steps = [int(s) for s in a.steps.split(",") if s]
    os.makedirs(os.path.join(a.out, "samples"), exist_ok=True)
    t = time.perf_counter()
    runs = {}
    for name in ("mdlm", "ar"):
        run = os.path.join(a.runs, name)
        if _checkpoint(run) is None:
            text_repro.prepare(a.data)
            text_repro.train(name, a.runs, a.data)
        runs[name] = run
    times["models"] = time.perf_counter() - t
    jobs = [(key, title, T, opts, "mdlm") for key, title, opts in _SAMPLERS for T in steps]
    jobs.append(("ar", "AR (p=0.9)", None, ["sample.preset=ar-nucleus"], "ar"))
    files = {}
    for key, _, T, opts, model in jobs:
        t = time.perf_counter()
        out = os.path.join(a.out, "samples", f"{key}-T{T}.jsonl" if T else f"{key}.jsonl")
        _cli(["sample", f"{model}-shakespeare", f"train.out_dir={runs[model]}",
              f"data.path={a.data}", *opts, *([f"sample.steps={T}"] if T else []),
              f"sample.num_samples={a.samples}", f"sample.batch_size={a.samples}",
              f"sample.seed={a.seed}", f"sample.out={out}", "sample.progress=false"])  # fmt: skip
        files[(key, T)] = out
        times[f"sample {key} T={T}"] = time.perf_counter() - t
    # judge = the AR model; references = evenly spaced validation rows, the data row the rows
    # halfway between them (held out from the references)
    t = time.perf_counter()
    dev = torch.device("cpu")
    judge = sample_eval.load_judge(runs["ar"], dev)
    refs_all = sample_eval.reference_texts(a.data, "validation", 2 * a.samples, "gpt2")
    refs, held = refs_all[0::2], refs_all[1::2]
    ref_feats = mt.features(judge, refs)
    times["references"] = time.perf_counter() - t
    rows = []
    for key, title, T, _, _ in jobs:
        t = time.perf_counter()
        recs = read_samples(files[(key, T)])
        res = sample_eval.evaluate_samples(recs, judge, reference_features=ref_feats)
        nfe = sum(r["nfe"] for r in {r["index"] // a.samples: r for r in recs}.values())
        rows.append({"key": key, "sampler": title, "T": T, "nfe": nfe, **res})
        times[f"eval {key} T={T}"] = time.perf_counter() - t
    data_ids = judge.tokenizer.encode_batch(held)
    rows.append({"key": "data", "sampler": "data (held-out rows)", "T": None, "nfe": 0,
                 "gen_ppl": mt.gen_ppl(judge, held, max_length=128)["gen_ppl"],
                 "entropy": mt.entropy(data_ids),
                 "mauve": mt.mauve(ref_feats, mt.features(judge, held))["mauve"]})  # fmt: skip
    times["total"] = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    lines = ["| sampler | T | NFE | gen PPL ↓ | entropy | MAUVE ↑ |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['T'] or '—'} | {r['nfe']} | {r['gen_ppl']:.1f} | "
                     f"{r['entropy']:.3f} | {r['mauve']:.3f} |")  # fmt: skip
    verdict = []
    for T in steps:
        by = {r["key"]: r for r in rows if r["T"] == T}
        best_m = min(by["mdlm-ddpm_cache"]["gen_ppl"], by["mdlm-first_hitting"]["gen_ppl"])
        best_r = min(by["remdm-cap"]["gen_ppl"], by["remdm-loop"]["gen_ppl"])
        mm = max(by["mdlm-ddpm_cache"]["mauve"], by["mdlm-first_hitting"]["mauve"])
        mr = max(by["remdm-cap"]["mauve"], by["remdm-loop"]["mauve"])
        verdict.append(f"T={T}: best ReMDM gen PPL {best_r:.1f} vs best MDLM {best_m:.1f}, "
                       f"MAUVE {mr:.3f} vs {mm:.3f}")  # fmt: skip
    lines += ["", f"{a.samples} samples of 128 tokens per row, seed {a.seed}; judge and featurizer:"
              f" the AR model; MAUVE against {a.samples} validation rows. "
              + "; ".join(verdict) + ".",
              f"Wall {times['total']:.0f} s, CPU {cpu:.0f} s (this process), "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs."]  # fmt: skip
    table = "\n".join(lines)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "times_s": times, "cpu_s": cpu, "args": vars(a)}, f, indent=2,
                  default=str)  # fmt: skip
    _plot(rows, a.plot)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
