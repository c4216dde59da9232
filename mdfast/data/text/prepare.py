"""Corpus → prepared token files (``mdfast prepare-text``).

:func:`prepare_text` reads a corpus (:mod:`.corpus`), detokenizes and tokenizes it in parallel
worker processes (each worker holds its own ``tokenizers`` tokenizer and reads its slice of
documents straight from the Arrow files), packs the documents in order into rows (:mod:`.layouts`)
and writes each split as a memory-mappable file with a JSON header (:mod:`.tokens`).

Splits: with ``valid_docs = N > 0`` the last N documents of ``train_split`` are held out as the
validation split (MDLM's ``openwebtext-split``: ``train[-100000:]``); otherwise the corpus's own
``valid_split`` is used (LM1B ``test``, WikiText ``validation``, ...).

Interruption and resume: rows go to ``<split>.bin.partial``; every few seconds the file is
flushed and fsynced and ``<split>.progress.json`` records how many documents are done, how many
rows are written and the packer's carry. Running the same command again truncates the partial
file to the recorded rows and continues from there. Only a complete split is renamed to
``<split>.bin`` and gets its header, so no half-written file ever carries the final name.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

from mdfast.data.text.corpus import corpus_fingerprint, read_corpus, resolve_source, text_column
from mdfast.data.text.layouts import detokenize, make_packer
from mdfast.data.text.tokenizer import load_tokenizer
from mdfast.data.text.tokens import HEADER_FORMAT, read_header, split_paths

__all__ = ["prepare_text"]

_SAVE_EVERY_S = 5.0


# --- worker side -------------------------------------------------------------------------------

_W: dict = {}


def _init_worker(tokenizer: str, docs, field: str, detok: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _W.update(tok=load_tokenizer(tokenizer), docs=docs, field=field, detok=detok)


def _encode_range(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Documents [a, b) → (flat int32 ids, per-document lengths, empty documents skipped)."""
    a, b = span
    texts = _W["docs"][a:b][_W["field"]]
    texts = [detokenize(_W["detok"], t) for t in texts if t is not None]
    skipped = (b - a) - len(texts)
    kept = [t for t in texts if t.strip()]
    skipped += len(texts) - len(kept)
    ids = _W["tok"].encode_batch(kept) if kept else []
    lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((i for x in ids for i in x), dtype=np.int32, count=int(lens.sum()))
    return flat, lens, skipped


# --- main side ---------------------------------------------------------------------------------


def _atomic_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _split_plan(corpus: dict, train_split: str, valid_split: str, valid_docs: int, source: str):
    """our split name -> (corpus split name, dataset, first doc, end doc)."""

    def get(name):
        if name not in corpus:
            raise KeyError(
                f"mdfast: corpus '{source}' has no split '{name}'; its splits: {sorted(corpus)} "
                "(set data.train_split / data.valid_split, or data.valid_docs=N to hold out the "
                "last N documents of the train split)"
            )
        return corpus[name]

    plan = {}
    base = get(train_split) if (valid_docs > 0 or train_split in corpus) else None
    if valid_docs > 0:
        n = len(base)
        if valid_docs >= n:
            raise ValueError(
                f"mdfast: data.valid_docs={valid_docs} holds out every document of split "
                f"'{train_split}' ({n} documents)"
            )
        plan["train"] = (train_split, base, 0, n - valid_docs)
        plan["validation"] = (train_split, base, n - valid_docs, n)
    else:
        if base is not None:
            plan["train"] = (train_split, base, 0, len(base))
        if valid_split in corpus:
            v = corpus[valid_split]
            plan["validation"] = (valid_split, v, 0, len(v))
    return plan, get


def prepare_text(
    source: str,
    path: str,
    *,
    tokenizer: str = "gpt2",
    layout: str = "wrap",
    length: int = 1024,
    detokenizer: str = "",
    text_field: str = "text",
    sample_by: str = "line",
    train_split: str = "train",
    valid_split: str = "validation",
    valid_docs: int = 0,
    splits=("train", "validation"),
    corpus: str = "",
    num_proc: int = 0,
    chunk_docs: int = 1000,
    cache_dir: str = "",
    overwrite: bool = False,
    progress: bool = True,
    **_ignored,
) -> dict:
    """Prepare ``splits`` of the corpus at ``source`` into the directory ``path``; returns
    ``{split: header}``. See the module docstring; ``num_proc=0`` uses every CPU."""
    tok = load_tokenizer(tokenizer)
    detokenize(detokenizer, "")  # validates the name before any work
    make_packer(layout, length, tok)
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    for s in splits:
        if s not in ("train", "validation"):
            raise ValueError(f"mdfast: data.splits entries must be train/validation, got '{s}'")
    docs = read_corpus(source, sample_by=sample_by, cache_dir=cache_dir or None)
    plan, get = _split_plan(docs, train_split, valid_split, valid_docs, source)
    for s in splits:
        if s not in plan:
            get(train_split if s == "train" else valid_split)  # raises the clear error
    os.makedirs(path, exist_ok=True)
    source_fp = corpus_fingerprint(source)
    out = {}
    for s in splits:
        name, ds, a, b = plan[s]
        text_column(ds, text_field)
        settings = {
            "tokenizer": tok.describe(),
            "layout": layout,
            "length": int(length),
            "detokenizer": detokenizer,
            "text_field": text_field,
            "sample_by": sample_by,
            "source": {"path": os.path.abspath(resolve_source(source)), "split": name,
                       "documents": [a, b], "files": source_fp},
        }  # fmt: skip
        out[s] = _prepare_split(
            tok, ds, a, b, path, s, settings, corpus, num_proc, chunk_docs, overwrite, progress
        )
    return out


