"""``mdfast sample``: samples of a checkpoint, by objective (text samplers write JSONL, the
interpolant samplers a ``.pt`` file, an experiment's registered sample runner its own files)."""

from __future__ import annotations

import json

from mdfast.cli.runs import device_of, load_run


def sample_command(args) -> int:
    """``mdfast sample``: :func:`mdfast.experiments.generation.run_sample`."""
    from mdfast.experiments.generation import run_sample

    rank, world, dev = device_of(args)
    cfg, objective, path = load_run(args, "sample", dev)
    if objective is None:
        print(json.dumps(cfg, indent=2))
        return 0
    from mdfast.experiments import registry

    runner = registry.sample_runner(cfg["sample"]["sampler"])
    if runner is not None:  # an experiment that writes its own samples (e.g. prime)
        return runner[1](cfg, objective, path)
    if cfg["objective"]["name"] == "interpolant":
        import contextlib

        import torch

        from mdfast.train.runtime import autocast_dtype

        amp = autocast_dtype(cfg["sample"]["precision"], dev, "sample.precision")
        ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        return sample_interpolant(cfg, objective, path, rank, ctx)
    summary = run_sample(cfg, objective, path, dev, rank, world)
    if rank == 0:
        print(json.dumps(summary))
    return 0


def sample_interpolant(cfg: dict, objective, path, rank: int, ctx) -> int:
    """``mdfast sample`` of a discrete-interpolant run: ``sample.sampler`` euler | maskgit,
    ``sample.cfg_scale``, ``sample.label`` (-1: classes 0, 1, ... in turn), ``sample.context``
    (text embeddings [N, T, C], a ``.npy`` or an ``.npz`` with ``context``: sample i gets row
    i mod N), the samplers' options, ``sample.num_batches`` batches (batch b on its own
    stream, ``rng.stream_seed(seed, Purpose.BATCH, b)``); the token grid shape is the model's
    (``image_size``², or ``sample.length``)."""
    import numpy as np
    import torch

    from mdfast import rng
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
                seed = rng.stream_seed(sp["seed"], rng.Purpose.BATCH, i)
                res = sample(model, sampler=sp["sampler"], batch_size=b, shape=shape,
                             mask_index=cfg["objective"]["mask_index"], cond=cond, seed=seed,
                             **opts)  # fmt: skip
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
