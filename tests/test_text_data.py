"""Text data: tokenizers from their on-disk files, corpora in every supported format, MDLM's wrap
and pad layouts against hand-computed rows, resumable preparation, the memory-mapped token files
(bounded memory, per-batch checks) and the clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from text_fixtures import BERT_VOCAB, docs, write_bert, write_bpe, write_jsonl

from mdfast.data.text import (
    PadPacker,
    TokenFile,
    WrapPacker,
    detokenize,
    load_tokenizer,
    prepare_text,
    read_corpus,
)
from mdfast.data.text import prepare as prepare_mod
from mdfast.train.data import StepBatches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- tokenizers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")])
def test_gpt2_bpe_from_files(tmp_path, names):
    vocab = write_bpe(tmp_path, names)
    tok = load_tokenizer(str(tmp_path))
    the, gthe, eot = vocab["the"], vocab["\u0120the"], vocab["<|endoftext|>"]
    assert tok.encode_batch(["the the"]) == [[the, gthe]]
    # bytes outside the merges fall back to their byte symbols; <|endoftext|> is one special id
    ids = tok.encode_batch(["at<|endoftext|>"])[0]
    assert ids == [vocab["a"], vocab["t"], eot]
    assert tok.decode(ids) == "at<|endoftext|>"
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (eot, eot, eot)
    assert tok.vocab_size == len(vocab) and tok.mask_id == len(vocab) and tok.mask_appended
    assert tok.model_vocab_size == len(vocab) + 1


def test_bert_wordpiece_from_vocab_txt(tmp_path):
    write_bert(tmp_path)
    tok = load_tokenizer(str(tmp_path / "vocab.txt"))
    assert tok.encode_batch(["Hello, WORLDS."]) == [[5, 8, 6, 7, 9]]
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id) == (2, 3, 0, 4)
    assert not tok.mask_appended and tok.model_vocab_size == len(BERT_VOCAB)


def test_shipped_tokenizers_have_the_published_ids():
    gpt2 = load_tokenizer("gpt2")
    assert gpt2.encode_batch(["Hello world!"]) == [[15496, 995, 0]]
    assert (gpt2.vocab_size, gpt2.eos_id, gpt2.mask_id, gpt2.model_vocab_size) == (
        50257, 50256, 50257, 50258)  # fmt: skip
    bert = load_tokenizer("bert-base-uncased")
    assert bert.encode_batch(["Hello world"]) == [[7592, 2088]]
    assert (bert.vocab_size, bert.mask_id, bert.bos_id, bert.eos_id) == (30522, 103, 101, 102)


def test_unknown_tokenizer_layout_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown tokenizer file layout in .*vocab\.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))


# --- corpora -------------------------------------------------------------------------------------


def _texts(corpus, split="train"):
    return list(corpus[split]["text"])


def test_corpus_formats(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = docs(7)
    cache = str(tmp_path / "cache")
    write_jsonl(tmp_path / "c.jsonl", texts)
    assert _texts(read_corpus(str(tmp_path / "c.jsonl"), cache_dir=cache)) == texts
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet")
    assert _texts(read_corpus(str(tmp_path / "c.parquet"), cache_dir=cache)) == texts
    table = pa.table({"text": texts})
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)
    assert _texts(read_corpus(str(tmp_path / "c.arrow"), cache_dir=cache)) == texts
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n")
    assert _texts(read_corpus(str(tmp_path / "c.txt"), cache_dir=cache)) == texts
    one = read_corpus(str(tmp_path / "c.txt"), sample_by="document", cache_dir=cache)
    assert len(one["train"]) == 1 and one["train"][0]["text"].strip() == "\n".join(texts)
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "saved"))
    assert _texts(read_corpus(str(tmp_path / "saved"))) == texts
    split = datasets.Dataset.from_dict
    dd = datasets.DatasetDict(
        {"train": split({"text": texts[:5]}), "test": split({"text": texts[5:]})}
    )
    dd.save_to_disk(str(tmp_path / "saved_dict"))
    c = read_corpus(str(tmp_path / "saved_dict"))
    assert _texts(c) == texts[:5] and _texts(c, "test") == texts[5:]
    # a directory of split files: the splits come from the file names
    (tmp_path / "splits").mkdir()
    write_jsonl(tmp_path / "splits" / "train.jsonl", texts[:4])
    write_jsonl(tmp_path / "splits" / "validation.jsonl", texts[4:])
    c = read_corpus(str(tmp_path / "splits"), cache_dir=cache)
    assert _texts(c) == texts[:4] and _texts(c, "validation") == texts[4:]


def test_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"corpus '.*missing\.jsonl' does not exist"):
        read_corpus(str(tmp_path / "missing.jsonl"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.docx").write_text("?")
    with pytest.raises(FileNotFoundError, match="no file of a known format"):
        read_corpus(str(tmp_path / "d"))


# --- layouts -------------------------------------------------------------------------------------


def test_wrap_layout_by_hand():
    p = WrapPacker(length=5, bos=90, eos=99)
    rows, lengths = p.add([[1, 2, 3], [4, 5]])
    # stream 1 2 3 E 4 5 E, cut into L-2 = 3: [1 2 3] [E 4 5], carry [E]
    assert lengths is None
    assert rows.tolist() == [[90, 1, 2, 3, 99], [90, 99, 4, 5, 99]]
    rows, _ = p.add([[6]])  # carry E + 6 E
    assert rows.tolist() == [[90, 99, 6, 99, 99]] and p.state() == []


def test_pad_layout_by_hand():
    rows, lengths = PadPacker(length=5, bos=2, eos=3, pad=0).add([list(range(10, 20)), [7], []])
    assert rows.tolist() == [[2, 10, 11, 12, 3], [2, 7, 3, 0, 0], [2, 3, 0, 0, 0]]
    assert lengths.tolist() == [5, 3, 2]


def test_lm1b_detokenizer():
    s = "I 've been to http : / / x.com , it 's \" great \" ( really ) !"
    assert detokenize("lm1b", s) == "I've been to http://x.com, it's \"great\" (really)!"
    assert detokenize("lambada", "\u201cHi\u201d ") == '\n"Hi"'
    with pytest.raises(ValueError, match=r"unknown data\.detokenizer"):
        detokenize("nope", "x")


# --- preparation ---------------------------------------------------------------------------------


def _prep(tmp_path, out, **kw):
    base = dict(tokenizer=str(tmp_path / "bpe"), layout="wrap", length=8, num_proc=1,
                chunk_docs=3, cache_dir=str(tmp_path / "cache"), progress=False)  # fmt: skip
    return prepare_text(str(tmp_path / "c.jsonl"), str(tmp_path / out), **{**base, **kw})


def test_prepare_wrap_and_held_out_split(tmp_path):
    vocab = write_bpe(tmp_path / "bpe")
    texts = docs(11)
    write_jsonl(tmp_path / "c.jsonl", texts)
    headers = _prep(tmp_path, "out", valid_docs=3)
    tok = load_tokenizer(str(tmp_path / "bpe"))
    eot = vocab["<|endoftext|>"]

    def expect(ts):
        stream = [i for t in ts for i in [*tok.encode_batch([t])[0], eot]]
        n = len(stream) // 6
        return [[eot, *stream[6 * r : 6 * r + 6], eot] for r in range(n)]

    train, val = (
        TokenFile(str(tmp_path / "out"), "train"),
        TokenFile(str(tmp_path / "out"), "validation"),
    )
    assert train.__getitems__(torch.arange(len(train)))["input_ids"].tolist() == expect(texts[:8])
    assert val.__getitems__(torch.arange(len(val)))["input_ids"].tolist() == expect(texts[8:])
    h = headers["train"]
    assert h["documents"] == 8 and headers["validation"]["documents"] == 3
    assert (h["dtype"], h["mask_id"], h["model_vocab_size"], h["bos_id"]) == (
        "uint16", len(vocab), len(vocab) + 1, eot)  # fmt: skip
    # parallel workers give the same bytes
    _prep(tmp_path, "out2", valid_docs=3, num_proc=2)
    for s in ("train", "validation"):
        assert (tmp_path / "out" / f"{s}.bin").read_bytes() == (
            tmp_path / "out2" / f"{s}.bin").read_bytes()  # fmt: skip
    # same command again: nothing to do; other settings: refused without overwrite
    assert _prep(tmp_path, "out", valid_docs=3)["train"]["created"] == h["created"]
    with pytest.raises(FileExistsError, match="other settings"):
        _prep(tmp_path, "out", valid_docs=2)


def test_prepare_pad_layout_with_attention_mask(tmp_path):
    write_bert(tmp_path / "bert")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in [
        "hello world", "hello , worlds . hello world hello", ""]))  # fmt: skip
    _prep(tmp_path, "out", tokenizer=str(tmp_path / "bert"), layout="pad", length=6,
          splits="train")  # fmt: skip
    ds = TokenFile(str(tmp_path / "out"), "train")
    b = ds.__getitems__([0, 1])
    assert b["input_ids"].tolist() == [[2, 5, 6, 3, 0, 0], [2, 5, 8, 6, 7, 3]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert len(ds) == 2 and ds.header["skipped_empty_documents"] == 1


def test_interrupted_prepare_leaves_no_final_file_and_resumes(tmp_path, monkeypatch):
    write_bpe(tmp_path / "bpe")
    write_jsonl(tmp_path / "c.jsonl", docs(40, seed=1))
    _prep(tmp_path, "ref", splits="train")
    monkeypatch.setattr(prepare_mod, "_SAVE_EVERY_S", 0.0)
    real_make = prepare_mod.make_packer
    calls = {"n": 0}

    class Boom(KeyboardInterrupt):
        pass

    def make(*a, **k):
        p = real_make(*a, **k)
        add = p.add

        def dying_add(d):
            calls["n"] += 1
            if calls["n"] == 5:
                raise Boom
            return add(d)

        p.add = dying_add
        return p

    monkeypatch.setattr(prepare_mod, "make_packer", make)
    with pytest.raises(Boom):
        _prep(tmp_path, "out", splits="train")
    out = tmp_path / "out"
    assert not (out / "train.bin").exists() and not (out / "train.json").exists()
    assert (out / "train.bin.partial").exists() and (out / "train.progress.json").exists()
    with pytest.raises(FileNotFoundError, match="never completed"):
        TokenFile(str(out), "train")
    monkeypatch.setattr(prepare_mod, "make_packer", real_make)
    done = json.loads((out / "train.progress.json").read_text())["state"]["docs_done"]
    encoded = []
    real_encode = prepare_mod._encode_range
    monkeypatch.setattr(prepare_mod, "_encode_range", lambda s: encoded.append(s) or real_encode(s))
    _prep(tmp_path, "out", splits="train")
    assert done == 12 and encoded[0][0] == done  # resumed after the 4 saved chunks of 3 docs
    assert (out / "train.bin").read_bytes() == (tmp_path / "ref" / "train.bin").read_bytes()
    assert not (out / "train.progress.json").exists()


def test_prepare_bad_input(tmp_path):
    write_bpe(tmp_path / "bpe")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _prep(tmp_path, "out")
    write_jsonl(tmp_path / "c.jsonl", docs(3), field="body")
    with pytest.raises(KeyError, match=r"no column 'text'.*\['body', 'id'\]"):
        _prep(tmp_path, "out", splits="train")
    with pytest.raises(KeyError, match="no split 'validation'"):
        _prep(tmp_path, "out", text_field="body")
    with pytest.raises(ValueError, match="gave no rows"):  # 3 short docs < one row of 4094
        _prep(tmp_path, "out", text_field="body", length=4096, splits="train")


# --- the memory-mapped file ----------------------------------------------------------------------


def _fake_prepared(path, rows, length, *, max_id=5, vocab=50258, dtype="uint16"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "train.bin"), "wb") as f:
        f.truncate(rows * length * np.dtype(dtype).itemsize)  # sparse: no bytes written
    header = {"format": "mdfast-tokens/1", "split": "train", "rows": rows, "length": length,
              "dtype": dtype, "layout": "wrap", "vocab_size": vocab - 1,
              "model_vocab_size": vocab, "mask_id": vocab - 1, "max_id": max_id}  # fmt: skip
    with open(os.path.join(path, "train.json"), "w") as f:
        json.dump(header, f)


def test_memmap_never_loads_the_file(tmp_path):
    """Peak RSS while batching from a 1 GB token file stays far below the file size."""
    _fake_prepared(str(tmp_path), rows=(1 << 30) // 2048, length=1024)
    script = f"""
