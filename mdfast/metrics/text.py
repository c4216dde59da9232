"""Sample-quality metrics of generated text, as the MDLM / ReMDM papers compute them.

A *judge* is a causal language model with its tokenizer: :class:`HFJudge` reads any local Hugging
Face causal-LM directory (gpt2-large in the papers; nothing is downloaded), :class:`ModelJudge`
wraps a causal mdfast model (the AR baseline) and its :class:`~mdfast.data.text.TextTokenizer`.

* :func:`gen_ppl`: generative perplexity, MDLM's ``compute_generative_perplexity`` exactly:
  retokenise the texts with the judge's tokenizer (truncation to ``max_length`` = the sampling
  model's length, padding with EOS to the longest text), split into chunks of ``context`` = 1024
  tokens; in each chunk the cross-entropy of token i + 1 given <= i, on the token mask
  ``first_eos | non_eos`` (every non-EOS token plus the chunk's first EOS; text after the first
  EOS is *not* dropped), token-weighted: gen PPL = exp(sum nll / sum mask) over every sample. MDLM
  drops the last ``N mod batch_size`` samples; here every sample counts.
* :func:`entropy`: ReMDM's per-sample unigram entropy in nats, H = -sum_v c_v/n log(c_v/n) over
  the counts c_v of the n generated ids of a sample, averaged over samples (max ln n).
* :func:`mauve`: MAUVE (``mauve-text``) between two feature sets; :func:`features` computes them
  with the judge as MAUVE's own featurizer does: the final hidden state of the last token of
  each text (truncated to ``max_length`` = 1024 judge tokens).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from mdfast.train.logs import progress_bar

__all__ = [
    "HFJudge",
    "ModelJudge",
    "entropy",
    "features",
    "gen_ppl",
    "load_hf_judge",
    "mauve",
    "sample_entropies",
    "token_mask",
]

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "vocab.txt")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")  # fmt: skip


# ------------------------------------------------------------------------------------- judges


class HFJudge:
    """A local Hugging Face causal LM and its tokenizer (pad = EOS when it has no pad token, as
    MDLM sets it)."""

    def __init__(self, model, tokenizer, *, name: str = ""):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) [N, T]: truncated to ``max_length``, right-padded to the
        longest."""
        enc = self.tokenizer(list(texts), return_tensors="pt", return_token_type_ids=False,
                             return_attention_mask=True, truncation=True, padding=True,
                             max_length=max_length)  # fmt: skip
        return enc["input_ids"], enc["attention_mask"]

    def logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=attn).logits

    def hidden(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        return out.hidden_states[-1]

    def describe(self) -> dict:
        return {"kind": "hf", "name": self.name, "eos_id": self.eos_id}


def load_hf_judge(path: str | os.PathLike, device=None, dtype=None) -> HFJudge:
    """The judge in a local HF directory (``config.json``, tokenizer files, weights); a missing
    piece raises naming the directory and what it lacks."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"mdfast: judge '{path}' is not a directory")
    present = set(os.listdir(path))
    if "config.json" not in present:
        raise FileNotFoundError(f"mdfast: judge directory '{path}' has no config.json")
    if not present & set(_TOKENIZER_FILES):
        raise FileNotFoundError(
            f"mdfast: judge directory '{path}' has no tokenizer (one of {list(_TOKENIZER_FILES)})"
        )
    if not present & set(_WEIGHT_FILES):
        raise FileNotFoundError(
            f"mdfast: judge directory '{path}' has no weights (one of {list(_WEIGHT_FILES)})"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    model.eval()
    if device is not None:
        model.to(device)
    return HFJudge(model, tok, name=os.path.basename(os.path.normpath(path)))


class ModelJudge:
    """A causal mdfast model (``trunk(x) -> features``, ``head(features) -> logits``, as the
    causal :class:`~mdfast.models.DiT`) with its :class:`~mdfast.data.text.TextTokenizer`;
    ``exclude_index`` (the diffusion mask id an AR model keeps in its vocabulary) is left out of
    the softmax, as in its training loss. The hidden state is the final-norm output that feeds
    the vocabulary projection (GPT-2's ``ln_f`` output)."""

    def __init__(self, model, tokenizer, *, exclude_index: int = -1, name: str = ""):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.exclude_index = exclude_index
        self.eos_id = self.pad_id = int(tokenizer.eos_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [r[:max_length] for r in self.tokenizer.encode_batch(list(texts))]
        width = max(1, max((len(r) for r in rows), default=1))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.int64)
        attn = torch.zeros((len(rows), width), dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
            attn[i, : len(r)] = 1
        return ids, attn

    def logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        z = self.model.head(self.model.trunk(ids)).float()
        if self.exclude_index >= 0:
            z[..., self.exclude_index] = float("-inf")
        return z

    def hidden(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(ids)

    def describe(self) -> dict:
        return {"kind": "mdfast", "name": self.name, "eos_id": self.eos_id}


# ------------------------------------------------------------------------------------- gen PPL


def token_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """MDLM's gen-PPL mask of a chunk [N, T]: ``first_eos | non_eos`` with first_eos =
    (cumsum(ids == eos) == 1), i.e. every non-EOS token plus the first EOS of the chunk."""
    is_eos = ids == eos_id
    return (is_eos.cumsum(-1) == 1) | ~is_eos


@torch.no_grad()
def gen_ppl(
    judge,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 8,
    context: int = 1024,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    prompts: Sequence[str] | None = None,
) -> dict:
    """Generative perplexity of ``texts`` under ``judge`` (module docstring: MDLM's recipe).
    ``prompts`` (conditional generation): text i is judged as the continuation of prompt i, i.e.
    on ``prompts[i] + texts[i]`` counting only the positions from the prompt's own token count
    on (the mask rule applies within them). Returns ``{"gen_ppl", "nll" (nats per counted
    token), "tokens" (counted), "samples", "nll_per_sample", "tokens_per_sample"}``."""
    if not texts:
        raise ValueError("mdfast: gen_ppl needs at least one text")
    if batch_size < 1 or context < 2 or max_length < 1:
        raise ValueError(
            "mdfast: gen_ppl needs batch_size >= 1, context >= 2 and max_length >= 1, got "
            f"{batch_size}, {context}, {max_length}"
        )
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"mdfast: gen_ppl got {len(prompts)} prompts for {len(texts)} texts")
    dev = judge.device
    per_nll, per_tok = [], []
    bar = progress_bar(len(texts), "gen PPL", "text", progress, leave=False)
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        skip = None
        if prompts is not None:
            pre = list(prompts[start : start + batch_size])
            batch = [p + t for p, t in zip(pre, batch, strict=True)]
            skip = judge.encode(pre, max_length)[1].sum(-1).to(dev)
        ids, attn = judge.encode(batch, max_length)
        ids, attn = ids.to(dev), attn.to(dev)
        keep = torch.ones_like(ids, dtype=torch.bool)
        if skip is not None:
            keep = torch.arange(ids.shape[1], device=dev)[None, :] >= skip[:, None]
        nll_sum = torch.zeros(ids.shape[0], dtype=torch.float64, device=dev)
        tok_sum = torch.zeros(ids.shape[0], dtype=torch.float64, device=dev)
        pieces = zip(ids.split(context, -1), attn.split(context, -1), keep.split(context, -1),
                     strict=True)  # fmt: skip
        for chunk, mask_chunk, keep_chunk in pieces:
            if chunk.shape[1] < 2:
                continue
            amp = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
                   else contextlib.nullcontext())  # fmt: skip
            with amp:
                logits = judge.logits(chunk, mask_chunk)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), chunk[:, 1:], reduction="none"
            )
            w = token_mask(chunk, judge.eos_id)[:, 1:] & keep_chunk[:, 1:]
            nll_sum += (nll.double() * w).sum(-1)
            tok_sum += w.sum(-1)
        per_nll += nll_sum.tolist()
        per_tok += tok_sum.tolist()
        if bar is not None:
            bar.update(ids.shape[0])
    if bar is not None:
        bar.close()
    total, count = sum(per_nll), sum(per_tok)
    mean = total / count if count else float("nan")
    return {"gen_ppl": math.exp(mean) if count else float("nan"), "nll": mean,
            "tokens": int(count), "samples": len(texts), "nll_per_sample": per_nll,
            "tokens_per_sample": [int(t) for t in per_tok]}  # fmt: skip


