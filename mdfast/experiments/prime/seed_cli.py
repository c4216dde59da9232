"""The MDM-Prime image seed's command line on mdfast: the seed README's commands run with
``python -m mdfast.experiments.prime_image`` (or ``torchrun ... -m mdfast.experiments.prime_image``)
in place of ``main.py`` / ``eval.py`` / ``parallel_sampling.py``, with the same flags.

What runs:

* no ``--mode`` (``main.py``): training of the preset ``prime-<dataset>-<variant>`` (variant
  ``l<ℓ>`` from ``--target_length``, ``supertoken`` with ``--super_token``, ``mixture`` with
  ``--use_uniform_mixture``) through :func:`mdfast.train.train`. ``--batch_size`` is per GPU as
  in the seed (global batch = batch_size × processes × ``--accum_iter``); ``--epochs`` becomes
  steps (epochs × ⌊N / global batch⌋); ``--resume`` continues an mdfast checkpoint exactly, or
  starts from a released ``.pth``'s weights. The seed's periodic 2k-sample FID
  (``--eval_frequency``) is not run during training: run ``--mode eval_fid`` on checkpoints.
* ``--mode sample_data``: ``--split_size`` samples (× ``--num_gpus`` with ``--sampling_all``,
  the ``parallel_sampling.py`` job, which also runs with no ``--mode`` and ``--sampling_all``)
  saved as ``.npy`` batches plus a PNG grid under
  ``<output_dir>/fid_samples/<sampler setup>_step=<nfe>/``; torchrun shards the batches (no Ray).
* ``--mode eval_fid``: FID of the samples saved there (all of them), or, when there are none,
  of ``--fid_samples`` fresh samples; against CIFAR-10 train / ImageNet-32 val statistics
  (cached). ``--inception_weights`` (ours) names the local Inception file.
* ``--mode compute_nll_bpd``: the valid ``elbo`` bound with K = ``--nll_times`` (ours; default
  512 as the seed) times per image, on the held-out split (CIFAR-10 test, ImageNet-32 val;
  ``--split_size`` images if given), mean ± standard error of bits per dim.
* ``--mode imputation``: for each of ``--fid_samples`` held-out images, ``--batch_size``
  completions from its sub-tokens at ``--subtoken_index``; one grid per image.

Sampler flags (``--nfe --carry_over --temperature_parameters --use_corrector_step
--corrector_parameters --use_timestep_scheduler --timestep_parameters``) as in the seed, with its
defects fixed (:mod:`mdfast.sampling.prime`): timestep parameters with b = 0 (the README's
``1.0 0.0 0.0``) are treated as "no warp" unless ``--timestep_all_at_last`` (ours) asks for the
seed's behaviour; ℓ = 1 with ``--carry_over`` works; the uniform mixture is conditioned on its
label. ``--from_huggingface`` is refused (nothing downloads): pass the local ``.pth`` as
``--resume``. Flags of the seed that have no effect here (``--num_workers``, ``--pin_mem``,
``--dist_url``, Ray's ``--storage_path``, wandb's keys, ...) are accepted and ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import torch

__all__ = ["main", "parser", "preset_for"]

_VARIANTS = {"cifar10": "cifar10", "imagenet": "imagenet32", "imagenet32": "imagenet32"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.prime_image",
        description="MDM-Prime image experiments with the seed's flags (see --help of "
        "mdfast.experiments.prime.seed_cli)",
    )
    a = p.add_argument
    a("--device", default="cuda")
    a("--seed", default=0, type=int)
    a("--epochs", default=8001, type=int)
    a("--resume", default="")
    a("--num_gpus", default=8, type=int)
    a("--start_epoch", default=0, type=int)
    a("--batch_size", default=64, type=int, help="per GPU, as in the seed")
    a("--accum_iter", default=1, type=int)
    a("--eval_frequency", default=250, type=int)
    a("--output_dir", default="./output_dir")
    a("--fid_samples", default=2000, type=int)
    a("--lr", type=float, default=0.0001)
    a("--optimizer_betas", nargs="+", type=float, default=[0.9, 0.95])
    a("--use_ema", action="store_true")
    a("--dataset", default="cifar10")
    a("--data_path", default="./data/image_generation")
    a("--num_workers", default=10, type=int)
    a("--no_pin_mem", action="store_false", dest="pin_mem")
    a("--pin_mem", action="store_true")
    a("--world_size", default=1, type=int)
    a("--local_rank", default=-1, type=int)
    a("--dist_on_itp", action="store_true")
    a("--dist_url", default="env://")
    a("--mode", default=None, choices=["eval_fid", "sample_data", "imputation", "compute_nll_bpd"])
    a("--schedule_n", type=float, default=None)
    a("--nfe", default=512, type=int)
    a("--print_freq", type=int, default=50)
    a("--epsilon", type=float, default=0.001)
    a("--temperature_parameters", nargs="*", type=float, default=[1.0, 0.0, 0.0])
    a("--use_corrector_step", action="store_true")
    a("--corrector_parameters", nargs="*", type=float, default=[])
    a("--use_timestep_scheduler", action="store_true")
    a("--timestep_parameters", nargs="*", type=float, default=[])
    a(
        "--timestep_all_at_last",
        action="store_true",
        help="(mdfast) run timestep parameters with b = 0 as the seed does: every time maps to "
        "w(0) and everything is drawn at the last call",
    )
    a("--sampling_all", action="store_true")
    a("--eval_all", action="store_true")
    a("--split_index", default=0, type=int)
    a("--split_size", default=None, type=int)
    a("--subtoken_index", nargs="+", type=int, default=[0])
    a("--wandb", action="store_true")
    for flag in (
        "--wandb_project",
        "--wandb_id",
        "--wandb_entity",
        "--wandb_key",
        "--run_id",
        "--storage_path",
        "--cache_dir",
    ):
        a(flag, type=str, default="")
    a("--target_length", type=int, default=1)
    a("--base", type=int, default=None)
    a("--seq_length", type=int, default=None)
    a("--vocab_size", type=int, default=None)
    a("--carry_over", action="store_true")
    a("--super_token", action="store_true")
    a("--use_uniform_mixture", action="store_true")
    a("--mixture_classes", type=int, default=4)
    a("--from_huggingface", action="store_true")
    a("--inception_weights", default=None, help="(mdfast) local Inception-v3 FID weights file")
    a("--nll_times", type=int, default=512, help="(mdfast) K, time samples per image for NLL")
    return p


def _fail(msg: str) -> SystemExit:
    print(f"error: {msg}", file=sys.stderr)
    return SystemExit(2)


def preset_for(args) -> tuple[str, dict]:
    """(preset name, raw preset) for the seed flags, with their checks."""
    from mdfast.digits import prime_base
    from mdfast.experiments.prime.presets import image_preset

    dataset = _VARIANTS.get(args.dataset)
    if dataset is None:
        raise _fail(f"--dataset must be cifar10 or imagenet, got '{args.dataset}'")
    ell = args.target_length
    if ell < 1:
        raise _fail(f"--target_length must be >= 1, got {ell}")
    if args.super_token:
        if ell != 1:
            raise _fail("--super_token uses whole super-tokens: --target_length must be 1")
        variant, vocab, seq = "supertoken", 4096, 2048
    elif args.use_uniform_mixture:
        if ell != 1:
            raise _fail("--use_uniform_mixture is the MDM (ℓ = 1) baseline: --target_length 1")
        variant, vocab, seq = "mixture", 256, 3072
    else:
        variant, vocab, seq = ell, 256, 3072
    for flag, given, want in (
        ("--vocab_size", args.vocab_size, vocab),
        ("--seq_length", args.seq_length, seq),
    ):
        if given is not None and given != want:
            raise _fail(f"{flag} {given} does not match the data: this model needs {want}")
    base = prime_base(vocab, ell)
    if args.base is not None and args.base != base:
        raise _fail(
            f"--base {args.base} cannot be used with --target_length {ell} and C = {vocab}: "
            f"ℓ digits of base b cover C classes only for b = ceil(C^(1/ℓ)) = {base} (the seed "
            "recomputes it too)"
        )
    try:
        raw = image_preset(dataset, variant)
    except KeyError:  # an ℓ without a README recipe: the ℓ = 2 recipe with this ℓ
        raw = image_preset(dataset, 2)
        raw["model"].update(digits=ell, digit_vocab=base + 1)
        raw["objective"]["num_digits"] = ell
        raw["train"]["out_dir"] = f"runs/prime-{dataset}-l{ell}"
    if args.use_uniform_mixture:
        raw["model"]["num_labels"] = raw["objective"]["mixture_labels"] = args.mixture_classes
    name = f"prime-{dataset}-{variant if isinstance(variant, str) else f'l{ell}'}"
    return name, raw


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def _overrides(args, mode: str | None) -> list[str]:
    o = [
        f"data.root={args.data_path}",
        f"train.out_dir={args.output_dir}",
        f"train.seed={args.seed}",
        f"sample.seed={args.seed}",
        f"sample.steps={args.nfe}",
        f"sample.carry_over={args.carry_over}",
        f"sample.temperature_parameters={json.dumps(args.temperature_parameters)}",
        f"sample.corrector_parameters="
        f"{json.dumps(args.corrector_parameters if args.use_corrector_step else [])}",
        f"sample.timestep_parameters="
        f"{json.dumps(args.timestep_parameters if args.use_timestep_scheduler else [])}",
        f"sample.timestep_all_at_last={args.timestep_all_at_last}",
        f"sample.batch_size={args.batch_size}",
    ]
    if args.schedule_n is not None:
        o.append(f"objective.schedule_n={args.schedule_n}")
    if mode is None:
        o += [
            f"train.lr={args.lr}",
            f"train.betas={json.dumps(args.optimizer_betas)}",
            f"train.ema={0.999 if args.use_ema else 0.0}",
            f"train.batch_size={args.batch_size * _world() * args.accum_iter}",
            f"train.grad_accum={args.accum_iter}",
            f"train.wandb={args.wandb}",
        ]
        if args.device != "cuda":
            o.append(f"train.device={args.device}")
    return o


def _setup_dir(args) -> str:
    t = args.temperature_parameters
    name = (
        f"temp={t[0]}_temp_n={t[1]}_temp_b={t[2]}"
        if len(t) == 3
        else "temp=" + "_".join(map(str, t))
    )
    if args.use_corrector_step and args.corrector_parameters:
        c = args.corrector_parameters + [0.0] * (3 - len(args.corrector_parameters))
        name += f"_cor={c[0]}_cor_n={c[1]}_cor_b={c[2]}"
    if args.use_timestep_scheduler and args.timestep_parameters:
        s = args.timestep_parameters
        name += f"_ts={s[0]}_ts_n={s[1]}_ts_b={s[2]}"
    return f"{name}_step={args.nfe}" + ("_co" if args.carry_over else "")


def _train(args, name: str, cfg: dict) -> int:
    from mdfast.experiments.build import build_data, build_model, build_objective
    from mdfast.train import TrainConfig, train

    train_data, _ = build_data(cfg["data"])
    n_train = len(train_data["input_ids"])
    # the seed drops the last partial batch of each rank's shard
    steps_per_epoch = max(1, n_train // _world() // (args.batch_size * args.accum_iter))
    print(f"mdfast: {n_train} images, {steps_per_epoch} steps per epoch", file=sys.stderr)
    cfg["train"]["steps"] = args.epochs * steps_per_epoch
    cfg["train"]["ckpt_every"] = max(1, args.eval_frequency) * steps_per_epoch
    torch.manual_seed(args.seed)
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    if args.resume:
        if _is_released(args.resume):
            model = _released_model(args, cfg)
            objective.model.load_state_dict(model.state_dict())
            warnings.warn(
                f"mdfast: starting from the weights of the released checkpoint {args.resume} "
                "(its optimiser state and epoch are not restored)",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            cfg["train"]["resume"] = args.resume
    result = train(objective, train_data, TrainConfig(**cfg["train"]), full_config=cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"mdfast: {name} trained to step {result['step']}, checkpoint {result['checkpoint']}")
    return 0


def _is_released(path: str) -> bool:
    """Whether ``path`` is a released MDM-Prime ``.pth`` (else an mdfast training checkpoint,
    whose RNG states need the full unpickler)."""
    import pickle

    from mdfast.models.mdm_prime_checkpoint import (
        CheckpointMismatchError,
        is_mdm_prime_checkpoint,
        read_checkpoint,
    )

    try:
        return is_mdm_prime_checkpoint(read_checkpoint(path))
    except (pickle.UnpicklingError, CheckpointMismatchError):
        return False


def _released_model(args, cfg: dict):
    from mdfast.models.mdm_prime_checkpoint import load_mdm_prime_checkpoint

    m = cfg["model"]
    expect = {
        k: m[k]
        for k in ("digits", "num_classes", "tokens_per_pixel", "digit_vocab", "num_labels")
        if k in m
    }
    model, _ = load_mdm_prime_checkpoint(args.resume, use_ema=args.use_ema, expect=expect)
    return model


def _load_objective(args, cfg: dict):
    """The objective with the weights of ``--resume`` (an mdfast checkpoint or a released
    ``.pth``), EMA weights with ``--use_ema``; on the GPU when there is one."""
    from mdfast.experiments.build import build_model, build_objective
    from mdfast.train import checkpoint as ckpt_io
    from mdfast.train.ema import EMA
    from mdfast.train.trainer import setup_distributed

    if not args.resume:
        path = ckpt_io.latest_checkpoint(args.output_dir)
        if not path:
            raise _fail(f"--resume: no checkpoint given and none in --output_dir {args.output_dir}")
        args.resume = path
    if not Path(args.resume).is_file():
        raise _fail(f"--resume: checkpoint file '{args.resume}' not found")
    _, _, device = setup_distributed("" if args.device == "cuda" else args.device)
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    if _is_released(args.resume):
        objective.model = _released_model(args, cfg)
    else:
        state = ckpt_io.load(args.resume)
        stored = state.get("config", {})
        for sec in ("model", "objective"):
            if isinstance(stored.get(sec), dict) and stored[sec] != cfg[sec]:
                diff = {
                    k: (stored[sec].get(k), v)
                    for k, v in cfg[sec].items()
                    if stored[sec].get(k) != v
                }
                if set(diff) - {"schedule_n", "hflip"}:
                    raise _fail(
                        f"--resume {args.resume} was trained with other {sec} settings "
                        f"(checkpoint vs flags): {diff}"
                    )
        objective.load_state_dict(state["model"])
        if args.use_ema and state.get("ema") is not None:
            ema = EMA(objective, state["ema"]["decay"])
            ema.load_state_dict(state["ema"])
            ema.copy_to()
    return objective.to(device).eval()


def _eval(args, mode: str, cfg: dict) -> int:
    from mdfast.data.images import load_image_dataset
    from mdfast.experiments.prime import evaluation

    objective = _load_objective(args, cfg)
    settings = evaluation.sampler_settings(cfg["sample"])
    dataset, root = cfg["data"]["name"], cfg["data"]["root"]
    out = Path(args.output_dir)
    rank0 = int(os.environ.get("RANK", 0)) == 0
    if mode == "sample_data":
        n = (args.split_size or 6250) * (args.num_gpus if args.sampling_all else 1)
        sub = ("samples_all/" if args.sampling_all else "") + _setup_dir(args)
        target = out / "fid_samples" / sub
        first = []
        evaluation.generate(
            objective,
            settings,
            n,
            args.batch_size,
            out_dir=target,
            on_batch=lambda job, x: first.append(x) if job.index == 0 else None,
        )
        if first:
            evaluation.save_image_grid(first[0][:100].cpu(), target / "grid.png", nrow=10)
        result = {"mode": mode, "samples": n, "out": str(target)}
    elif mode == "eval_fid":
        result = _fid(args, objective, settings, dataset, root, out)
    elif mode == "compute_nll_bpd":
        images = load_image_dataset(dataset, root, "eval")["input_ids"]
        start = args.split_index * args.split_size if args.split_size else 0
        if args.split_size:
            images = images[start : start + args.split_size]
        result = {
            "mode": mode,
            **evaluation.nll_bpd(
                objective,
                images,
                num_times=args.nll_times,
                batch_size=args.batch_size,
                seed=args.seed,
                first_index=start,
            ),
        }
    else:
        images = load_image_dataset(dataset, root, "eval")["input_ids"][: args.fid_samples]
        no_corrector = replace(settings, corrector_parameters=())  # as the seed's imputation
        result = {
            "mode": mode,
            **evaluation.imputation(
                objective,
                images,
                args.subtoken_index,
                no_corrector,
                per_image=args.batch_size,
                out_dir=out / "imputation",
            ),
        }
    if rank0:
        print(json.dumps(result))
        (out / f"{mode}.json").write_text(json.dumps(result, indent=2))
    return 0


def _fid(args, objective, settings, dataset: str, root: str, out: Path) -> dict:
    import numpy as np

    from mdfast.data.images import load_image_dataset
    from mdfast.experiments.prime import evaluation
    from mdfast.metrics.fid import FID

    reference_split = "train" if dataset == "cifar10" else "eval"

    def reference():
        return load_image_dataset(dataset, root, reference_split)["input_ids"]

    sub = ("samples_all/" if (args.sampling_all or args.eval_all) else "") + _setup_dir(args)
    saved = sorted((out / "fid_samples" / sub).glob("batch_*.npy"))
    if not saved:
        r = evaluation.fid(
            objective,
            settings,
            args.fid_samples,
            args.batch_size,
            dataset=dataset,
            reference_images=reference,
            weights=args.inception_weights,
        )
        return {"mode": "eval_fid", "source": "fresh samples", **r}
    metric = FID(weights=args.inception_weights, batch_size=args.batch_size)
    ref = evaluation.reference_stats(metric, dataset, reference, None)

    def batches():
        for f in saved:
            yield torch.from_numpy(np.load(f)).permute(0, 3, 1, 2).contiguous()

    stats = metric.stats(batches())
    return {
        "mode": "eval_fid",
        "source": str(out / "fid_samples" / sub),
        "fid": stats.frechet(ref),
        "samples": stats.n,
        "reference_n": ref.n,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.from_huggingface:
        raise _fail(
            "--from_huggingface: mdfast never downloads. Download the checkpoint on a machine "
            "with network (huggingface.co/chen-hao-chao/mdm-prime) and pass the local .pth file "
            "as --resume"
        )
    from mdfast import experiments

    name, raw = preset_for(args)
    # parallel_sampling.py: no --mode, --sampling_all: sample, then FID of those samples
    modes = (
        [args.mode] if args.mode else (["sample_data", "eval_fid"] if args.sampling_all else [None])
    )
    try:
        cfg = experiments.apply_overrides(raw, _overrides(args, modes[0]))
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        if modes == [None]:
            return _train(args, name, cfg)
        for mode in modes:
            _eval(args, mode, cfg)
        return 0
    except (experiments.ConfigError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    finally:
        d = torch.distributed
        if d.is_available() and d.is_initialized():
            d.destroy_process_group()
