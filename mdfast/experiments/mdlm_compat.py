"""Run an MDLM / ReMDM README command (Hydra keys) with mdfast.

    python -m mdfast.experiments.mdlm_compat mode=ppl_eval data=openwebtext-split model=small \\
        parameterization=subs backbone=dit model.length=1024 \\
        eval.checkpoint_path=/path/to/mdlm.ckpt loader.eval_batch_size=16

maps the keys of ``kuleshov-group/mdlm`` / ``kuleshov-group/remdm`` (``main.py`` with
``configs/config.yaml``) onto an ``mdfast train|eval|sample PRESET section.key=value ...``
command and runs it (``--dry-run`` prints it instead). ``mode``: ``train`` → ``mdfast train``,
``ppl_eval`` → ``mdfast eval``, ``sample_eval`` → ``mdfast sample``. The preset comes from
``parameterization`` (``subs`` / ``sedd`` / ``ar``), ``data`` and ``model``; a ``ppl_eval`` on
another corpus than the training one (``data=wikitext103``, ``ptb``, ...) is MDLM's zero-shot
evaluation of the OpenWebText model on that prepared corpus. Keys with no meaning here (wandb,
hydra, generative-perplexity settings, ...) are accepted and listed as ignored; an unknown key
is an error that lists the known ones. ``mdfast.<section>.<key>=value`` passes an mdfast option
through (e.g. ``mdfast.data.path=data/text/owt``).

The data must be prepared first (``mdfast prepare-text``; nothing is downloaded), and
``eval.checkpoint_path`` must be a local file or directory: an MDLM/SEDD/AR Lightning ``.ckpt``,
an HF-layout directory (``backbone=hf_dit``), or an mdfast ``ckpt-*.pt``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["translate"]

_MODES = {"train": "train", "ppl_eval": "eval", "sample_eval": "sample"}
_ZERO_SHOT_DATA = {
    "wikitext103": "wikitext103", "wikitext2": "wikitext2", "ptb": "ptb", "lambada": "lambada",
    "lm1b-gpt2": "lm1b-gpt2", "ag_news": "ag-news", "scientific_papers_pubmed": "pubmed",
    "scientific_papers_arxiv": "arxiv",
}  # fmt: skip
_OWT = ("openwebtext-split", "openwebtext", "openwebtext-streaming")
_LM1B = ("lm1b", "lm1b-streaming")
_REMDM = {"mdlm": None, "remdm-cap": "remdm-cap", "remdm-rescale": "remdm-rescale",
          "remdm-conf": "remdm-conf", "remdm-loop": "remdm-loop",
          "forward-backward": "remdm-fb"}  # fmt: skip

# MDLM key -> list of mdfast "section.key" it sets (value passed through)
_DIRECT = {
    "sampling.steps": ["sample.steps"],
    "sampling.num_sample_batches": ["sample.num_batches"],
    "sampling.semi_ar": ["sample.semi_ar"],
    "sampling.stride_length": ["sample.stride_length"],
    "sampling.num_strides": ["sample.num_strides"],
    "sampling.noise_removal": ["sample.noise_removal"],
    "sampling.nucleus_p": ["sample.top_p"],
    "sampling.eta": ["sample.eta"],
    "sampling.t_on": ["sample.t_on"],
    "sampling.t_off": ["sample.t_off"],
    "sampling.alpha_on": ["sample.alpha_on"],
    "loader.global_batch_size": ["train.batch_size"],
    "loader.batch_size": ["train.micro_batch_size", "eval.batch_size"],
    "loader.eval_batch_size": ["eval.batch_size", "sample.batch_size"],
    "T": ["objective.T"],
    "time_conditioning": ["model.time_conditioning"],
    "seed": ["train.seed", "eval.seed", "sample.seed"],
    "training.ema": ["train.ema"],
    "training.antithetic_sampling": ["objective.antithetic"],
    "training.sampling_eps": ["objective.sampling_eps"],
    "optim.lr": ["train.lr"],
    "optim.weight_decay": ["train.weight_decay"],
    "trainer.max_steps": ["train.steps"],
    "trainer.gradient_clip_val": ["train.clip"],
    "trainer.accumulate_grad_batches": ["train.grad_accum"],
    "lr_scheduler.num_warmup_steps": ["train.warmup"],
}
# accepted for compatibility, no effect in mdfast
_IGNORED_PREFIXES = ("wandb.", "hydra.", "checkpointing.", "callbacks.", "strategy.")
_IGNORED = {
    "eval.compute_generative_perplexity", "eval.perplexity_batch_size",
    "eval.gen_ppl_eval_model_name_or_path", "eval.compute_perplexity_on_sanity",
    "eval.generate_samples", "sampling.num_sample_log", "sampling.generated_seqs_path",
    "loader.num_workers", "loader.pin_memory", "loader.eval_global_batch_size",
    "trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.log_every_n_steps",
    "trainer.val_check_interval", "trainer.num_sanity_val_steps", "trainer.limit_train_batches",
    "trainer.limit_val_batches", "data.cache_dir", "data.streaming", "noise", "noise.type",
    "diffusion", "subs_masking",
}  # fmt: skip
_SPECIAL = {"mode", "data", "model", "parameterization", "backbone", "model.length",
            "eval.checkpoint_path", "eval.disable_ema", "sampling.predictor", "sampling.sampler",
            "sampling.dfm", "trainer.precision"}  # fmt: skip


def _bool(v: str) -> bool:
    return v.strip().lower() in ("true", "1", "yes")


def _known() -> list[str]:
    return sorted({*_SPECIAL, *_DIRECT, *_IGNORED} | {p + "*" for p in _IGNORED_PREFIXES})


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """MDLM/ReMDM ``key=value`` arguments → (mdfast CLI argv, ignored keys)."""
    keys: dict[str, str] = {}
    for a in argv:
        if "=" not in a:
            raise ValueError(f"mdfast mdlm_compat: argument '{a}' is not key=value")
        k, v = a.split("=", 1)
        keys[k.lstrip("+")] = v.strip().strip('"').strip("'")
    passthrough = [f"{k[len('mdfast.') :]}={v}" for k, v in keys.items() if k.startswith("mdfast.")]
    ignored, unknown = [], []
    for k in keys:
        if k.startswith("mdfast.") or k in _SPECIAL or k in _DIRECT:
            continue
        if k in _IGNORED or k.startswith(_IGNORED_PREFIXES):
            ignored.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(
            f"mdfast mdlm_compat: unknown key(s) {unknown}; known MDLM/ReMDM keys: {_known()}"
        )
    mode = keys.get("mode", "train")
    if mode not in _MODES:
        raise ValueError(f"mdfast mdlm_compat: mode must be one of {sorted(_MODES)}, got '{mode}'")
    param = keys.get("parameterization", "subs")
    backbone = keys.get("backbone", "dit")
    data = keys.get("data", "openwebtext-split")
    size = keys.get("model", "small")
    if param == "d3pm" or backbone == "dimamba" or data.startswith("text8"):
        raise ValueError(
            f"mdfast mdlm_compat: {param=} / {backbone=} / {data=} is not supported (mdfast has "
            "the SUBS, SEDD and AR parameterizations with the DiT backbone, OWT/LM1B data)"
        )
    if param not in ("subs", "sedd", "ar"):
        raise ValueError(f"mdfast mdlm_compat: unknown parameterization '{param}'")
    if size not in ("small", "medium", "small-ar", "tiny", "tiny-ar"):
        raise ValueError(f"mdfast mdlm_compat: unknown model '{size}'")
    zero_shot = data in _ZERO_SHOT_DATA
    if data not in _OWT and data not in _LM1B and not zero_shot:
        raise ValueError(
            f"mdfast mdlm_compat: unknown data '{data}'; known: "
            f"{sorted([*_OWT, *_LM1B, *_ZERO_SHOT_DATA])}"
        )
    if zero_shot and mode != "ppl_eval":
        raise ValueError(f"mdfast mdlm_compat: data={data} is an evaluation corpus (mode=ppl_eval)")
    out: list[str] = []
    if data in _LM1B:
        if param != "subs":
            raise ValueError("mdfast mdlm_compat: LM1B has the MDLM (subs) preset only")
        preset = "mdlm-lm1b"
    elif param == "ar" or backbone == "ar":
        preset = "ar-owt-small"
    elif param == "sedd":
        preset = "sedd-owt-small"
    else:
        preset = "mdlm-owt-medium" if size == "medium" else "mdlm-owt-small"
    if size.startswith("tiny"):
        out += ["model.preset=tiny"]
    if zero_shot:
        out += [f"eval.datasets=[{_ZERO_SHOT_DATA[data]}]"]
    if "model.length" in keys:
        out += [f"model.model_length={keys['model.length']}"]
        if not zero_shot:
            out += [f"data.length={keys['model.length']}"]
    ckpt = keys.get("eval.checkpoint_path", "")
    if ckpt:
        if not os.path.exists(ckpt):
            raise FileNotFoundError(
                f"mdfast mdlm_compat: eval.checkpoint_path '{ckpt}' is not a local file or "
                "directory (mdfast never downloads: save the HF repository or the .ckpt locally)"
            )
        if os.path.basename(ckpt).startswith("ckpt-") and ckpt.endswith(".pt"):
            out += [f"{_MODES[mode]}.ckpt={ckpt}" if mode != "train" else f"train.resume={ckpt}"]
        else:
            out += [f"model.init_from={ckpt}"]
    if "eval.disable_ema" in keys and _bool(keys["eval.disable_ema"]):
        out += ["eval.use_ema=false", "sample.use_ema=false"]
    if "trainer.precision" in keys:
        out += [f"train.precision={'bf16' if 'bf16' in keys['trainer.precision'] else 'fp32'}"]
    sampler = {"ddpm": "ddpm", "ddpm_cache": "ddpm_cache", "analytic": "analytic"}
    pred = keys.get("sampling.predictor")
    if pred is not None:
        if pred not in sampler:
            raise ValueError(f"mdfast mdlm_compat: unknown sampling.predictor '{pred}'")
        out += [f"sample.sampler={sampler[pred]}"]
    remdm = keys.get("sampling.sampler")
    if remdm is not None:
        if remdm not in _REMDM:
            raise ValueError(
                f"mdfast mdlm_compat: unknown sampling.sampler '{remdm}'; known: {sorted(_REMDM)}"
            )
        if _REMDM[remdm]:
            out += [f"sample.sampler={_REMDM[remdm]}"]
    if "sampling.dfm" in keys and _bool(keys["sampling.dfm"]):
        out += ["sample.sampler=remdm-dfm"]
    for k, targets in _DIRECT.items():
        if k in keys:
            section = {"train": "train", "ppl_eval": "eval", "sample_eval": "sample"}[mode]
            for t in targets:
                if t.split(".")[0] in (section, "model", "objective", "data"):
                    out.append(f"{t}={keys[k]}")
    return [_MODES[mode], preset, *out, *passthrough], ignored


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    try:
        cmd, ignored = translate(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ignored:
        print(f"mdfast mdlm_compat: ignoring {ignored} (no effect in mdfast)", file=sys.stderr)
    print("mdfast " + " ".join(cmd), file=sys.stderr)
    if dry:
        print("mdfast " + " ".join(cmd))
        return 0
    from mdfast.cli import main as cli_main

    return cli_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
