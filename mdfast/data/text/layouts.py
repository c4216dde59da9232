"""MDLM's two sequence layouts and its detokenizers.

**wrap** (OpenWebText, the zero-shot corpora): every document's tokens are followed by EOS, the
documents are concatenated into one stream, and the stream is cut into chunks of ``L − 2``
tokens; each row is ``[BOS] chunk [EOS]``. MDLM's ``_group_texts`` does this within each map
batch of 1000 documents and drops each batch's remainder; here the stream runs over the whole
split (only the final remainder is dropped), so the rows do not depend on how the work was split
between processes. Every position is a real token (no padding, attention mask all ones).

**pad** (LM1B): one document (sentence) per row, ``[BOS] tokens[: L − 2] [EOS]`` then padding up
to ``L``; the attention mask covers the ``min(n + 2, L)`` real tokens (MDLM: ``padding=
'max_length', truncation=True, add_special_tokens=True``).

Detokenizers undo the pre-tokenised spacing of LM1B, WikiText, PTB, LAMBADA and the scientific
papers before GPT-2/BERT tokenisation, with the same rules as MDLM's ``dataloader.py``.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["DETOKENIZERS", "LAYOUTS", "PadPacker", "WrapPacker", "detokenize", "make_packer"]

LAYOUTS = ("wrap", "pad")


# --- detokenizers: ordered rules, ("s", old, new) plain replace, ("re", pattern, repl) regex ----

_WT = [
    ("s", "s '", "s'"),
    ("re", r"/' [0-9]/", r"/'[0-9]/"),
    ("s", " @-@ ", "-"),
    ("s", " @,@ ", ","),
    ("s", " @.@ ", "."),
    ("s", " : ", ": "),
    ("s", " ; ", "; "),
    ("s", " . ", ". "),
    ("s", " ! ", "! "),
    ("s", " ? ", "? "),
    ("s", " , ", ", "),
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"),
    ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"),
    ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    ("s", "= = = =", "===="),
    ("s", "= = =", "==="),
    ("s", "= =", "=="),
    ("s", " \u00b0 ", "\u00b0"),
    ("s", " \n", "\n"),
    ("s", "\n ", "\n"),
    ("s", " N ", " 1 "),
    ("s", " 's", "'s"),
]

_PTB = [
    ("s", " 's", "'s"),
    ("s", "s ' ", "s' "),
    ("s", " n't", "n't"),
    ("s", " \n ", "\n"),
    ("s", "\\/", "/"),
    *[("s", " N ", " 1 ")] * 10,
    ("s", "$ 1", "$1"),
    ("s", "# 1", "#1"),
    ("s", "<unk>", "?"),
]

_LM1B = [
    ("s", "http : / / ", "http://"),
    ("s", "https : / / ", "https://"),
    ("re", r" \'(\w+)", r"'\1"),
    ("re", r" (\w+) \. ", r" \1. "),
    ("re", r" (\w+) \.$", r" \1."),
    ("s", " ? ", "? "),
    ("re", r" \?$", "?"),
    ("s", " ! ", "! "),
    ("re", r" \!$", "!"),
    ("s", " , ", ", "),
    ("s", " : ", ": "),
    ("s", " ; ", "; "),
    ("s", " / ", "/"),
    ("re", r"\" ([^\"]+) \"", r'"\1"'),
    ("re", r"\' ([^\']+) \'", r"'\1'"),
    ("re", r"\( ([^\(\)]+) \)", r"(\1)"),
    ("re", r"\[ ([^\[\]]+) \]", r"[\1]"),
    ("s", "$ ", "$"),
    ("s", "\u00a3 ", "\u00a3"),
]

_LAMBADA = [("s", "\u201c", '"'), ("s", "\u201d", '"')]


def _compile(rules):
    return [(k, re.compile(a) if k == "re" else a, b) for k, a, b in rules]


def _apply(rules, text: str) -> str:
    for kind, a, b in rules:
        text = a.sub(b, text) if kind == "re" else text.replace(a, b)
    return text


_RULES = {
    "wikitext": _compile(_WT),
    "ptb": _compile(_PTB),
    "lm1b": _compile(_LM1B),
    "lambada": _compile(_LAMBADA),
}


def _lambada(text: str) -> str:
    return "\n" + _apply(_RULES["lambada"], text).strip()


def _scientific_papers(text: str) -> str:
    return _apply(_RULES["lm1b"], _apply(_RULES["wikitext"], text))


DETOKENIZERS = {
    "": lambda s: s,
    "wikitext": lambda s: _apply(_RULES["wikitext"], s),
    "ptb": lambda s: _apply(_RULES["ptb"], s),
    "lm1b": lambda s: _apply(_RULES["lm1b"], s),
    "lambada": _lambada,
    "scientific_papers": _scientific_papers,
}


def detokenize(name: str, text: str) -> str:
    if name not in DETOKENIZERS:
        raise ValueError(
            f"mdfast: unknown data.detokenizer '{name}'; valid: {sorted(k for k in DETOKENIZERS)}"
        )
    return DETOKENIZERS[name](text)


# --- packers -----------------------------------------------------------------------------------


class WrapPacker:
    """Streams documents into ``[BOS] chunk [EOS]`` rows of length ``L`` (see module doc).
    ``carry`` (the tokens not yet in a row) is all the state a resumed run needs."""

    def __init__(self, length: int, bos: int, eos: int, carry=None):
        if length < 3:
            raise ValueError(f"mdfast: data.length must be >= 3 for the wrap layout, got {length}")
        self.length, self.bos, self.eos = length, bos, eos
        self.carry = np.asarray([] if carry is None else carry, dtype=np.int64)

    def add(self, docs: list) -> tuple[np.ndarray, None]:
        """Rows [n, L] completed by ``docs`` (lists of token ids), and no lengths."""
        body = self.length - 2
        parts = [self.carry]
        for d in docs:
            parts += [np.asarray(d, dtype=np.int64), np.asarray([self.eos], dtype=np.int64)]
        stream = np.concatenate(parts)
        n = len(stream) // body
        self.carry = stream[n * body :].copy()
        rows = np.empty((n, self.length), dtype=np.int64)
        rows[:, 0] = self.bos
        rows[:, -1] = self.eos
        rows[:, 1:-1] = stream[: n * body].reshape(n, body)
        return rows, None

    def state(self) -> list:
        return self.carry.tolist()


class PadPacker:
    """One ``[BOS] tokens[: L − 2] [EOS] pad…`` row per document, with its length."""

    def __init__(self, length: int, bos: int, eos: int, pad: int, carry=None):
        if length < 2:
            raise ValueError(f"mdfast: data.length must be >= 2 for the pad layout, got {length}")
        self.length, self.bos, self.eos, self.pad = length, bos, eos, pad

    def add(self, docs: list) -> tuple[np.ndarray, np.ndarray]:
        rows = np.full((len(docs), self.length), self.pad, dtype=np.int64)
        lengths = np.empty(len(docs), dtype=np.int64)
        for i, d in enumerate(docs):
            body = np.asarray(d[: self.length - 2], dtype=np.int64)
            n = len(body) + 2
            rows[i, 0] = self.bos
            rows[i, 1 : n - 1] = body
            rows[i, n - 1] = self.eos
            lengths[i] = n
        return rows, lengths

    def state(self) -> list:
        return []


def make_packer(layout: str, length: int, tok, carry=None):
    if layout == "wrap":
        return WrapPacker(length, tok.bos_id, tok.eos_id, carry)
    if layout == "pad":
        return PadPacker(length, tok.bos_id, tok.eos_id, tok.pad_id)
    raise ValueError(f"mdfast: unknown data.layout '{layout}'; valid: {list(LAYOUTS)}")