# ------------------------------------------------------------------------------------- entropy


def sample_entropies(samples) -> list[float]:
    """Unigram entropy in nats of each sample's token ids (a list of id lists, or [N, L])."""
    out = []
    for row in samples:
        ids = torch.as_tensor(row, dtype=torch.int64).reshape(-1)
        if ids.numel() == 0:
            raise ValueError("mdfast: entropy of an empty sample")
        counts = torch.unique(ids, return_counts=True)[1].double()
        p = counts / counts.sum()
        out.append(float(-(p * p.log()).sum()))
    return out


def entropy(samples) -> float:
    """ReMDM's entropy: the mean over samples of :func:`sample_entropies`."""
    values = sample_entropies(samples)
    if not values:
        raise ValueError("mdfast: entropy needs at least one sample")
    return sum(values) / len(values)


# ------------------------------------------------------------------------------------- MAUVE


@torch.no_grad()
def features(
    judge,
    texts: Sequence[str],
    *,
    max_length: int = 1024,
    batch_size: int = 8,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """MAUVE's featurisation with ``judge``: the final hidden state at the last token of each
    text (tokenised with truncation to ``max_length``), float32 [N, D]. Texts are batched with
    right padding; the last real token's state is read (a causal judge never sees the pads)."""
    if not texts:
        raise ValueError("mdfast: features needs at least one text")
    dev = judge.device
    out = []
    bar = progress_bar(len(texts), "features", "text", progress, leave=False)
    for start in range(0, len(texts), batch_size):
        ids, attn = judge.encode(texts[start : start + batch_size], max_length)
        ids, attn = ids.to(dev), attn.to(dev)
        amp = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())  # fmt: skip
        with amp:
            h = judge.hidden(ids, attn)
        last = (attn.sum(-1) - 1).clamp(min=0)
        out.append(h[torch.arange(h.shape[0], device=dev), last].float().cpu())
        if bar is not None:
            bar.update(ids.shape[0])
    if bar is not None:
        bar.close()
    return torch.cat(out).numpy()


def mauve(p_features, q_features, *, seed: int = 25, **kwargs) -> dict:
    """MAUVE between human (``p``) and model (``q``) feature sets [N, D] with ``mauve-text``'s
    ``compute_mauve`` (its defaults: k-means on PCA features explaining 90% of the variance,
    N/10 buckets, scaling 5). Returns ``{"mauve", "frontier_integral", "num_buckets"}``."""
    try:
        import mauve as mauve_text
    except ImportError as e:
        raise ImportError(
            "mdfast: MAUVE needs the mauve-text package (pip install mauve-text faiss-cpu "
            "scikit-learn)"
        ) from e
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(
            f"mdfast: MAUVE feature sets must be [N, D] with the same D, got {p.shape}, {q.shape}"
        )
    if min(len(p), len(q)) < 2:
        raise ValueError("mdfast: MAUVE needs at least 2 features per set")
    res = mauve_text.compute_mauve(p_features=p, q_features=q, seed=seed, verbose=False, **kwargs)
    buckets = getattr(res, "num_buckets", None)
    return {
        "mauve": float(res.mauve),
        "frontier_integral": float(res.frontier_integral),
        "num_buckets": None if buckets is None else int(buckets),
    }
