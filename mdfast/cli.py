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


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="mdfast",
        description="Train and evaluate masked discrete diffusion models.",
        epilog=_presets_epilog(),
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,sample,presets}")
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
    sm = sub.add_parser("sample", help="draw samples from a checkpoint with mdfast.sampling",
                        epilog=_presets_epilog(), formatter_class=fmt)  # fmt: skip
    sm.add_argument("preset")
    sm.add_argument("overrides", nargs="*", help="section.key=value (sample.sampler=..., ...)")
    sm.add_argument("--ckpt", default=None, help="training checkpoint (.pt); its stored config "
                    "is used, with the overrides given here on top")  # fmt: skip
    sm.add_argument("--print-config", action="store_true")
    sub.add_parser("presets", help="list the presets")
    return p


def _config(args):
    from mdfast import experiments

    return experiments.apply_overrides(experiments.get(args.preset), args.overrides)


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
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        last = result["losses"][-1] if result["losses"] else float("nan")
        print(
            f"mdfast: trained to step {result['step']}, last loss {last:.6g}, "
            f"checkpoint {result['checkpoint']}"
        )
    return 0


def _load_run(args, section: str):
    """(config, objective) of the checkpoint ``--ckpt`` / ``<section>.ckpt`` / latest in
    ``train.out_dir``, with the checkpoint's stored config and this command's overrides on top;
    EMA weights applied when ``<section>.use_ema``. Returns (cfg, objective, path) or (cfg,
    None, path) for ``--print-config``."""
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
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    if state is not None:
        objective.load_state_dict(state["model"])
        if cfg[section]["use_ema"] and state.get("ema") is not None:
            ema = EMA(objective, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to()
    objective.eval()
    return cfg, objective, path


class _SigmaTime:
    """Adapts a sigma-conditioned backbone (SEDD's DiT) to the samplers' time argument."""

    def __init__(self, model, schedule):
        self.model, self.schedule = model, schedule

    def hidden(self, x, t):
        return self.model.trunk(x, self.schedule.sigma(t.float())[0])

    def head(self, h):
        return self.model.head(h)


def _sample(args) -> int:
    import torch

    from mdfast import sampling

    cfg, objective, path = _load_run(args, "sample")
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    sp, name = cfg["sample"], cfg["objective"]["name"]
    if name == "interpolant":
        return _sample_interpolant(cfg, objective, path)
    if name not in ("mdlm", "sedd"):
        raise FileNotFoundError(
            f"mdfast sample: objective '{name}' is not supported (mdlm, sedd and interpolant "
            "are); use mdfast.sampling or the objective's own sampler from Python"
        )
    model = objective.model
    time_conditioned = name == "sedd"
    if time_conditioned:
        model = _SigmaTime(model, objective.schedule)
    length = sp["length"] or cfg["data"].get("length") or cfg["model"].get("model_length")
    kwargs = {k: sp[k] for k in ("steps", "seed", "temperature", "top_p", "top_k",
                                 "noise_removal", "batch_size")}  # fmt: skip
    if sp["schedule"]:
        kwargs["schedule"] = sp["schedule"]
    if time_conditioned:
        kwargs["time_conditioned"] = True
    with torch.no_grad():
        res = sampling.sample(model, sampler=sp["sampler"], length=int(length),
                              mask_index=cfg["objective"]["mask_index"], **kwargs)  # fmt: skip
    if sp["out"]:
        torch.save(res.x.cpu(), sp["out"])
    print(json.dumps({"checkpoint": path, "sampler": sp["sampler"], "shape": list(res.x.shape),
                      "nfe": res.nfe, "steps": res.steps, "out": sp["out"] or None,
                      "samples": res.x[: min(2, len(res.x))].tolist()}))  # fmt: skip
    return 0


def _sample_interpolant(cfg: dict, objective, path) -> int:
    """``mdfast sample`` of a discrete-interpolant run: ``sample.sampler`` euler | maskgit,
    ``sample.cfg_scale``, ``sample.label`` (-1: classes 0, 1, ... in turn), the samplers' options;
    the token grid shape is the model's (``image_size``², or ``sample.length``)."""
    import torch

    from mdfast.experiments import ConfigError
    from mdfast.sampling.interpolant import sample_interpolant

    sp, model = cfg["sample"], objective.model
    if sp["sampler"] not in ("euler", "maskgit"):
        raise ConfigError(
            f"mdfast: sample.sampler must be 'euler' or 'maskgit' for the interpolant objective, "
            f"got '{sp['sampler']}'"
        )
    side = cfg["model"].get("image_size")
    shape = (sp["length"],) if sp["length"] else (side, side)
    b = sp["batch_size"]
    cond = {}
    classes = cfg["objective"]["num_classes"]
    if classes > 0:
        if not -1 <= sp["label"] < classes:
            raise ConfigError(f"mdfast: sample.label must be -1 or in [0, {classes}), got "
                              f"{sp['label']}")  # fmt: skip
        y = torch.arange(b) % classes if sp["label"] < 0 else torch.full((b,), sp["label"])
        cond["y"] = y
    opts = {k: sp[k] for k in ("steps", "seed", "cfg_scale", "temperature", "top_p", "top_k",
                               "t_min", "max_last", "anneal_noise", "reveal", "randomize",
                               "r_temp")}  # fmt: skip
    opts["kappa"] = sp["kappa"] or cfg["objective"]["kappa"]
    try:
        res = sample_interpolant(model, sampler=sp["sampler"], batch_size=b, shape=shape,
                                 mask_index=cfg["objective"]["mask_index"], cond=cond,
                                 **opts)  # fmt: skip
    except ValueError as e:
        raise ConfigError(str(e).replace("argument '", "option 'sample.")) from None
    if sp["out"]:
        torch.save({"input_ids": res.x.cpu(), **{k: v.cpu() for k, v in cond.items()}},
                   sp["out"])  # fmt: skip
    print(json.dumps({"checkpoint": path, "sampler": sp["sampler"], "shape": list(res.x.shape),
                      "nfe": res.nfe, "cfg_scale": sp["cfg_scale"], "out": sp["out"] or None,
                      "labels": cond["y"].tolist() if "y" in cond else None}))  # fmt: skip
    return 0


def _eval(args) -> int:
    import torch

    from mdfast.experiments.build import build_data
    from mdfast.train.data import StepBatches

    cfg, objective, path = _load_run(args, "eval")
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    ev = cfg["eval"]
    _, val = build_data(cfg["data"])
    torch.manual_seed(ev["seed"])
    n_val = len(val["input_ids"]) if isinstance(val, dict) else len(val)
    bs = min(ev["batch_size"], n_val)
    batches = StepBatches(val, bs, shuffle=False)
    n = min(ev["batches"], max(1, n_val // bs))
    total = 0.0
    with torch.no_grad():
        for i in range(n):
            loss, _ = objective(batches.get(i, 0))
            total += float(loss)
    mean = total / n
    out = {
        "checkpoint": path,
        "loss": mean,
        "exp_loss": math.exp(min(mean, 700)),
        "batches": n,
        "batch_size": bs,
    }
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    from mdfast.experiments import ConfigError
    from mdfast.train import CheckpointError, NonFiniteLossError

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options (`eval p --ckpt X key=v`): argparse leaves those over
    bad = [e for e in extra if e.startswith("-") or "=" not in e]
    if bad or (extra and args.command == "presets"):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    clean = False  # set once every rank is known to leave normally (or with the same error)
    try:
        if args.command == "presets":
            from mdfast.experiments import preset_names

            print("\n".join(preset_names()))
            return 0
        rc = {"train": _train, "eval": _eval, "sample": _sample}[args.command](args)
        clean = True
        return rc
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        clean = True  # raised identically on every rank (shared files, all-reduced loss)
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"error: {e}", file=sys.stderr)
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
