"""``mdfast distill sdtt|redi-data|redi``: few-step distillation of a teacher checkpoint
(:mod:`mdfast.distill`)."""

from __future__ import annotations

import json
import os
import sys

from mdfast.cli.runs import (
    check_data,
    config_of,
    device_of,
    objective_with_init,
    teacher_of,
    training_checkpoint,
)

DISTILL_OBJECTIVES = {"sdtt": "sdtt", "redi": "redi", "redi-data": "redi"}


def student_from(cfg: dict):
    """(objective, teacher path): the run's objective started from ``model.init_from`` (an
    mdfast checkpoint or published weights), its teacher (SDTT) a copy of those weights."""
    init = cfg["model"].get("init_from", "")
    if not init:
        raise ValueError(
            "mdfast distill: set model.init_from=CKPT (the teacher: an mdfast checkpoint, e.g. "
            "runs/mdlm-lm1b/ckpt-00100000.pt, or published MDLM weights)"
        )
    objective = objective_with_init(cfg)
    if hasattr(objective, "reset_teacher"):
        objective.reset_teacher()
    cfg["model"]["init_from"] = ""  # the run's checkpoints hold every weight
    return objective, init


def distill_command(args) -> int:
    from mdfast import experiments

    cfg = config_of(args)
    want = DISTILL_OBJECTIVES[args.method]
    if cfg["objective"]["name"] != want:
        raise experiments.ConfigError(
            f"mdfast distill {args.method}: preset '{args.preset}' has objective.name="
            f"{cfg['objective']['name']}; use a preset with objective.name={want}"
        )
    if args.method == "redi-data":
        return redi_data(args, cfg)
    if args.method == "redi" and cfg["data"]["name"] != "coupling":
        raise experiments.ConfigError(
            f"mdfast distill redi: preset '{args.preset}' trains on data.name="
            f"{cfg['data']['name']}; ReDi trains on data.name=coupling"
        )
    if args.resume is not None:
        cfg["train"]["resume"] = args.resume
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    return distill_train(args, cfg)


def distill_train(args, cfg: dict) -> int:
    import torch

    from mdfast.experiments.build import build_data
    from mdfast.train import TrainConfig, train

    torch.manual_seed(cfg["train"]["seed"])
    train_data, _ = build_data(cfg["data"])
    if args.method == "redi":
        d, o = cfg["data"], cfg["objective"]
        noise = (o["noise_dim"] or cfg["model"].get("hidden_dim")) if o["base"] == "imdm" else None
        train_data.check_compatible(vocab_size=cfg["model"].get("vocab_size"),
                                    mask_index=o["mask_index"], length=d["length"] or None,
                                    tokenizer=d["tokenizer"] or None, noise_dim=noise)  # fmt: skip
    else:
        check_data(cfg, train_data)
    objective, teacher = student_from(cfg)
    rank = int(os.environ.get("RANK", 0))
    rounds = getattr(objective, "rounds", None)
    if rounds is not None and cfg["train"]["steps"] > rounds.total_steps:
        if rank == 0:
            print(f"mdfast distill: the round schedule ends after {rounds.total_steps} steps "
                  f"({rounds.rounds} rounds, the last student takes "
                  f"{rounds.student_steps(rounds.rounds - 1):g} steps); stopping there",
                  file=sys.stderr)  # fmt: skip
        cfg["train"]["steps"] = rounds.total_steps
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    if rank == 0:
        last = result["losses"][-1] if result["losses"] else float("nan")
        print(json.dumps({"method": args.method, "teacher": teacher, "step": result["step"],
                          "last_loss": last, "checkpoint": result["checkpoint"]}))  # fmt: skip
    return 0


def coupling_source(cfg: dict, teacher_cfg: dict | None):
    """(dataset, tokenizer name) the couplings are drawn from: data.source (a prepared
    directory or a preset name), else the teacher's training data."""
    from mdfast import experiments
    from mdfast.experiments.build import build_data

    src = cfg["data"]["source"]
    if src and os.path.isdir(src):
        from mdfast.data.text import TokenFile

        tf = TokenFile(src, "train")
        return tf, tf.header.get("tokenizer", "")
    if src:
        data = experiments.apply_overrides(experiments.get(src), [])["data"]
    elif teacher_cfg is not None and "data" in teacher_cfg:
        data = teacher_cfg["data"]
    else:
        raise ValueError(
            "mdfast distill redi-data: set data.source (a prepared directory or a preset whose "
            "data the couplings are drawn from)"
        )
    train_data, _ = build_data(data)
    header = getattr(train_data, "header", None) or {}
    return train_data, header.get("tokenizer", data.get("tokenizer", ""))


def redi_data(args, cfg: dict) -> int:
    from mdfast.distill import generate_coupling

    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    d = cfg["data"]
    if d["name"] != "coupling" or not d["path"]:
        raise ValueError("mdfast distill redi-data: set data.path (the output directory) on a "
                         "preset with data.name=coupling")  # fmt: skip
    init = cfg["model"].get("init_from", "")
    state = training_checkpoint(init) if init else None
    if state is None:
        raise ValueError(
            "mdfast distill redi-data: set model.init_from to the teacher's mdfast checkpoint "
            f"(got {init!r})"
        )
    rank, world, dev = device_of(args)
    teacher_cfg, teacher = teacher_of(init, state, cfg)
    vocab = teacher_cfg["model"]["vocab_size"]
    if cfg["model"].get("vocab_size") not in (None, vocab):
        raise ValueError(
            f"mdfast: checkpoint '{init}' has vocabulary size {vocab} but the run has "
            f"model.vocab_size={cfg['model']['vocab_size']}"
        )
    source, tokenizer = coupling_source(cfg, teacher_cfg)
    if d["tokenizer"] and tokenizer and d["tokenizer"] != tokenizer:
        raise ValueError(
            f"mdfast distill redi-data: the source data is tokenized with '{tokenizer}' but the "
            f"run has data.tokenizer={d['tokenizer']}"
        )
    teacher.eval().to(dev)
    header = generate_coupling(
        teacher, source, d["path"], pairs=d["pairs"], mask_index=cfg["objective"]["mask_index"],
        model_vocab_size=vocab, steps=d["teacher_steps"], batch_size=d["gen_batch_size"],
        seed=d["seed"], perturbed=d["perturbed"], fix_eps=d["fix_eps"], rank=rank, world=world,
        device=dev, overwrite=d["overwrite"], progress=sys.stderr.isatty(),
        header={"teacher": os.path.abspath(init), "teacher_objective":
                teacher_cfg["objective"]["name"], "tokenizer": tokenizer,
                "source": d["source"] or "teacher's data"},
    )  # fmt: skip
    if rank == 0:
        print(json.dumps({"path": d["path"], **header}))
    return 0
