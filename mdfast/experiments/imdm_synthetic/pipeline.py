"""The synthetic task end to end, one command::

    OMP_NUM_THREADS=1 python -m mdfast.experiments.imdm_synthetic [--out runs/imdm-synthetic]
        [--scale full|tiny] [--steps 1,2]

Stages, each an ``mdfast`` command run in this process (a stage whose checkpoint exists is
skipped, so an interrupted run continues):

1. ``mdlm``: MDLM trained on the task (NELBO);
2. ``imdm``: IMDM started from the MDLM (zero ε branch, so it starts as the MDLM) and trained on
   the same NELBO;
3. ``sdtt`` / ``imsdtt``: SDTT from the MDLM and IM-SDTT from the IMDM, from 64 teacher steps,
   rounds until the student takes one step;
4. ``coupling``: perturbed couplings (x_t, t, ε seed) → x̂₀ of the IM-SDTT teacher;
5. ``imredi``: IM-ReDi from the IM-SDTT checkpoint on the couplings, and its ablations
   ``imredi_ignore_seed`` (a fresh ε instead of the pair's) and ``imredi_as_mdlm`` (the ε branch
   outputs zero: ReDi of an MDLM on the same couplings);
6. evaluation: ``mdfast sample`` with IMDM's sampler (MDLM models run the same chain) at each
   step count; the all-equal fraction and first-token entropy of ``eval_samples`` samples, and
   the total correlation (bits) of ``duplicate`` samples per ε seed.

Writes ``results.json`` (metrics, per-stage wall and CPU seconds, the settings) and
``table.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from mdfast.distill import RoundSchedule
from mdfast.experiments.imdm_synthetic.metrics import (
    all_equal_fraction,
    first_token_entropy,
    ideal_mdlm_all_equal,
)
from mdfast.experiments.imdm_synthetic.presets import LENGTH, VOCAB
from mdfast.metrics.total_correlation import total_correlation

__all__ = ["MODELS", "SCALES", "Scale", "main", "run"]


@dataclass(frozen=True)
class Scale:
    mdlm_steps: int
    imdm_steps: int
    start_steps: int  # SDTT's first teacher step count
    round_steps: int
    redi_steps: int
    pairs: int
    teacher_steps: int
    gen_batch_size: int
    batch_size: int
    data_n: int
    eval_samples: int
    duplicate: int


SCALES = {
    # ~10 min of two shared CPU cores (OMP_NUM_THREADS=1)
    "full": Scale(mdlm_steps=600, imdm_steps=300, start_steps=64, round_steps=60, redi_steps=500,
                  pairs=2048, teacher_steps=16, gen_batch_size=512, batch_size=128,
                  data_n=10_000, eval_samples=2000, duplicate=20),
    # seconds: the CI check that every stage runs
    "tiny": Scale(mdlm_steps=3, imdm_steps=2, start_steps=4, round_steps=1, redi_steps=2,
                  pairs=32, teacher_steps=2, gen_batch_size=16, batch_size=8, data_n=64,
                  eval_samples=40, duplicate=4),
}  # fmt: skip

# table rows: (label, stage directory, preset, extra sample overrides)
MODELS = (
    ("MDLM", "mdlm", "imdm-synthetic-mdlm"),
    ("IMDM", "imdm", "imdm-synthetic-imdm"),
    ("SDTT", "sdtt", "imdm-synthetic-sdtt"),
    ("IM-SDTT", "imsdtt", "imdm-synthetic-imsdtt"),
    ("IM-ReDi", "imredi", "imdm-synthetic-imredi"),
    ("IM-ReDi, ignore_seed", "imredi_ignore_seed", "imdm-synthetic-imredi"),
    ("IM-ReDi, as_mdlm", "imredi_as_mdlm", "imdm-synthetic-imredi"),
)


def _cli(args: list[str], log) -> str:
    """Run ``mdfast ARGS`` in this process; its stdout (and stderr) go to ``log``; returns the
    stdout."""
    from mdfast.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(args)
    log.write(f"$ mdfast {' '.join(args)}\n{out.getvalue()}{err.getvalue()}\n")
    log.flush()
    if rc != 0:
        raise RuntimeError(f"mdfast {' '.join(args)} failed:\n{err.getvalue()[-3000:]}")
    return out.getvalue()


def _ckpt(directory: str) -> str | None:
    from mdfast.train.checkpoint import latest_checkpoint

    return latest_checkpoint(directory)


def _stages(out: str, s: Scale) -> list[tuple[str, list[str], str]]:
    """(name, mdfast arguments, the path whose existence means done)."""
    common = [f"data.n={s.data_n}", f"train.batch_size={s.batch_size}", "train.progress=false"]
    d = {name: os.path.join(out, name) for name in
         ("mdlm", "imdm", "sdtt", "imsdtt", "coupling", "imredi", "imredi_ignore_seed",
          "imredi_as_mdlm")}  # fmt: skip

    def last(name, steps):
        return os.path.join(d[name], f"ckpt-{steps:08d}.pt")

    sd_steps = RoundSchedule(s.start_steps, 2, s.round_steps).total_steps  # students: start/2..1
    sdtt = [f"objective.start_steps={s.start_steps}", f"objective.round_steps={s.round_steps}",
            f"train.steps={sd_steps}"]  # fmt: skip
    redi = ["train.progress=false", f"train.batch_size={s.batch_size}",
            f"train.steps={s.redi_steps}", f"data.path={d['coupling']}",
            f"model.init_from={last('imsdtt', sd_steps)}"]  # fmt: skip
    return [
        ("mdlm", ["train", "imdm-synthetic-mdlm", *common, f"train.steps={s.mdlm_steps}",
                  f"train.out_dir={d['mdlm']}"], last("mdlm", s.mdlm_steps)),
        ("imdm", ["train", "imdm-synthetic-imdm", *common, f"train.steps={s.imdm_steps}",
                  f"model.init_from={last('mdlm', s.mdlm_steps)}", f"train.out_dir={d['imdm']}"],
         last("imdm", s.imdm_steps)),
        ("sdtt", ["distill", "sdtt", "imdm-synthetic-sdtt", *common, *sdtt,
                  f"model.init_from={last('mdlm', s.mdlm_steps)}", f"train.out_dir={d['sdtt']}"],
         last("sdtt", sd_steps)),
        ("imsdtt", ["distill", "sdtt", "imdm-synthetic-imsdtt", *common, *sdtt,
                    f"model.init_from={last('imdm', s.imdm_steps)}",
                    f"train.out_dir={d['imsdtt']}"], last("imsdtt", sd_steps)),
        ("coupling", ["distill", "redi-data", "imdm-synthetic-imredi",
                      f"model.init_from={last('imsdtt', sd_steps)}", f"data.path={d['coupling']}",
                      f"data.pairs={s.pairs}", f"data.teacher_steps={s.teacher_steps}",
                      f"data.gen_batch_size={s.gen_batch_size}", "data.overwrite=true"],
         os.path.join(d["coupling"], "coupling.json")),
        ("imredi", ["distill", "redi", "imdm-synthetic-imredi", *redi,
                    f"train.out_dir={d['imredi']}"], last("imredi", s.redi_steps)),
        ("imredi_ignore_seed", ["distill", "redi", "imdm-synthetic-imredi", *redi,
                                "objective.ignore_seed=true",
                                f"train.out_dir={d['imredi_ignore_seed']}"],
         last("imredi_ignore_seed", s.redi_steps)),
        ("imredi_as_mdlm", ["distill", "redi", "imdm-synthetic-imredi", *redi,
                            "objective.as_mdlm=true", f"train.out_dir={d['imredi_as_mdlm']}"],
         last("imredi_as_mdlm", s.redi_steps)),
    ]  # fmt: skip


def _sample(out: str, stage: str, preset: str, steps: int, n: int, dup: int, seed: int, log):
    path = os.path.join(out, "samples", f"{stage}_steps{steps}_dup{dup}.pt")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _cli(["sample", preset, f"train.out_dir={os.path.join(out, stage)}", "sample.sampler=imdm",
              f"sample.steps={steps}", f"sample.batch_size={n}", f"sample.duplicate={dup}",
              f"sample.seed={seed}", f"sample.out={path}", "--device", "cpu"], log)  # fmt: skip
    return torch.load(path)


def _evaluate(out: str, s: Scale, steps_list, log) -> dict:
    results = {}
    for label, stage, preset in MODELS:
        row = {}
        for k in steps_list:
            x = _sample(out, stage, preset, k, s.eval_samples, 1, 1000 + k, log)
            dup = _sample(out, stage, preset, k, s.eval_samples, s.duplicate, 2000 + k, log)
            groups = torch.arange(s.eval_samples // s.duplicate).repeat(s.duplicate)
            row[k] = {
                "all_equal": all_equal_fraction(x),
                "first_token_entropy": first_token_entropy(x),
                "tc_bits": total_correlation(dup, groups)["tc"],
            }
        results[label] = row
    return results


def run(out: str = "runs/imdm-synthetic", scale: str = "full", steps_list=(1, 2),
        log=None) -> dict:  # fmt: skip
    """Run (or continue) the pipeline into ``out``; returns the results dict."""
    if scale not in SCALES:
        raise ValueError(f"mdfast: --scale must be one of {sorted(SCALES)}, got {scale!r}")
    s = SCALES[scale]
    os.makedirs(out, exist_ok=True)
    own_log = log is None
    log = open(os.path.join(out, "pipeline.log"), "a") if own_log else log
    timing = {}
    try:
        for name, args, done in _stages(out, s):
            if os.path.exists(done):
                timing[name] = {"skipped": True}
                continue
            w, c = time.perf_counter(), time.process_time()
            _cli(args, log)
            timing[name] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}
            print(f"imdm-synthetic: {name} done in {timing[name]['wall_s']:.0f} s",
                  file=sys.stderr)  # fmt: skip
        w, c = time.perf_counter(), time.process_time()
        metrics = _evaluate(out, s, steps_list, log)
        timing["evaluation"] = {"wall_s": time.perf_counter() - w,
                                "cpu_s": time.process_time() - c}  # fmt: skip
    finally:
        if own_log:
            log.close()
    ideal = {k: ideal_mdlm_all_equal(k, LENGTH, VOCAB) for k in steps_list}
    results = {"scale": scale, "settings": asdict(s), "steps": list(steps_list),
               "vocab": VOCAB, "length": LENGTH, "log_vocab": math.log(VOCAB),
               "ideal_mdlm_all_equal": ideal, "metrics": metrics, "timing": timing}  # fmt: skip
    from mdfast.experiments.imdm_synthetic.table import markdown_table

    table = markdown_table(results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdfast.experiments.imdm_synthetic",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--out", default="runs/imdm-synthetic")
    p.add_argument("--scale", default="full", choices=sorted(SCALES))
    p.add_argument("--steps", default="1,2", help="sampling step counts, comma-separated")
    a = p.parse_args(argv)
    steps = tuple(int(k) for k in a.steps.split(",") if k)
    from mdfast.experiments.imdm_synthetic.table import markdown_table

    w, c = time.perf_counter(), time.process_time()
    results = run(a.out, a.scale, steps)
    print(markdown_table(results))
    print(f"\nwall {time.perf_counter() - w:.0f} s, CPU {time.process_time() - c:.0f} s "
          f"(this process; stages in results.json)")  # fmt: skip
    return 0
