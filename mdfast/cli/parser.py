"""The ``mdfast`` command line: its sub-commands and their options."""

from __future__ import annotations

import argparse


def presets_epilog() -> str:
    from mdfast.experiments import preset_names

    return (
        "presets: " + ", ".join(preset_names()) + "\n"
        "overrides: section.key=value with section in model, objective, data, train, eval "
        "(e.g. train.steps=100 model.preset=medium); see --print-config"
    )


def corpora_epilog() -> str:
    from mdfast.experiments.text_data import CORPORA

    return (
        "corpus presets: " + ", ".join(sorted(CORPORA)) + "\n"
        "text training presets (their data section) work too, e.g. mdlm-owt-small.\n"
        "example: mdfast prepare-text openwebtext data.source=owt/ data.path=data/text/owt"
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="mdfast",
        description="Train and evaluate masked discrete diffusion models.",
        epilog=presets_epilog(),
        formatter_class=fmt,
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="{train,eval,sample,eval-samples,distill,prepare-text,presets}",
    )
    t = sub.add_parser("train", help="train a preset", epilog=presets_epilog(), formatter_class=fmt)
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
        epilog=presets_epilog(),
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
                        epilog=presets_epilog(), formatter_class=fmt)  # fmt: skip
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
    ds = sub.add_parser(
        "distill",
        help="few-step distillation: sdtt (SDTT / IM-SDTT), redi-data (couplings), redi",
        epilog=presets_epilog() + "\nexamples:\n"
        "  mdfast distill sdtt imsdtt-lm1b model.init_from=runs/mdlm-lm1b/ckpt-01000000.pt\n"
        "  mdfast distill redi-data imredi-lm1b model.init_from=IMSDTT.pt data.path=couplings\n"
        "  mdfast distill redi imredi-lm1b model.init_from=IMSDTT.pt data.path=couplings",
        formatter_class=fmt,
    )
    ds.add_argument("method", choices=["sdtt", "redi-data", "redi"])
    ds.add_argument("preset")
    ds.add_argument("overrides", nargs="*", help="section.key=value")
    ds.add_argument("--resume", nargs="?", const="auto", default=None,
                    help="sdtt / redi: resume from PATH, or the latest checkpoint in "
                    "train.out_dir")  # fmt: skip
    ds.add_argument("--print-config", action="store_true")
    ds.add_argument("--device", default="", help="redi-data: cuda, cuda:N or cpu")
    pt = sub.add_parser(
        "prepare-text",
        help="tokenize a local corpus into memory-mapped token files",
        epilog=corpora_epilog(),
        formatter_class=fmt,
    )
    pt.add_argument("preset", help="a corpus preset or a text training preset")
    pt.add_argument("overrides", nargs="*", help="data.key=value (data.source=PATH, data.path=DIR)")
    pt.add_argument("--print-config", action="store_true")
    sub.add_parser("presets", help="list the presets")
    return p
