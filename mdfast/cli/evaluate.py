"""``mdfast eval`` (likelihood of a checkpoint on its validation split or named corpora) and
``mdfast eval-samples`` (gen PPL, entropy, MAUVE of a samples file)."""

from __future__ import annotations

import json
import math
import os
import sys

from mdfast.cli.runs import check_data, device_of, load_run


def eval_sets(cfg: dict):
    """[(name, dataset)] to evaluate: ``eval.datasets`` (prepared directories, corpus names
    under ``eval.data_root``, ``zero-shot``) or the run's own validation split."""
    from mdfast.experiments.build import build_data

    ev = cfg["eval"]
    names = ev["datasets"]
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    if not names:
        if cfg["data"]["name"] == "text":
            from mdfast.data.text import TokenFile

            return [(ev["split"], TokenFile(cfg["data"]["path"], ev["split"]))]
        _, val = build_data(cfg["data"])
        if val is None:
            raise FileNotFoundError("mdfast eval: the run's data has no validation split")
        return [("validation", val)]
    from mdfast.data.text import TokenFile
    from mdfast.experiments.text_data import ZERO_SHOT

    out = []
    for n in names:
        for m in ZERO_SHOT if n == "zero-shot" else [n]:
            d = m if os.path.isdir(m) else os.path.join(ev["data_root"], m)
            out.append((m if not os.path.isdir(m) else os.path.basename(os.path.normpath(m)),
                        TokenFile(d, ev["split"])))  # fmt: skip
    return out


def objective_loss(objective, dataset, ev, dev) -> dict:
    """Mean objective loss over the split, for objectives without a likelihood estimator."""
    import torch

    from mdfast import rng
    from mdfast.train.data import StepBatches

    n = StepBatches(dataset, 1, shuffle=False).n
    n = min(ev["sequences"], n) if ev["sequences"] else n
    bs = min(ev["batch_size"], n)
    batches = StepBatches(dataset, bs, shuffle=False)
    torch.manual_seed(ev["seed"])
    total, steps = 0.0, max(1, n // bs)
    with torch.no_grad():
        for i in range(steps):  # batch i's noise: (eval.seed, step i, sample index), as in training
            b = batches.get(i, 0)
            b = {k: v.to(dev) for k, v in b.items()} if isinstance(b, dict) else b.to(dev)
            with rng.noise_key(rng.NoiseKey.for_batch(ev["seed"], i, bs)):
                total += float(objective(b)[0])
    return {"estimator": "objective_loss", "loss": total / steps, "sequences": steps * bs}


def eval_command(args) -> int:
    from mdfast.metrics.likelihood import evaluate_likelihood, supports

    rank, _, dev = device_of(args)
    cfg, objective, path = load_run(args, "eval", dev)
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    ev = cfg["eval"]
    from mdfast.train.runtime import autocast_dtype

    amp = autocast_dtype(ev["precision"], dev, "eval.precision")
    T = ev["T"] if ev["T"] >= 0 else int(cfg["objective"].get("T", 0) or 0)
    results = {}
    for name, ds in eval_sets(cfg):
        check_data(cfg, ds)
        if supports(objective):
            res = evaluate_likelihood(
                objective, ds, K=ev["K"], T=T, seed=ev["seed"], batch_size=ev["batch_size"],
                sequences=ev["sequences"], device=dev, autocast_dtype=amp,
                progress=sys.stderr.isatty(), desc=f"eval {name}",
            )  # fmt: skip
        else:
            res = objective_loss(objective, ds, ev, dev)
        res["ppl"] = res.get("ppl", math.exp(min(res["loss"], 700)))
        results[name] = res
    first = next(iter(results.values()))
    out = {"checkpoint": path, "init_from": cfg["model"].get("init_from") or None,
           "objective": cfg["objective"]["name"], "device": str(dev),
           "precision": "bf16" if amp is not None else "fp32",
           **first, "datasets": results}  # fmt: skip
    if rank == 0:
        print(json.dumps(out))
        if ev["out"]:
            with open(ev["out"], "w") as f:
                json.dump(out, f, indent=2)
    return 0


def eval_samples_command(args) -> int:
    from mdfast.experiments.sample_eval import main as eval_samples

    return eval_samples(args)


# --- distillation ---------------------------------------------------------------------------
