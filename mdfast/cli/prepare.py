"""``mdfast prepare-text PRESET data.source=PATH data.path=DIR``: a corpus into memory-mapped
token files (:func:`mdfast.data.text.prepare_text`)."""

from __future__ import annotations

import json


def prepare_text_command(args) -> int:
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
