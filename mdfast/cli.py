"""The ``mdfast`` command: ``mdfast train|eval PRESET [section.key=value ...]``.

Presets live in :mod:`mdfast.experiments`; any field can be overridden with a dotted
``section.key=value`` argument (``--print-config`` shows them all). Distributed training: launch
the same command under ``torchrun --nproc_per_node=N -m mdfast.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

__all__ = ["main"]


def _presets_epilog() -> str:
    from mdfast.experiments import preset_names

    return (
        "presets: " + ", ".join(preset_names()) + "\n"
        "overrides: section.key=value with section in model, objective, data, train, eval "
        "(e.g. train.steps=100 model.preset=medium); see --print-config"
    )


def _corpora_epilog() -> str:
    from mdfast.experiments.text_data import CORPORA

    return (
        "corpus presets: " + ", ".join(sorted(CORPORA)) + "\n"
        "text training presets (their data section) work too, e.g. mdlm-owt-small.\n"
        "example: mdfast prepare-text openwebtext data.source=owt/ data.path=data/text/owt"
    )


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="mdfast",
        description="Train and evaluate masked discrete diffusion models.",
        epilog=_presets_epilog(),
        formatter_class=fmt,
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="{train,eval,sample,eval-samples,prepare-text,presets}",
    )
    t = sub.add_parser(
        "train", help="train a preset", epilog=_presets_epilog(), formatter_class=fmt
    )
    t.add_argument("preset")
    t.add_argument("overrides", nargs="*", help="section.key=value")
    t.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from PATH, or the latest checkpoint in train.out_dir",
    )
    t.add_argument("--print-config", action="store_true", help="print the config and exit")
    e = sub.add_parser(
        "eval",
        help="validation NELBO / PPL of a checkpoint",
        epilog=_presets_epilog(),
        formatter_class=fmt,
    )
    e.add_argument("preset")
    e.add_argument("overrides", nargs="*", help="section.key=value")
    e.add_argument(
        "--ckpt",
        default=None,
        help="training checkpoint (.pt) to evaluate; its stored "
        "config is used, with the overrides given here on top",
    )
    e.add_argument("--print-config", action="store_true")
    e.add_argument("--device", default="", help="cuda, cuda:N or cpu (default: cuda if available)")
    sm = sub.add_parser("sample", help="draw samples from a checkpoint with mdfast.sampling",
                        epilog=_presets_epilog(), formatter_class=fmt)  # fmt: skip
    sm.add_argument("preset")
    sm.add_argument("overrides", nargs="*", help="section.key=value (sample.sampler=..., ...)")
    sm.add_argument("--ckpt", default=None, help="training checkpoint (.pt); its stored config "
                    "is used, with the overrides given here on top")  # fmt: skip
    sm.add_argument("--print-config", action="store_true")
    sm.add_argument("--device", default="", help="cuda, cuda:N or cpu (default: cuda if available)")
    es = sub.add_parser(
        "eval-samples",
        help="gen PPL, entropy and MAUVE of a samples file of mdfast sample",
        description="Gen PPL (MDLM's recipe), unigram entropy and MAUVE of SAMPLES.jsonl under "
        "a judge: a local Hugging Face causal-LM directory or an mdfast AR checkpoint.",
    )
    es.add_argument("samples", help="JSONL written by mdfast sample")
    es.add_argument("--judge", required=True, help="HF model directory or mdfast AR checkpoint")
    es.add_argument("--references", default="", help="prepared text directory: MAUVE "
                    "references (evenly spaced rows of --split)")  # fmt: skip
    es.add_argument("--split", default="validation")
    es.add_argument("--no-mauve", action="store_true", help="gen PPL and entropy only")
    es.add_argument("--batch-size", type=int, default=8)
    es.add_argument("--max-length", type=int, default=0, help="retokenised length (0: the "
                    "samples' length, MDLM's model.length)")  # fmt: skip
    es.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    es.add_argument("--device", default="", help="cuda, cuda:N or cpu (default: cuda if available)")
    es.add_argument("--out", default="", help="also write the result JSON here")
    pt = sub.add_parser(
        "prepare-text",
        help="tokenize a local corpus into memory-mapped token files",
        epilog=_corpora_epilog(),
        formatter_class=fmt,
    )
    pt.add_argument("preset", help="a corpus preset or a text training preset")
    pt.add_argument("overrides", nargs="*", help="data.key=value (data.source=PATH, data.path=DIR)")
    pt.add_argument("--print-config", action="store_true")
    sub.add_parser("presets", help="list the presets")
    return p


def _config(args):
    from mdfast import experiments

    return experiments.apply_overrides(experiments.get(args.preset), args.overrides)


def _check_data(cfg: dict, *datasets) -> None:
    """Prepared token files must match the model's vocabulary and the objective's mask id."""
    obj = cfg["objective"]
    mask = obj.get("mask_index", obj.get("exclude_index"))
    for ds in datasets:
        check = getattr(ds, "check_compatible", None)
        if check is not None:
            check(vocab_size=cfg["model"].get("vocab_size"), mask_index=mask)


def _train(args) -> int:
    import torch

    from mdfast.experiments.build import build_data, build_model, build_objective
    from mdfast.train import TrainConfig, train

    cfg = _config(args)
    if args.resume is not None:
        cfg["train"]["resume"] = args.resume
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    torch.manual_seed(cfg["train"]["seed"])  # identical init on every rank
    train_data, _ = build_data(cfg["data"])
    _check_data(cfg, train_data)
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        last = result["losses"][-1] if result["losses"] else float("nan")
        print(
            f"mdfast: trained to step {result['step']}, last loss {last:.6g}, "
            f"checkpoint {result['checkpoint']}"
        )
    return 0


def _prepare_text(args) -> int:
    from mdfast import experiments
    from mdfast.data.text import prepare_text
    from mdfast.experiments.text_data import CORPORA, corpus_fields

    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise experiments.ConfigError(
            f"mdfast: prepare-text takes data.key=value overrides only, got {bad}"
        )
    if args.preset in CORPORA:
        raw = {"data": corpus_fields(args.preset)}
    else:
        raw = experiments.get(args.preset)
    d = experiments.apply_overrides(raw, args.overrides)["data"]
    if d["name"] != "text":
        raise experiments.ConfigError(
            f"mdfast: preset '{args.preset}' does not train on prepared text (data.name="
            f"{d['name']}); corpus presets: {sorted(CORPORA)}"
        )
    if args.print_config:
        print(json.dumps(d, indent=2))
        return 0
    if not d["path"]:
        raise experiments.ConfigError("mdfast: set data.path (the output directory)")
    headers = prepare_text(**{k: v for k, v in d.items() if k != "name"})
    keys = ("rows", "length", "num_tokens", "documents", "dtype", "layout", "model_vocab_size",
            "mask_id")  # fmt: skip
    splits = {s: {k: h[k] for k in keys} for s, h in headers.items()}
    print(json.dumps({"path": d["path"], "splits": splits}))
    return 0


def _device(args):
    """(rank, world, device): torchrun's process group when launched by it, the device from
    ``--device`` (default: CUDA when available)."""
    from mdfast.train.trainer import setup_distributed

    return setup_distributed(getattr(args, "device", "") or "")


def _load_run(args, section: str, device=None):
    """(config, objective, path) of the checkpoint ``--ckpt`` / ``<section>.ckpt`` / latest in
    ``train.out_dir``, with the checkpoint's stored config and this command's overrides on top;
    EMA weights applied when ``<section>.use_ema``. Without a checkpoint the model must come
    from ``model.init_from`` (published weights) or be asked for with ``model.random_init=true``.
    ``objective`` is None for ``--print-config``."""
    from mdfast import experiments
    from mdfast.experiments.build import build_model, build_objective
    from mdfast.train import checkpoint as ckpt_io
    from mdfast.train.ema import EMA

    cfg = _config(args)
    if args.ckpt:
        cfg[section]["ckpt"] = args.ckpt
    path = cfg[section]["ckpt"] or ckpt_io.latest_checkpoint(cfg["train"]["out_dir"])
    state = ckpt_io.load(path) if path else None
    stored = state.get("config") if state else None
    if isinstance(stored, dict) and all(k in stored for k in ("model", "objective", "data")):
        # the run's own config (with its overrides), then this command's overrides on top
        mine = cfg[section]
        kept = {k: stored[k] for k in experiments.SECTIONS if k in stored and k != section}
        cfg = experiments.apply_overrides(kept, args.overrides)
        cfg[section] = mine
    if args.print_config:
        return cfg, None, path
    if state is None and not cfg["model"].get("init_from") and not cfg["model"]["random_init"]:
        raise FileNotFoundError(
            f"mdfast {args.command}: no checkpoint found (looked for --ckpt, {section}.ckpt and "
            f"the latest ckpt-*.pt in train.out_dir={cfg['train']['out_dir']}); pass one, load "
            "published weights with model.init_from=PATH, or set model.random_init=true to run "
            "with random weights"
        )
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    if state is not None:
        objective.load_state_dict(state["model"])
        if cfg[section]["use_ema"] and state.get("ema") is not None:
            ema = EMA(objective, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to()
    objective.eval()
    if device is not None:
        objective.to(device)
    return cfg, objective, path


def _sample(args) -> int:
    """``mdfast sample``: :func:`mdfast.experiments.generation.run_sample`."""
    from mdfast.experiments.generation import run_sample

    rank, world, dev = _device(args)
    cfg, objective, path = _load_run(args, "sample", dev)
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    if cfg["objective"]["name"] == "interpolant":
        import contextlib

        import torch

        from mdfast.train.runtime import autocast_dtype

        amp = autocast_dtype(cfg["sample"]["precision"], dev, "sample.precision")
        ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        return _sample_interpolant(cfg, objective, path, rank, ctx)
    summary = run_sample(cfg, objective, path, dev, rank, world)
    if rank == 0:
        print(json.dumps(summary))
    return 0


def _eval_samples(args) -> int:
    from mdfast.experiments.sample_eval import main as eval_samples

    return eval_samples(args)


def _sample_interpolant(cfg: dict, objective, path, rank: int, ctx) -> int:
    """``mdfast sample`` of a discrete-interpolant run: ``sample.sampler`` euler | maskgit,
    ``sample.cfg_scale``, ``sample.label`` (-1: classes 0, 1, ... in turn), ``sample.context``
    (text embeddings [N, T, C], a ``.npy`` or an ``.npz`` with ``context``: sample i gets row
    i mod N), the samplers' options, ``sample.num_batches`` batches (batch b from
    seed + b·1000003); the token grid shape is the model's (``image_size``², or
    ``sample.length``)."""
    import numpy as np
    import torch

    from mdfast.data.vq_tokens import open_array
    from mdfast.experiments import ConfigError
    from mdfast.sampling import sample

    sp, model = cfg["sample"], objective.model
    sp = {**sp, "sampler": sp["sampler"] or "euler"}  # "" = the objective's default
    if sp["sampler"] not in ("euler", "maskgit"):
        raise ConfigError(
            f"mdfast: sample.sampler must be 'euler' or 'maskgit' for the interpolant objective, "
            f"got '{sp['sampler']}'"
        )
    side = cfg["model"].get("image_size")
    shape = (sp["length"],) if sp["length"] else (side, side)
    b, n_batches = sp["batch_size"], max(1, sp["num_batches"])
    classes = cfg["objective"]["num_classes"]
    labels = None
    if classes > 0:
        if not -1 <= sp["label"] < classes:
            raise ConfigError(f"mdfast: sample.label must be -1 or in [0, {classes}), got "
                              f"{sp['label']}")  # fmt: skip
        n = b * n_batches
        labels = torch.arange(n) % classes if sp["label"] < 0 else torch.full((n,), sp["label"])
    context = rows = None
    if sp["context"]:
        context = open_array(sp["context"], "context", option="sample.context")
        if context.ndim != 3 or len(context) == 0:
            raise ConfigError(f"mdfast: sample.context must hold embeddings [N, T, C] with N >= 1, "
                              f"got shape {list(context.shape)}")  # fmt: skip
        rows = torch.arange(b * n_batches) % len(context)
    opts = {k: sp[k] for k in ("steps", "cfg_scale", "temperature", "top_p", "top_k", "t_min",
                               "max_last", "anneal_noise", "reveal", "randomize",
                               "r_temp")}  # fmt: skip
    opts["kappa"] = sp["kappa"] or cfg["objective"]["kappa"]
    xs, nfe = [], 0
    for i in range(n_batches):
        cond = {} if labels is None else {"y": labels[i * b : (i + 1) * b]}
        if context is not None:
            picked = np.asarray(context[rows[i * b : (i + 1) * b].numpy()], dtype=np.float32)
            cond["context"] = torch.from_numpy(picked)
        try:
            with ctx:
                res = sample(model, sampler=sp["sampler"], batch_size=b, shape=shape,
                             mask_index=cfg["objective"]["mask_index"], cond=cond,
                             seed=sp["seed"] + i * 1_000_003, **opts)  # fmt: skip
        except ValueError as e:
            raise ConfigError(str(e).replace("argument '", "option 'sample.")) from None
        xs.append(res.x)
        nfe += res.nfe
    x = torch.cat(xs)
    if rank != 0:
        return 0
    if sp["out"]:
        saved = {"input_ids": x.cpu(), **({"y": labels} if labels is not None else {}),
                 **({"context_row": rows} if rows is not None else {})}  # fmt: skip
        torch.save(saved, sp["out"])
    print(json.dumps({"checkpoint": path, "sampler": sp["sampler"], "shape": list(x.shape),
                      "nfe": nfe, "cfg_scale": sp["cfg_scale"], "out": sp["out"] or None,
                      "labels": labels.tolist() if labels is not None else None}))  # fmt: skip
    return 0


def _eval_sets(cfg: dict):
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


def _objective_loss(objective, dataset, ev, dev) -> dict:
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


def _eval(args) -> int:
    from mdfast.metrics.likelihood import evaluate_likelihood, supports

    rank, _, dev = _device(args)
    cfg, objective, path = _load_run(args, "eval", dev)
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    ev = cfg["eval"]
    from mdfast.train.runtime import autocast_dtype

    amp = autocast_dtype(ev["precision"], dev, "eval.precision")
    T = ev["T"] if ev["T"] >= 0 else int(cfg["objective"].get("T", 0) or 0)
    results = {}
    for name, ds in _eval_sets(cfg):
        _check_data(cfg, ds)
        if supports(objective):
            res = evaluate_likelihood(
                objective, ds, K=ev["K"], T=T, seed=ev["seed"], batch_size=ev["batch_size"],
                sequences=ev["sequences"], device=dev, autocast_dtype=amp,
                progress=sys.stderr.isatty(), desc=f"eval {name}",
            )  # fmt: skip
        else:
            res = _objective_loss(objective, ds, ev, dev)
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


def main(argv: list[str] | None = None) -> int:
    from mdfast.experiments import ConfigError
    from mdfast.train import CheckpointError, NonFiniteLossError

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options (`eval p --ckpt X key=v`): argparse leaves those over
    bad = [e for e in extra if e.startswith("-") or "=" not in e]
    if bad or (extra and args.command in ("presets", "eval-samples")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    clean = False  # set once every rank is known to leave normally (or with the same error)
    try:
        if args.command == "presets":
            from mdfast.experiments import preset_names

            print("\n".join(preset_names()))
            return 0
        cmds = {"train": _train, "eval": _eval, "sample": _sample,
                "eval-samples": _eval_samples, "prepare-text": _prepare_text}  # fmt: skip
        rc = cmds[args.command](args)
        clean = True
        return rc
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError,
            FileExistsError, ValueError, KeyError) as e:  # fmt: skip
        msg = str(e).strip("\"'")
        if (
            isinstance(e, (ValueError, KeyError))
            and not isinstance(e, ConfigError)
            and (not msg.startswith("mdfast"))
        ):
            raise  # not one of our bad-input errors: a bug, keep the traceback
        clean = True  # raised identically on every rank (shared files, all-reduced loss)
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    finally:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                if clean:
                    dist.barrier()  # leave together: gloo aborts if a peer vanishes mid-teardown
                dist.destroy_process_group()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
