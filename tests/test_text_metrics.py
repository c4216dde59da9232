"""Generated-text metrics (mdfast.metrics.text): gen PPL against a hand computation of MDLM's
recipe on a tiny random GPT-2 saved by the test in Hugging Face format (EOS mask rule, padding,
chunks, prompts), entropy on constructed samples, MAUVE on identical / disjoint feature sets, the
final-token features, and a judge directory missing its tokenizer or weights."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from text_fixtures import write_bpe

from mdfast.metrics import text as mt

EOS = 259  # <|endoftext|> of text_fixtures' BPE: 256 bytes, 3 merges, then it


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A random 2-layer GPT-2 with a small byte-level BPE (GPT-2's format), save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    d = tmp_path_factory.mktemp("gpt2")
    vocab = write_bpe(d / "bpe")
    tok = GPT2TokenizerFast(vocab=str(d / "bpe" / "vocab.json"),
                            merges=str(d / "bpe" / "merges.txt"))  # fmt: skip
    assert tok.eos_token_id == EOS == len(vocab) - 1
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                     bos_token_id=EOS, eos_token_id=EOS)  # fmt: skip
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _reference_gen_ppl(judge, texts, max_length, context, prompts=None):
    """MDLM's compute_generative_perplexity written out: right-pad with EOS to the longest text,
    chunks of ``context``, per chunk nll of token j+1 | <= j on first_eos | non_eos, float64."""
    tok, model = judge.tokenizer, judge.model
    rows = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    skip = [0] * len(texts)
    if prompts is not None:
        rows = [tok(p + t, truncation=True, max_length=max_length)["input_ids"]
                for p, t in zip(prompts, texts, strict=True)]  # fmt: skip
        skip = [len(tok(p, truncation=True, max_length=max_length)["input_ids"]) for p in prompts]
    width = max(map(len, rows))
    total, count = 0.0, 0
    for row, k in zip(rows, skip, strict=True):
        padded = row + [EOS] * (width - len(row))
        attn = [1] * len(row) + [0] * (width - len(row))
        for c0 in range(0, width, context):
            ids = padded[c0 : c0 + context]
            if len(ids) < 2:
                continue
            with torch.no_grad():
                logits = model(
                    input_ids=torch.tensor([ids]),
                    attention_mask=torch.tensor([attn[c0 : c0 + context]]),
                ).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            seen = 0
            for j, tid in enumerate(ids):
                seen += tid == EOS
                counted = tid != EOS or seen == 1
                if j >= 1 and counted and c0 + j >= k:
                    total -= float(logp[j - 1, tid])
                    count += 1
    return math.exp(total / count), count


TEXTS = [
    "Hello world<|endoftext|> and after the end",  # text after the first EOS still counts
    "a b c",  # padded: its first pad is its first EOS
    "<|endoftext|>To be, or not<|endoftext|><|endoftext|> x",  # repeated EOS: first only
    "The quick brown fox jumps over the lazy dog again and again and again",
]


@pytest.mark.parametrize(("context", "batch_size"), [(1024, 2), (7, 3)])
def test_gen_ppl_matches_the_hand_computation(gpt2_dir, context, batch_size):
    judge = mt.load_hf_judge(gpt2_dir)
    got = mt.gen_ppl(judge, TEXTS, max_length=20, batch_size=batch_size, context=context)
    # padding is to the longest text of each batch: the reference per batch, token-weighted
    parts = [_reference_gen_ppl(judge, TEXTS[i : i + batch_size], 20, context)
             for i in range(0, len(TEXTS), batch_size)]  # fmt: skip
    n = sum(c for _, c in parts)
    want = math.exp(sum(math.log(p) * c for p, c in parts) / n)
    assert got["tokens"] == n
    assert got["gen_ppl"] == pytest.approx(want, rel=1e-4)


def test_gen_ppl_of_continuations_counts_after_the_prompt(gpt2_dir):
    judge = mt.load_hf_judge(gpt2_dir)
    prompts, conts = ["Once upon", "To be"], [" a time there", ", or not to be"]
    got = mt.gen_ppl(judge, conts, max_length=32, batch_size=2, prompts=prompts)
    want, n = _reference_gen_ppl(judge, conts, 32, 1024, prompts=prompts)
    assert got["tokens"] == n and got["gen_ppl"] == pytest.approx(want, rel=1e-4)


def test_token_mask_rule():
    ids = torch.tensor([[5, EOS, 7, EOS, EOS, 9], [EOS, EOS, 3, 4, EOS, 2]])
    want = torch.tensor([[1, 1, 1, 0, 0, 1], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(mt.token_mask(ids, EOS), want)


def test_entropy_of_constructed_samples():
    samples = [[1, 1, 2, 2], [3, 3, 3, 3], [1, 2, 3, 4], [7, 7, 7, 8]]
    p = 0.75
    want = [math.log(2), 0.0, math.log(4), -(p * math.log(p) + (1 - p) * math.log(1 - p))]
    assert mt.sample_entropies(samples) == pytest.approx(want, abs=1e-12)
    assert mt.entropy(torch.tensor(samples)) == pytest.approx(sum(want) / 4, abs=1e-12)
    with pytest.raises(ValueError, match="at least one"):
        mt.entropy([])


def test_mauve_identical_is_one_and_disjoint_is_zero():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(120, 8))
    fast = {"kmeans_num_redo": 1, "kmeans_max_iter": 100}
    assert mt.mauve(p, p.copy(), **fast)["mauve"] > 0.99
    assert mt.mauve(p, p + 40.0, **fast)["mauve"] < 0.02
    with pytest.raises(ValueError, match="same D"):
        mt.mauve(p, p[:, :4], **fast)


def test_features_are_the_last_tokens_final_hidden_state(gpt2_dir):
    judge = mt.load_hf_judge(gpt2_dir)
    texts = ["Hello world, this is long", "a", "one two three"]
    got = mt.features(judge, texts, batch_size=3)
    for i, t in enumerate(texts):
        ids = judge.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = judge.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        np.testing.assert_allclose(got[i], h[0, -1].numpy(), rtol=1e-4, atol=1e-5)


def test_judge_directory_without_tokenizer_or_weights(gpt2_dir, tmp_path):
    no_tok = tmp_path / "no_tok"
    shutil.copytree(gpt2_dir, no_tok)
    for f in os.listdir(no_tok):
        if f.startswith("tokenizer") or f in ("vocab.json", "merges.txt"):
            os.remove(no_tok / f)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        mt.load_hf_judge(no_tok)
    no_w = tmp_path / "no_w"
    shutil.copytree(gpt2_dir, no_w)
    os.remove(no_w / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no weights"):
        mt.load_hf_judge(no_w)