def _prepare_split(tok, ds, a, b, path, split, settings, corpus, num_proc, chunk, overwrite,
                   progress) -> dict:  # fmt: skip
    files = split_paths(path, split)
    partial, lpartial = files["tokens"] + ".partial", files["lengths"] + ".partial"
    prog_path = os.path.join(path, f"{split}.progress.json")
    if os.path.exists(files["header"]):
        header = read_header(path, split)
        if header.get("settings") == settings and not overwrite:
            if progress:
                print(f"mdfast: {files['header']} is already prepared", file=sys.stderr)
            return header
        if not overwrite:
            raise FileExistsError(
                f"mdfast: '{files['header']}' was prepared with other settings (tokenizer, "
                "layout, length, source, ...); remove it or pass data.overwrite=true"
            )
    for f in (files["header"], files["tokens"], files["lengths"]):
        if os.path.exists(f):
            os.remove(f)
    dtype = np.uint16 if tok.model_vocab_size <= 65536 else np.uint32
    layout, length = settings["layout"], settings["length"]
    state = {"docs_done": a, "rows": 0, "carry": [], "max_id": 0, "num_tokens": 0,
             "documents": 0, "skipped": 0}  # fmt: skip
    if os.path.exists(prog_path) and os.path.exists(partial):
        with open(prog_path) as f:
            saved = json.load(f)
        if saved.get("settings") == settings:
            state = saved["state"]
    resumed = state["docs_done"] > a
    itemsize = np.dtype(dtype).itemsize
    mode = "r+b" if resumed else "wb"
    tf = open(partial, mode)
    tf.truncate(state["rows"] * length * itemsize)
    tf.seek(0, os.SEEK_END)
    lf = None
    if layout == "pad":
        lf = open(lpartial, "r+b" if resumed and os.path.exists(lpartial) else "wb")
        lf.truncate(state["rows"] * 4)
        lf.seek(0, os.SEEK_END)
    packer = make_packer(layout, length, tok, carry=state["carry"])
    spans = [(i, min(i + chunk, b)) for i in range(state["docs_done"], b, chunk)]
    n_proc = num_proc or os.cpu_count() or 1
    field, detok = settings["text_field"], settings["detokenizer"]
    bar = _bar(b - a, state["docs_done"] - a, f"tokenizing {split}", progress)
    pool = None
    try:
        if n_proc > 1 and len(spans) > 1:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            pool = ctx.Pool(min(n_proc, len(spans)), _init_worker,
                            (tok.name, ds, field, detok))  # fmt: skip
            results = pool.imap(_encode_range, spans)
        else:
            _init_worker(tok.name, ds, field, detok)
            results = map(_encode_range, spans)
        last_save = time.monotonic()
        for (_, end), (flat, lens, skipped) in zip(spans, results, strict=True):
            docs = np.split(flat.astype(np.int64), np.cumsum(lens)[:-1]) if len(lens) else []
            rows, row_lens = packer.add(docs)
            if len(rows):
                tf.write(rows.astype(dtype).tobytes())
                state["max_id"] = max(state["max_id"], int(rows.max()))
                if lf is not None:
                    lf.write(row_lens.astype(np.uint32).tobytes())
                state["num_tokens"] += int(row_lens.sum()) if lf is not None else rows.size
            state["rows"] += len(rows)
            state["documents"] += len(lens)
            state["skipped"] += skipped
            state["docs_done"] = end
            bar.update(end - a)
            if time.monotonic() - last_save > _SAVE_EVERY_S or end == b:
                _checkpoint(tf, lf, prog_path, settings, state, packer)
                last_save = time.monotonic()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
        tf.close()
        if lf is not None:
            lf.close()
    if state["rows"] == 0:
        raise ValueError(
            f"mdfast: split '{split}' of '{settings['source']['path']}' gave no rows (documents "
            f"{a}..{b}, {state['skipped']} empty); with the wrap layout a split needs at least "
            f"{length - 2} tokens"
        )
    header = {
        "format": HEADER_FORMAT,
        "split": split,
        "rows": state["rows"],
        "length": length,
        "dtype": np.dtype(dtype).name,
        "layout": layout,
        "vocab_size": tok.vocab_size,
        "model_vocab_size": tok.model_vocab_size,
        "mask_id": tok.mask_id,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "max_id": state["max_id"],
        "num_tokens": state["num_tokens"],
        "documents": state["documents"],
        "skipped_empty_documents": state["skipped"],
        "dropped_tail_tokens": len(packer.state()),
        "corpus": corpus,
        "settings": settings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    os.replace(partial, files["tokens"])
    if layout == "pad":
        os.replace(lpartial, files["lengths"])
    _atomic_json(files["header"], header)
    os.remove(prog_path)
    return header


def _checkpoint(tf, lf, prog_path, settings, state, packer) -> None:
    _fsync(tf)
    if lf is not None:
        _fsync(lf)
    state["carry"] = packer.state()
    _atomic_json(prog_path, {"settings": settings, "state": state})


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


class _Bar:
    """tqdm over documents (absolute positions)."""

    def __init__(self, total, initial, desc):
        from tqdm import tqdm

        self.t = tqdm(total=total, initial=initial, desc=desc, unit="doc", dynamic_ncols=True)
        self.done = initial

    def update(self, done):
        self.t.update(done - self.done)
        self.done = done

    def close(self):
        self.t.close()


def _bar(total, initial, desc, enabled):
    if not enabled:
        return _NoBar()
    try:
        return _Bar(total, initial, desc)
    except ImportError:
        return _NoBar()
