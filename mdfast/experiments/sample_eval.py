"""``mdfast eval-samples SAMPLES.jsonl``: gen PPL, entropy and MAUVE of a file written by
``mdfast sample`` (the metrics of :mod:`mdfast.metrics.text`).

* the judge (``--judge``): a local Hugging Face causal-LM directory (gpt2-large in the papers), or
  an mdfast AR checkpoint (``ckpt-*.pt`` or its run directory), EMA weights;
* gen PPL over the samples' texts (MDLM's recipe, ``max_length`` = the samples' length); for
  conditional samples (a fixed prefix) over the continuation given the prefix;
* entropy of the generated ids (for conditional samples: of the generated positions);
* MAUVE (``--references DIR``, a prepared split; or, for samples conditioned on prefixes of a
  prepared split, their true continuations) with features from the same judge.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from mdfast.experiments.registry import ConfigError
from mdfast.metrics import text as mt

__all__ = ["evaluate_samples", "load_judge", "main", "reference_texts"]


def _checkpoint_path(spec: str) -> str | None:
    if os.path.isfile(spec) and spec.endswith(".pt"):
        return spec
    if os.path.isdir(spec):
        from mdfast.train import checkpoint as ckpt_io

        return ckpt_io.latest_checkpoint(spec)
    return None


def load_judge(spec: str, device, use_ema: bool = True):
    """An HF directory (``config.json``) or an mdfast AR checkpoint / run directory."""
    if not os.path.exists(spec):
        raise FileNotFoundError(f"mdfast: --judge '{spec}' does not exist")
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "config.json")):
        try:
            return mt.load_hf_judge(spec, device=device)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"mdfast: --judge: {str(e).removeprefix('mdfast: ')}") from None
    path = _checkpoint_path(spec)
    if path is None:
        raise FileNotFoundError(
            f"mdfast: --judge '{spec}' is neither a Hugging Face model directory (config.json, "
            "tokenizer, weights) nor an mdfast checkpoint / run directory with ckpt-*.pt"
        )
    from mdfast.data.text import load_tokenizer
    from mdfast.experiments.build import build_model, build_objective
    from mdfast.train import checkpoint as ckpt_io
    from mdfast.train.ema import EMA

    state = ckpt_io.load(path)
    cfg = state.get("config")
    if not isinstance(cfg, dict) or cfg.get("objective", {}).get("name") != "ar":
        name = cfg.get("objective", {}).get("name") if isinstance(cfg, dict) else None
        raise ConfigError(
            f"mdfast: --judge '{path}' is a '{name}' checkpoint; a judge is a causal LM (an mdfast "
            "'ar' checkpoint or a Hugging Face directory)"
        )
    objective = build_objective(cfg["objective"], build_model(cfg["model"]))
    objective.load_state_dict(state["model"])
    if use_ema and state.get("ema") is not None:
        ema = EMA(objective, state["ema"]["decay"])
        ema.load_state_dict(state["ema"])
        ema.copy_to()
    objective.eval().to(device)
    tok = load_tokenizer(cfg["data"]["tokenizer"])
    return mt.ModelJudge(objective.model, tok, exclude_index=cfg["objective"]["exclude_index"],
                         name=os.path.relpath(path))  # fmt: skip


def reference_texts(path: str, split: str, n: int, tokenizer: str | None = None) -> list[str]:
    """``n`` rows of a prepared split, evenly spaced over it, decoded with its tokenizer
    (special tokens kept, as the samples are). ``tokenizer``: the samples' tokenizer name; a
    split prepared with another raises."""
    from mdfast.data.text import TokenFile, load_tokenizer

    ds = TokenFile(path, split)
    name = ds.header.get("settings", {}).get("tokenizer", {}).get("name")
    if tokenizer is not None and name is not None and name != tokenizer:
        raise ConfigError(
            f"mdfast: --references '{path}' was prepared with tokenizer '{name}', the samples "
            f"with '{tokenizer}'"
        )
    tok = load_tokenizer(name or "gpt2")
    rows = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)
    ids = ds.__getitems__(rows)["input_ids"]
    return [tok.decode(r) for r in ids.tolist()]


def _check_records(records: list[dict], path: str) -> None:
    if not records:
        raise ValueError(f"mdfast: '{path}' holds no samples")
    for key in ("ids", "text", "tokenizer"):
        if any(key not in r for r in records):
            raise ValueError(
                f"mdfast: '{path}' is not a samples file of mdfast sample (no '{key}')"
            )
    toks = sorted({str(r["tokenizer"]) for r in records})
    if len(toks) > 1:
        raise ValueError(f"mdfast: '{path}' mixes samples of tokenizers {toks}")
    if records[0]["text"] is None:
        raise ValueError(f"mdfast: '{path}' has no texts (sampled without a tokenizer)")


def evaluate_samples(
    records: list[dict],
    judge,
    *,
    references: list[str] | None = None,
    reference_features=None,
    mauve: bool = True,
    batch_size: int = 8,
    max_length: int | None = None,
    autocast_dtype=None,
    progress: bool = False,
    path: str = "samples",
) -> dict:
    """gen PPL, entropy (and MAUVE against ``references`` texts or precomputed
    ``reference_features``) of ``records`` (lines of a samples file)."""
    _check_records(records, path)
    records = sorted(records, key=lambda r: r.get("index", 0))
    length = max_length or max(len(r["ids"]) for r in records)
    cond = all(r.get("prefix_ids") for r in records)
    tok = None
    if cond:
        from mdfast.data.text import load_tokenizer

        tok = load_tokenizer(records[0]["tokenizer"])
    texts, prompts, generated = [], [], []
    for r in records:
        if cond:
            fixed = set(r.get("fixed", range(len(r["prefix_ids"]))))
            P = len(r["prefix_ids"])
            prompts.append(tok.decode(r["ids"][:P]))
            texts.append(tok.decode(r["ids"][P:]))
            generated.append([t for i, t in enumerate(r["ids"]) if i not in fixed])
        else:
            texts.append(r["text"])
            generated.append(r["ids"])
    kw = {"batch_size": batch_size, "autocast_dtype": autocast_dtype, "progress": progress}
    ppl = mt.gen_ppl(judge, texts, max_length=length, prompts=prompts if cond else None, **kw)
    out = {"samples": len(records), "gen_ppl": ppl["gen_ppl"], "nll": ppl["nll"],
           "tokens": ppl["tokens"], "entropy": mt.entropy(generated),
           "conditional": cond}  # fmt: skip
    if cond and references is None and reference_features is None:
        if all(r.get("reference_ids") for r in records):
            references = [tok.decode(r["reference_ids"]) for r in records]
    if mauve and (references is not None or reference_features is not None):
        q = mt.features(judge, texts, **kw)
        p = reference_features
        if p is None:
            p = mt.features(judge, references, **kw)
        out.update({f"mauve_{k}" if k != "mauve" else k: v for k, v in mt.mauve(p, q).items()})
        out["mauve_references"] = len(p)
    return out


def main(args) -> int:
    """The ``mdfast eval-samples`` command (argparse namespace of :mod:`mdfast.cli`)."""
    from mdfast.experiments.generation import read_samples
    from mdfast.train.trainer import setup_distributed

    if not os.path.isfile(args.samples):
        raise FileNotFoundError(f"mdfast: samples file '{args.samples}' does not exist")
    records = read_samples(args.samples)
    _check_records(records, args.samples)
    _, _, dev = setup_distributed(args.device or "")
    judge = load_judge(args.judge, dev)
    refs = None
    if args.references:
        refs = reference_texts(args.references, args.split, len(records),
                               tokenizer=records[0]["tokenizer"])  # fmt: skip
    bf16 = args.precision == "bf16" or (args.precision == "auto" and dev.type == "cuda")
    res = evaluate_samples(records, judge, references=refs, mauve=not args.no_mauve,
                           batch_size=args.batch_size, max_length=args.max_length or None,
                           autocast_dtype=torch.bfloat16 if bf16 else None,
                           progress=sys.stderr.isatty(), path=args.samples)  # fmt: skip
    first = records[0]
    out = {"samples_file": args.samples, "judge": judge.describe(),
           "references": args.references or None, "objective": first.get("objective"),
           "sampler": first.get("sampler"), "settings": first.get("settings"),
           "nfe_mean": float(np.mean([r.get("nfe", 0) for r in records])), **res}  # fmt: skip
    print(json.dumps(out))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    return 0
