"""The binarized-MNIST result table: clean baseline vs naive-on-corrupted vs ambient at masked
fractions 0.5 and 0.9. Columns: bits/pixel of held-out clean digits (the whole NELBO, and its
part from t < t_d, the levels only the consistency loss trains), digit Fréchet score,
classifier confidence.

    python -m mdfast.experiments.mnist.table --n_epochs 10 --output_folder runs/table
    python -m mdfast.experiments.mnist.table --only ambient-k1@0.9,ambient-l10@0.9 ...

(``python -m mdfast.experiments.mnist_table`` is the same.)

A run is named ``experiment[-option…]@masked_fraction`` (``baseline`` alone); the options of an
ambient run: ``l<λ>`` (consistency weight, default 1), ``easy`` (λ = 0), ``k<K>`` (inner reverse
steps), ``kl`` (per-sample KL divergence), ``reversed`` (the previous reversed-role loss), e.g.
``ambient-l0.1-k8@0.9``. Each run writes ``<run>/metrics.json`` and a 64-sample grid
``<run>.png``; ``results.csv`` and ``results.md`` are rebuilt from every ``metrics.json`` in the
output folder, so several processes may fill one folder with disjoint ``--only`` lists.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from mdfast.experiments.mnist.consistency import DIVERGENCES
from mdfast.experiments.mnist.evaluation import evaluate
from mdfast.experiments.mnist.grid import save_grid
from mdfast.experiments.mnist.model import MODEL_PRESETS
from mdfast.experiments.mnist.sampling import sample
from mdfast.experiments.mnist.training import train_experiment

__all__ = ["RUNS", "main", "parse_run"]

RUNS = (
    "baseline",
    "naive@0.5",
    "ambient@0.5",
    "ambient-l0.1@0.5",
    "ambient-easy@0.5",
    "naive@0.9",
    "ambient@0.9",
    "ambient-l0.1@0.9",
    "ambient-easy@0.9",
)
# The t < t_d parts reported for every run (the baseline's are the reference for both).
LEVELS = (0.5, 0.9)


def parse_run(name: str) -> tuple[str, float, dict]:
    """``(experiment, masked_fraction, options)`` of a run name (module docstring); options are
    ``consistency_weight`` and the :class:`~mdfast.experiments.mnist.objectives.AmbientMDLM`
    arguments ``inner_steps``, ``divergence``, ``role``."""
    if name == "baseline":
        return "baseline", 0.0, {}
    head, sep, frac = name.partition("@")
    experiment, *flags = head.split("-")
    try:
        masked_fraction = float(frac)
    except ValueError:
        masked_fraction = -1.0
    if not sep or experiment not in ("naive", "ambient") or not 0 < masked_fraction < 1:
        raise ValueError(
            f"mdfast: run name {name!r} is not 'baseline', 'naive@F' or 'ambient[-opt…]@F' "
            "with F in (0, 1)"
        )
    if experiment == "naive" and flags:
        raise ValueError(f"mdfast: run name {name!r}: naive runs take no options")
    options: dict = {"consistency_weight": 1.0} if experiment == "ambient" else {}
    for flag in flags:
        if flag == "easy":
            options["consistency_weight"] = 0.0
        elif flag in DIVERGENCES:
            options["divergence"] = flag
        elif flag == "reversed":
            options["role"] = flag
        elif flag[:1] in ("l", "k") and _is_number(flag[1:]):
            if flag[0] == "l":
                options["consistency_weight"] = float(flag[1:])
            else:
                options["inner_steps"] = int(flag[1:])
        else:
            raise ValueError(
                f"mdfast: run name {name!r}: unknown option {flag!r} (valid: l<λ>, easy, k<K>, "
                f"{', '.join(DIVERGENCES)}, reversed)"
            )
    return experiment, masked_fraction, options


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _folder(name: str) -> str:
    return name.replace("@", "_")


def run_one(name: str, a: argparse.Namespace, out: Path) -> dict:
    experiment, frac, options = parse_run(name)
    weight = options.pop("consistency_weight", 0.0)
    start = time.perf_counter()
    result = train_experiment(
        experiment,
        n_epochs=a.n_epochs,
        output_folder=str(out / _folder(name)),
        device=a.device,
        masked_fraction=frac,
        consistency_weight=weight,
        ambient_options=options,
        data=a.data,
        model_preset=a.model,
        seed=a.seed,
        progress=not a.no_progress,
    )
    metrics = evaluate(
        result["model"],
        num_samples=a.num_samples,
        data=a.data,
        device=a.device,
        seed=a.seed,
        elbo_repeats=a.elbo_repeats,
        below=LEVELS,
    )
    samples = sample(result["model"], 64, seed=a.seed + 1, device=a.device)
    save_grid(samples, out / f"{_folder(name)}.png", nrow=8)
    row = {
        "run": name,
        "experiment": experiment,
        "masked_fraction": frac,
        "consistency_weight": weight,
        **{f"option_{k}": v for k, v in options.items()},
        **{k: v for k, v in metrics.items() if k.startswith("bits_per_pixel")},
        "frechet": metrics["frechet"],
        "confidence": metrics["confidence"],
        "class_entropy_bits": metrics["class_entropy_bits"],
        "train_steps": result["steps"],
        "train_seconds": result["seconds"],
        "total_seconds": time.perf_counter() - start,
    }
    (out / _folder(name) / "metrics.json").write_text(json.dumps(row, indent=1) + "\n")
    print(row, flush=True)
    return row


def _below(row: dict, level: float) -> str:
    key = f"bits_per_pixel_below_{level:g}"
    if key not in row:
        return "–"
    return f"{row[key]:.4f} ± {row[key + '_se']:.4f}"


def collect(out: Path, order=RUNS) -> list[dict]:
    """Every ``metrics.json`` under ``out``: the runs of ``order`` first, in that order."""
    rows = {}
    for path in sorted(out.glob("*/metrics.json")):
        row = json.loads(path.read_text())
        rows[row["run"]] = row
    names = [n for n in order if n in rows] + sorted(set(rows) - set(order))
    return [rows[n] for n in names]


def write_table(out: Path, rows: list[dict]) -> str:
    """``results.csv`` (every field) and ``results.md`` (the table) in ``out``; returns the
    Markdown."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| run | masked fraction | bits/pixel ↓ (held-out clean) | t < 0.5 part ↓ | "
        "t < 0.9 part ↓ | Fréchet ↓ | confidence ↑ | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['masked_fraction']:g} | {r['bits_per_pixel']:.4f} ± "
            f"{r['bits_per_pixel_se']:.4f} | {_below(r, 0.5)} | {_below(r, 0.9)} | "
            f"{r['frechet']:.1f} | {r['confidence']:.3f} | {r['train_seconds']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.mnist.table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n_epochs", type=int, default=10)
    p.add_argument("--output_folder", default="runs/table")
    p.add_argument("--device", default=None)
    p.add_argument("--model", default="small", choices=sorted(MODEL_PRESETS))
    p.add_argument("--data", default="shipped")
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--elbo_repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated run names (default: RUNS)")
    p.add_argument("--collect", action="store_true", help="only rebuild results.csv / .md")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.output_folder)
    names = a.only.split(",") if a.only else list(RUNS)
    for name in names:
        parse_run(name)  # every name checked before the first (long) run
    out.mkdir(parents=True, exist_ok=True)
    if not a.collect:
        for name in names:
            run_one(name, a, out)
    rows = collect(out)
    print(write_table(out, rows))
    return rows


if __name__ == "__main__":
    main()
