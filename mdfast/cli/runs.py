"""What the commands share: a preset with overrides, the checkpoint of a run and its
objective with the (EMA) weights, the process's device, and the data checks."""

from __future__ import annotations

import os


def config_of(args):
    from mdfast import experiments

    return experiments.apply_overrides(experiments.get(args.preset), args.overrides)


def check_data(cfg: dict, *datasets) -> None:
    """Prepared token files must match the model's vocabulary and the objective's mask id."""
    obj = cfg["objective"]
    if obj["name"] == "prime":  # ids become digits of C classes: every id must be below C
        for ds in datasets:
            top = int(getattr(ds, "header", {}).get("max_id", -1))
            if top >= obj["num_classes"]:
                raise ValueError(
                    f"mdfast: the data holds token id {top} >= objective.num_classes="
                    f"{obj['num_classes']}"
                )
        return
    mask = obj.get("mask_index", obj.get("exclude_index"))
    for ds in datasets:
        check = getattr(ds, "check_compatible", None)
        if check is not None:
            check(vocab_size=cfg["model"].get("vocab_size"), mask_index=mask)


def device_of(args):
    """(rank, world, device): torchrun's process group when launched by it, the device from
    ``--device`` (default: CUDA when available)."""
    from mdfast.train.trainer import setup_distributed

    return setup_distributed(getattr(args, "device", "") or "")


def load_run(args, section: str, device=None):
    """(config, objective, path) of the checkpoint ``--ckpt`` / ``<section>.ckpt`` / latest in
    ``train.out_dir``, with the checkpoint's stored config and this command's overrides on top;
    EMA weights applied when ``<section>.use_ema``. Without a checkpoint the model must come
    from ``model.init_from`` (published weights) or be asked for with ``model.random_init=true``.
    ``objective`` is None for ``--print-config``."""
    from mdfast import experiments
    from mdfast.train import checkpoint as ckpt_io

    cfg = config_of(args)
    if args.ckpt:
        cfg[section]["ckpt"] = args.ckpt
    path = cfg[section]["ckpt"] or ckpt_io.latest_checkpoint(cfg["train"]["out_dir"])
    state = ckpt_io.load(path) if path else None
    stored = state.get("config") if state else None
    if isinstance(stored, dict) and all(k in stored for k in ("model", "objective", "data")):
        # the run's own config (with its overrides), then this command's overrides on top
        mine = cfg[section]
        kept = {k: stored[k] for k in experiments.SECTIONS if k in stored and k != section}
        kept[section] = dict(mine)  # so this section's own fields (e.g. a sampler's) resolve
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
    objective = built_with_weights(cfg, state, cfg[section]["use_ema"])
    objective.eval()
    if device is not None:
        objective.to(device)
    return cfg, objective, path


def built_with_weights(cfg: dict, state: dict | None, use_ema: bool):
    """The objective of ``cfg`` with the weights of a training checkpoint ``state`` (its EMA
    weights when ``use_ema`` and it has them)."""
    from mdfast.experiments.build import build_model, build_objective
    from mdfast.train.ema import EMA

    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    if state is not None:
        objective.load_state_dict(state["model"])
        if use_ema and state.get("ema") is not None:
            ema = EMA(objective, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to()
    return objective


def training_checkpoint(path: str) -> dict | None:
    """The state of an mdfast training checkpoint at ``path``, or None when ``path`` is not one
    (a published checkpoint that the model factory loads)."""
    import torch

    from mdfast.train import checkpoint as ckpt_io

    if not os.path.isfile(path):
        return None
    try:
        peek = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return None
    if not (isinstance(peek, dict) and "config" in peek and "model" in peek and "step" in peek):
        return None
    return ckpt_io.load(path)


def teacher_of(path: str, state: dict, cfg: dict):
    """(teacher config, backbone) of the mdfast checkpoint ``path`` (EMA weights), checked against
    the run's mask id."""
    stored = state["config"]
    if not isinstance(stored, dict) or not {"model", "objective"} <= set(stored):
        raise ValueError(f"mdfast: checkpoint '{path}' has no stored model / objective config")
    from mdfast import experiments

    tcfg = experiments.resolve({k: stored[k] for k in ("model", "objective", "data")
                                if k in stored})  # fmt: skip
    tcfg["model"]["init_from"] = ""  # its weights are in the checkpoint
    kind = tcfg["objective"]["name"]
    if kind not in ("mdlm", "imdm", "sdtt", "redi"):
        raise ValueError(
            f"mdfast: checkpoint '{path}' was trained with objective '{kind}'; model.init_from "
            "takes an mdlm, imdm, sdtt or redi checkpoint"
        )
    mine, theirs = cfg["objective"]["mask_index"], tcfg["objective"]["mask_index"]
    if mine != theirs:
        raise ValueError(
            f"mdfast: checkpoint '{path}' uses mask id {theirs} but the run has "
            f"objective.mask_index={mine}"
        )
    objective = built_with_weights(tcfg, state, use_ema=True)
    return tcfg, objective.model


def objective_with_init(cfg: dict):
    """The run's objective. ``model.init_from`` = an mdfast training checkpoint puts its (EMA)
    weights into the objective's backbone (:func:`mdfast.distill.transfer_weights`: an MDLM into
    an IMDM keeps the zero ε branch) and is cleared from ``cfg`` (the run's checkpoints hold every
    weight); other paths are published weights that the model factory loads."""
    from mdfast.distill import transfer_weights
    from mdfast.experiments.build import build_model, build_objective

    init = cfg["model"].get("init_from", "")
    state = training_checkpoint(init) if init else None
    if state is None:
        return build_objective(cfg["objective"], build_model(cfg["model"]))
    _, source = teacher_of(init, state, cfg)
    objective = build_objective(cfg["objective"], build_model({**cfg["model"], "init_from": ""}))
    transfer_weights(source, objective.model, what=f"checkpoint '{init}'")
    cfg["model"]["init_from"] = ""
    return objective
