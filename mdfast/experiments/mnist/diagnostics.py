"""What the consistency gradient does to a trained ambient (or naive) model.

    python -m mdfast.experiments.mnist.diagnostics --checkpoint runs/table/ambient_0.9/... \\
        --masked_fraction 0.9 --variants ambient,ambient-k1,ambient-kl,ambient-reversed

For each consistency variant (a run name's options, see :func:`~.table.parse_run`) on the same
batches of corrupted training digits, compared with the *oracle* gradient — the gradient of the
t < t_d part of the NELBO of the same digits, clean (:func:`mdfast.metrics.elbo.
nelbo_per_sequence` with ``t_max = t_d``), which training never sees:

- ``cos_oracle``: cosine between the consistency gradient and the oracle gradient (> 0: a step
  on the consistency loss improves the clean likelihood below t_d, to first order);
- ``oracle_noise_ceiling``: cosine between the oracle gradients of two disjoint halves of the
  batches, the most a direction estimated from this many batches can reach;
- ``norm_ratio``: |consistency gradient| / |easy-loss gradient|, the consistency term's weight
  relative to the easy loss at λ = 1;
- with ``--probe_steps N``: the held-out t < t_d part (bits/pixel) after N AdamW steps
  (``--probe_lr``, clip 1.0) on easy + λ · consistency (λ from the variant's name, default 1),
  from the same starting weights and on the same batches; the row ``easy`` takes the same steps
  on the easy loss alone, so the difference is what the consistency term adds.

The easy loss's own ``cos_oracle`` is reported on the row ``easy``.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from mdfast import rng
from mdfast.experiments.mnist.checkpoint import load_checkpoint
from mdfast.experiments.mnist.data import MASK, BinarizedMNIST, CorruptedMNIST, source_args
from mdfast.experiments.mnist.objectives import AmbientMDLM
from mdfast.experiments.mnist.table import parse_run
from mdfast.metrics.elbo import nelbo_bits_per_token, nelbo_per_sequence

__all__ = ["diagnose", "main"]


def _flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, params, strict=True)
        ]
    ).double()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-30))


def _variant_options(variant: str, masked_fraction: float) -> dict:
    """The :class:`AmbientMDLM` arguments of a variant name (λ as ``consistency_weight``)."""
    experiment, _, options = parse_run(f"{variant}@{masked_fraction:g}")
    if experiment != "ambient":
        raise ValueError(f"mdfast: variant {variant!r} is not an ambient run name")
    return options


def _probe(model, objective_options: dict, t_d: float, batches, steps: int, lr: float, seed: int):
    """A copy of ``model`` after ``steps`` AdamW steps of the ambient objective on ``batches``."""
    probe = copy.deepcopy(model).train()
    objective = AmbientMDLM(probe, masked_fraction=t_d, **objective_options)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr)
    for step in range(steps):
        x_obs, observed = batches[step % len(batches)]
        with rng.noise_key(rng.NoiseKey.for_batch(seed, 2 * len(batches) + step, len(x_obs))):
            loss, _ = objective((x_obs, observed))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
    return probe.eval()


def _held_out_part(model, test: torch.Tensor, t_d: float, seed: int) -> float:
    return nelbo_bits_per_token(model, test, mask_index=MASK, seed=seed, t_max=t_d)[0]


def diagnose(
    model: torch.nn.Module,
    *,
    masked_fraction: float,
    variants: list[str],
    batches: int = 8,
    batch_size: int = 64,
    data: str | None = "shipped",
    seed: int = 0,
    probe_steps: int = 0,
    probe_lr: float = 1e-4,
) -> list[dict]:
    """One row per variant (and ``easy``): see the module docstring."""
    t_d = float(masked_fraction)
    options = {v: _variant_options(v, t_d) for v in variants}
    clean = BinarizedMNIST(train=True, **source_args(data))
    corrupted = CorruptedMNIST(masked_fraction=t_d, seed=seed, base=clean)
    order = torch.randperm(len(clean.labels), generator=torch.Generator().manual_seed(seed))
    picks = [order[i * batch_size : (i + 1) * batch_size] for i in range(batches)]
    model = model.train()
    oracle, easy = [], []
    grads = {v: [] for v in variants}
    values = {v: [] for v in variants}
    cons_options = {
        v: {k: o for k, o in opts.items() if k != "consistency_weight"}
        for v, opts in options.items()
    }
    for i, idx in enumerate(picks):
        x0, x_obs, observed = clean.tokens[idx], corrupted.x_obs[idx], corrupted.observed[idx]
        # Keyed noise: the oracle at step i, the objectives at step batches + i (every variant
        # the same draws, so their differences are not noise).
        with rng.noise_key(rng.NoiseKey.for_batch(seed, i, len(idx))):
            part = nelbo_per_sequence(model, x0, mask_index=MASK, t_max=t_d).mean()
        oracle.append(_flat_grad(model, part))
        with rng.noise_key(rng.NoiseKey.for_batch(seed, batches + i, len(idx))):
            objective = AmbientMDLM(model, masked_fraction=t_d)
            easy.append(_flat_grad(model, objective.easy_loss(x_obs, observed)))
            for v in variants:
                objective = AmbientMDLM(model, masked_fraction=t_d, **cons_options[v])
                loss, _ = objective.consistency_loss(x_obs)
                values[v].append(float(loss.detach()))
                grads[v].append(_flat_grad(model, loss))
    g_oracle = torch.stack(oracle).mean(0)
    ceiling = _cos(torch.stack(oracle[0::2]).mean(0), torch.stack(oracle[1::2]).mean(0))
    g_easy = torch.stack(easy).mean(0)
    rows = [
        {
            "variant": "easy",
            "cos_oracle": _cos(g_easy, g_oracle),
            "oracle_noise_ceiling": ceiling,
            "norm_ratio": 1.0,
        }
    ]
    test = BinarizedMNIST(train=False, **source_args(data)).tokens
    data_batches = [(corrupted.x_obs[idx], corrupted.observed[idx]) for idx in picks]
    if probe_steps:
        rows[0]["below_before"] = _held_out_part(model, test, t_d, seed)
        easy_probe = _probe(
            model, {"consistency_weight": 0.0}, t_d, data_batches, probe_steps, probe_lr, seed
        )
        rows[0]["below_after_probe"] = _held_out_part(easy_probe, test, t_d, seed)
    for v in variants:
        g = torch.stack(grads[v]).mean(0)
        row = {
            "variant": v,
            "consistency": sum(values[v]) / len(values[v]),
            "cos_oracle": _cos(g, g_oracle),
            "oracle_noise_ceiling": ceiling,
            "norm_ratio": float(g.norm() / g_easy.norm()),
        }
        if probe_steps:
            probe = _probe(model, options[v], t_d, data_batches, probe_steps, probe_lr, seed)
            row["below_before"] = rows[0]["below_before"]
            row["below_after_probe"] = _held_out_part(probe, test, t_d, seed)
        rows.append(row)
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.mnist.diagnostics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--masked_fraction", type=float, required=True, help="t_d of the data")
    p.add_argument("--variants", default="ambient,ambient-k1,ambient-kl,ambient-reversed")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--data", default="shipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe_steps", type=int, default=0)
    p.add_argument("--probe_lr", type=float, default=1e-4)
    p.add_argument("--output", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    model, _ = load_checkpoint(a.checkpoint)
    rows = diagnose(
        model,
        masked_fraction=a.masked_fraction,
        variants=a.variants.split(","),
        batches=a.batches,
        batch_size=a.batch_size,
        data=a.data,
        seed=a.seed,
        probe_steps=a.probe_steps,
        probe_lr=a.probe_lr,
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    if a.output:
        with open(a.output, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
