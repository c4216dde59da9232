"""Small text data in the real on-disk formats, written by the tests: GPT-2 byte-level BPE files
(``vocab.json`` + ``merges.txt`` or ``encoder.json`` + ``vocab.bpe``), a BERT ``vocab.txt``, and
corpora as jsonl / parquet / arrow / text / ``save_to_disk``."""

from __future__ import annotations

import json
import os

# byte-level BPE: the 256 byte symbols, then "th", "the", "Ġthe", then <|endoftext|>
MERGES = ["t h", "th e", "\u0120 the"]
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", ",", "."]


def write_bpe(directory, names=("vocab.json", "merges.txt")) -> dict:
    from tokenizers import pre_tokenizers

    os.makedirs(directory, exist_ok=True)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)}
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(directory, names[0]), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, names[1]), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return vocab


def write_bert(directory) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(BERT_VOCAB) + "\n")


def docs(n: int, seed: int = 0) -> list[str]:
    """n short English-ish documents made of the few words the tiny BPE merges."""
    import random

    rnd = random.Random(seed)
    words = ["the", "then", "other", "at", "hat", "tea", "eat", "the the"]
    return [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def write_jsonl(path, texts, field: str = "text") -> None:
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({field: t, "id": len(t)}) + "\n")


def tiny_text_run(root, n_docs: int, seed: int) -> tuple[int, list[str], list[str]]:
    """A jsonl corpus of ``n_docs`` documents and a tiny GPT-2-format BPE under ``root``: the
    vocabulary size v (the mask id), the ``data.*`` overrides that prepare it under
    ``root/prep`` (length 16) and the ``model.*`` / ``train.*`` overrides of a tiny model."""
    v = len(write_bpe(root / "bpe"))
    write_jsonl(root / "c.jsonl", docs(n_docs, seed=seed))
    data = [f"data.source={root / 'c.jsonl'}", f"data.tokenizer={root / 'bpe'}",
            "data.length=16", "data.valid_docs=20", "data.num_proc=1",
            f"data.cache_dir={root / 'cache'}", f"data.path={root / 'prep'}"]  # fmt: skip
    model = [f"model.vocab_size={v + 1}", "model.hidden_dim=32", "model.cond_dim=16",
             "model.n_heads=2", "model.n_blocks=1", "train.batch_size=8", "train.progress=false",
             "train.warmup=0", "train.ema=0"]  # fmt: skip
    return v, data, model