import resource, sys, torch
sys.path.insert(0, {ROOT!r})
from mdfast.data.text import TokenFile
from mdfast.train.data import StepBatches
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = TokenFile({str(tmp_path)!r}, "train")
sb = StepBatches(ds, 64, seed=3)
for step in range(30):
    b = sb.get(step, 0)["input_ids"]
    assert b.dtype == torch.int64 and b.shape == (64, 1024)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    before, after = (int(v) for v in r.stdout.split())
    assert (after - before) * 1024 < 64 * 2**20, (before, after)  # < 64 MB for a 1 GB file


def test_token_file_checks(tmp_path):
    _fake_prepared(str(tmp_path / "a"), rows=4, length=8)
    ds = TokenFile(str(tmp_path / "a"), "train")
    assert ds.__getitems__([1, 3])["input_ids"].shape == (2, 8)
    with pytest.raises(
        ValueError, match=r"field 'model_vocab_size' = 50258 but .*model\.vocab_size=30522"
    ):
        ds.check_compatible(vocab_size=30522)
    with pytest.raises(ValueError, match=r"field 'mask_id' = 50257 .*objective\.mask_index=103"):
        ds.check_compatible(mask_index=103)
    with pytest.raises(ValueError, match=r"field 'length' = 8 .*data\.length=1024"):
        ds.check_compatible(length=1024)
    # a token id >= vocab inside the file: the batch that reads it names the file and row
    arr = np.memmap(tmp_path / "a" / "train.bin", dtype=np.uint16, mode="r+", shape=(4, 8))
    arr[2, 5] = 60000
    arr.flush()
    with pytest.raises(ValueError, match=r"train\.bin' row 2 holds token id 60000 >= .*50258"):
        TokenFile(str(tmp_path / "a"), "train").__getitems__([0, 2])
    _fake_prepared(str(tmp_path / "b"), rows=4, length=8, max_id=50258)
    with pytest.raises(ValueError, match="header field 'max_id'"):
        TokenFile(str(tmp_path / "b"), "train")
    _fake_prepared(str(tmp_path / "c"), rows=0, length=8)
    with pytest.raises(ValueError, match="is empty"):
        TokenFile(str(tmp_path / "c"), "train")
    _fake_prepared(str(tmp_path / "d"), rows=4, length=8)
    with open(tmp_path / "d" / "train.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match=r"has 66 bytes but header fields 'rows'"):
        TokenFile(str(tmp_path / "d"), "train")
    with pytest.raises(FileNotFoundError, match="no split 'validation'"):
        TokenFile(str(tmp_path / "a"), "validation")


def test_resume_mid_epoch_gives_the_same_batches(tmp_path):
    """Batches are a function of (seed, step) only: a fresh loader at step s (a resumed run)
    reads exactly what the uninterrupted one read, across epoch boundaries."""
    _fake_prepared(str(tmp_path), rows=10, length=4, max_id=50000)
    arr = np.memmap(tmp_path / "train.bin", dtype=np.uint16, mode="r+", shape=(10, 4))
    arr[:] = np.arange(40).reshape(10, 4)
    arr.flush()
    ds = TokenFile(str(tmp_path), "train")
    run = StepBatches(ds, 4, seed=7)
    seen = [run.get(s, 0)["input_ids"] for s in range(8)]  # 3.2 epochs
    resumed = StepBatches(TokenFile(str(tmp_path), "train"), 4, seed=7)
    for s in (3, 5, 7):  # 3 and 7 start mid-epoch
        assert torch.equal(resumed.get(s, 0)["input_ids"], seen[s])
    # two ranks with micro-batches split the same global batch
    ranks = [StepBatches(ds, 4, grad_accum=2, rank=r, world=2, seed=7) for r in (0, 1)]
    parts = [ranks[r].get(5, m)["input_ids"] for r in (0, 1) for m in (0, 1)]
    assert torch.equal(torch.cat(parts), seen[5])
