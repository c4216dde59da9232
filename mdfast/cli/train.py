"""``mdfast train PRESET [section.key=value ...]``: one run of :func:`mdfast.train.train`."""

from __future__ import annotations

import json
import os

from mdfast.cli.runs import check_data, config_of, objective_with_init


def train_command(args) -> int:
    import torch

    from mdfast.experiments.build import build_data
    from mdfast.train import TrainConfig, train

    cfg = config_of(args)
    if args.resume is not None:
        cfg["train"]["resume"] = args.resume
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    torch.manual_seed(cfg["train"]["seed"])  # identical init on every rank
    train_data, _ = build_data(cfg["data"])
    check_data(cfg, train_data)
    objective = objective_with_init(cfg)
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        last = result["losses"][-1] if result["losses"] else float("nan")
        print(
            f"mdfast: trained to step {result['step']}, last loss {last:.6g}, "
            f"checkpoint {result['checkpoint']}"
        )
    return 0
