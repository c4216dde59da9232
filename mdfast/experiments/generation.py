"""``mdfast sample``: batched, resumable generation from a checkpoint into a JSONL file.

One line per sample: ``index`` (its global index g), ``ids`` (token ids), ``text`` (decoded with
the run's tokenizer, special tokens kept, as MDLM's ``batch_decode``; null without one),
``sampler`` and ``settings`` (every option that shapes the samples), ``nfe`` (denoiser calls of
the batch it was drawn in), ``wall_s`` (that batch's wall time), ``batch_size``, ``checkpoint``,
``objective``, ``tokenizer``, ``device``; conditional samples add ``prefix_ids`` /
``reference_ids`` (the fixed tokens and, for prefixes from a prepared split, the true
continuation) and ``fixed`` (the fixed positions).

Samplers are looked up per objective in :data:`mdfast.experiments.registry.SAMPLERS` (a
:class:`SamplerEntry` per objective, registered with
:func:`~mdfast.experiments.registry.register_sampler`), so an experiment adds its objective's
sampler with one registration. Sample g draws its noise from its own stream keyed by (seed, g)
(:class:`mdfast.rng.SampleCursor`), so the samples do not depend on the batch size, on the number of
torchrun ranks or on where a resumed run restarted.

Resuming: the file is appended one batch at a time (flushed and fsynced); a rerun of the same
command reads it, drops a torn last line, checks the settings match and draws only the missing
indices. ``sample.overwrite=true`` starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mdfast.experiments.registry import ConfigError
from mdfast.train.logs import progress_bar
from mdfast.train.runtime import autocast_dtype

__all__ = ["SAMPLER_PRESETS", "SampleJob", "SamplerEntry", "read_samples", "run_sample"]

# The ReMDM paper's settings (OWT, arXiv 2503.00307 and its scripts): nucleus p = 0.9 with fp64
# Gumbel noise (every mdfast draw is fp64), cap eta = 0.008, rescale eta = 0.015, loop
# (t_on, t_off, alpha_on, eta) = (0.55, 0.05, 0.9, 0.02), conf; MDLM / FB / DFM / AR baselines
# with the same nucleus. T (sample.steps) is swept in the paper over 128 ... 4096.
SAMPLER_PRESETS: dict[str, dict] = {
    "mdlm-nucleus": {"sampler": "ddpm_cache", "top_p": 0.9},
    "remdm-cap": {"sampler": "remdm-cap", "eta": 0.008, "top_p": 0.9},
    "remdm-rescale": {"sampler": "remdm-rescale", "eta": 0.015, "top_p": 0.9},
    "remdm-conf": {"sampler": "remdm-conf", "top_p": 0.9},
    "remdm-loop": {"sampler": "remdm-loop", "eta": 0.02, "t_on": 0.55, "t_off": 0.05,
                   "alpha_on": 0.9, "top_p": 0.9},
    "fb-nucleus": {"sampler": "remdm-fb", "top_p": 0.9},
    "dfm-nucleus": {"sampler": "remdm-dfm", "top_p": 0.9},
    "ar-nucleus": {"sampler": "ar", "top_p": 0.9},
}  # fmt: skip

# the sample.* fields recorded in every JSONL line (what shapes the samples)
_SETTING_KEYS = ("preset", "steps", "length", "seed", "schedule", "temperature", "top_p", "top_k",
                 "nucleus", "noise_removal", "eta", "t_on", "t_off", "alpha_on", "semi_ar",
                 "stride_length", "num_strides", "kv_cache", "prompt", "infix", "infix_at",
                 "cond_data", "cond_split", "prefix_len", "cond_repeats",
                 "precision")  # fmt: skip


@dataclass
class SampleJob:
    """What a sampler entry needs: the config, the objective and its model on ``device``, the
    ``sample`` section, the sequence ``length`` and the data's special ids."""

    cfg: dict
    objective: object
    device: torch.device
    length: int
    bos_id: int | None = None

    @property
    def sp(self) -> dict:
        return self.cfg["sample"]

    @property
    def model(self):
        return self.objective.model


@dataclass(frozen=True)
class SamplerEntry:
    """The samplers of one objective: ``samplers`` (names ``sample.sampler`` accepts),
    ``default`` and ``run(job, sampler, given, indices) -> mdfast.sampling.SampleResult``, where
    ``given`` is None or int64 [b, L] with -1 at the positions to generate and ``indices`` the
    global sample indices of the batch (key each sample's noise by them).
    ``conditioning``: "any" (prefix and infix), "prefix" or "none"."""

    samplers: tuple[str, ...]
    default: str
    run: Callable
    conditioning: str = "any"
    notes: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ files


def read_samples(path: str, *, repair: bool = False) -> list[dict]:
    """The records of a samples JSONL file. A torn last line (an interrupted write) is skipped,
    and with ``repair`` cut from the file; any other bad line raises naming the file and line."""
    records = []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"mdfast: '{path}' line {n} is not JSON ({e})") from None
    if tail.strip():
        try:  # a last line without its newline but complete
            records.append(json.loads(tail))
        except json.JSONDecodeError:
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(tail))
    return records


def _append(path: str, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------ conditioning


def _tokenizer(cfg: dict):
    if cfg["data"].get("name") != "text" or not cfg["data"].get("tokenizer"):
        return None
    from mdfast.data.text import load_tokenizer

    return load_tokenizer(cfg["data"]["tokenizer"])


class _Conditioning:
    """Per-sample fixed tokens: a text ``prompt`` (prefix), an ``infix`` text at ``infix_at``, or
    prefixes of ``prefix_len`` tokens from rows of a prepared split (``cond_data``), each used
    for ``cond_repeats`` consecutive samples (IMDM's conditional generation)."""

    def __init__(self, sp: dict, length: int, tok, mask_index: int | None):
        self.length, self.sp = length, sp
        self.fixed: list[tuple[int, list[int]]] = []  # (start, ids) shared by every sample
        self.rows = None
        if sp["prompt"]:
            self.fixed.append((0, self._encode(tok, sp["prompt"], "sample.prompt")))
        if sp["infix"]:
            if sp["infix_at"] < 0:
                raise ConfigError("mdfast: sample.infix needs sample.infix_at (its position)")
            self.fixed.append((sp["infix_at"], self._encode(tok, sp["infix"], "sample.infix")))
        if sp["cond_data"]:
            from mdfast.data.text import TokenFile

            if sp["prefix_len"] < 1:
                raise ConfigError("mdfast: sample.cond_data needs sample.prefix_len >= 1")
            if sp["prompt"] or sp["infix"]:
                raise ConfigError("mdfast: sample.cond_data excludes sample.prompt / sample.infix")
            self.rows = TokenFile(sp["cond_data"], sp["cond_split"])
            if (
                tok is not None
                and self.rows.header.get("settings", {}).get("tokenizer", {}).get("name", tok.name)
                != tok.name
            ):
                raise ConfigError(
                    f"mdfast: sample.cond_data '{sp['cond_data']}' was prepared with another "
                    f"tokenizer than the run's ('{tok.name}')"
                )
            if sp["prefix_len"] >= min(length, self.rows.length):
                raise ConfigError(
                    f"mdfast: sample.prefix_len={sp['prefix_len']} must be below the sample "
                    f"length {length} and the split's row length {self.rows.length}"
                )
            if sp["cond_repeats"] < 1:
                raise ConfigError("mdfast: sample.cond_repeats must be >= 1")
        for start, ids in self.fixed:
            if start + len(ids) > length:
                raise ConfigError(
                    f"mdfast: fixed tokens at {start}..{start + len(ids)} exceed the sample "
                    f"length {length}"
                )
            if mask_index is not None and mask_index in ids:
                raise ConfigError("mdfast: the conditioning text holds the mask id")

    @staticmethod
    def _encode(tok, text: str, option: str) -> list[int]:
        if tok is None:
            raise ConfigError(f"mdfast: {option} needs a run with a tokenizer (data.name=text)")
        ids = tok.encode_batch([text])[0]
        if not ids:
            raise ConfigError(f"mdfast: {option} encodes to no tokens")
        return ids

    @property
    def active(self) -> bool:
        return bool(self.fixed) or self.rows is not None

    @property
    def kind(self) -> str:
        """ "prefix" when every fixed span starts at 0, else "infix"."""
        return "prefix" if all(s == 0 for s, _ in self.fixed) else "infix"

    def batch(self, indices: list[int]) -> tuple[torch.Tensor | None, list[dict]]:
        if not self.active:
            return None, [{} for _ in indices]
        given = torch.full((len(indices), self.length), -1, dtype=torch.int64)
        extras = []
        for i, g in enumerate(indices):
            extra = {}
            for start, ids in self.fixed:
                given[i, start : start + len(ids)] = torch.tensor(ids)
            if self.rows is not None:
                row = (g // self.sp["cond_repeats"]) % len(self.rows)
                full = self.rows[row]["input_ids"]
                P = self.sp["prefix_len"]
                given[i, :P] = full[:P]
                extra = {"cond_row": row, "reference_ids": full[P : self.length].tolist()}
            lead = int((given[i] >= 0).int().cumprod(0).sum())  # leading fixed positions
            extra["prefix_ids"] = given[i][:lead].tolist()
            extra["fixed"] = (given[i] >= 0).nonzero()[:, 0].tolist()
            extras.append(extra)
        return given, extras


# ------------------------------------------------------------------------------------ the run


def _settings(cfg: dict, sampler: str, length: int) -> dict:
    sp = cfg["sample"]
    out = {k: sp[k] for k in _SETTING_KEYS if k in sp}
    out["length"] = length
    out["sampler"] = sampler
    return out


def _bos(cfg: dict, tok) -> int | None:
    if tok is None:
        return None
    return int(tok.bos_id)


def run_sample(cfg: dict, objective, path, device, rank: int = 0, world: int = 1) -> dict:
    """Draw ``sample.num_samples`` (or ``batch_size`` × ``num_batches``) samples of the run into
    ``sample.out`` (JSONL; see the module docstring); returns the summary ``mdfast sample``
    prints."""
    from mdfast.experiments import registry

    sp, obj_name = cfg["sample"], cfg["objective"]["name"]
    entry = registry.sampler_entry(obj_name)
    sampler = sp["sampler"] or entry.default
    if sampler not in entry.samplers:
        from mdfast.sampling.dispatch import INTERPOLANT_SAMPLERS

        what = "samples discrete interpolants" if sampler in INTERPOLANT_SAMPLERS else (
            "has no meaning here")  # fmt: skip
        raise ConfigError(
            f"mdfast: sample.sampler '{sampler}' {what}; objective '{obj_name}' takes one of "
            f"{list(entry.samplers)}"
        )
    length = int(sp["length"] or cfg["data"].get("length") or cfg["model"].get("model_length"))
    total = sp["num_samples"] or sp["batch_size"] * max(1, sp["num_batches"])
    if sp["batch_size"] < 1 or total < 1:
        raise ConfigError("mdfast: sample.batch_size and sample.num_samples must be >= 1")
    tok = _tokenizer(cfg)
    mask = cfg["objective"].get("mask_index")
    cond = _Conditioning(sp, length, tok, mask if isinstance(mask, int) and mask >= 0 else None)
    if cond.active and entry.conditioning == "none":
        raise ConfigError(f"mdfast: objective '{obj_name}' has no conditional sampler")
    if cond.active and cond.kind == "infix" and entry.conditioning != "any":
        raise ConfigError(
            f"mdfast: objective '{obj_name}' conditions on a prefix only (sample.infix needs a "
            "diffusion objective)"
        )
    job = SampleJob(cfg, objective, device, length, _bos(cfg, tok))
    settings = _settings(cfg, sampler, length)
    header = {"checkpoint": path, "objective": obj_name, "sampler": sampler,
              "tokenizer": tok.name if tok is not None else None}  # fmt: skip
    out = sp["out"]
    legacy_pt = bool(out) and out.endswith(".pt")
    jsonl = out if out and not legacy_pt else ""
    done: set[int] = set()
    if jsonl and rank == 0:
        if sp["overwrite"] and os.path.exists(jsonl):
            os.remove(jsonl)
        if os.path.exists(jsonl):
            for r in read_samples(jsonl, repair=True):
                diff = [k for k in header if r.get(k) != header[k]]
                theirs = r.get("settings") or {}
                diff += [f"sample.{k}" for k in settings if theirs.get(k) != settings[k]]
                if diff:
                    raise FileExistsError(
                        f"mdfast: sample.out '{jsonl}' holds samples drawn with other settings "
                        f"(differing: {diff}); pass another sample.out or sample.overwrite=true"
                    )
                done.add(int(r["index"]))
        else:
            os.makedirs(os.path.dirname(os.path.abspath(jsonl)), exist_ok=True)
    if world > 1:
        import torch.distributed as dist

        box = [sorted(done)]
        dist.broadcast_object_list(box, src=0)
        done = set(box[0])
    todo = [g for g in range(total) if g not in done]
    bs = sp["batch_size"]
    batches = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    try:
        amp = autocast_dtype(sp["precision"], device, "sample.precision")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    bar = progress_bar(total, "sample", "seq", sp["progress"] and rank == 0, initial=len(done))
    nfe_total, wall_total, written, first, everything = 0, 0.0, 0, [], []
    for r0 in range(0, len(batches), world):
        mine = batches[r0 + rank] if r0 + rank < len(batches) else []
        records, stats = [], (0, 0.0)
        if mine:
            given, extras = cond.batch(mine)
            t0 = time.perf_counter()
            ctx = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
            with torch.no_grad(), ctx:
                res = entry.run(job, sampler, None if given is None else given.to(device), mine)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - t0
            stats = (res.nfe, wall)
            x = res.x.cpu()
            for i, g in enumerate(mine):
                ids = x[i].tolist()
                records.append({"index": g, **header, "settings": settings, "ids": ids,
                                "text": tok.decode(ids) if tok is not None else None,
                                "nfe": res.nfe, "steps": res.steps, "wall_s": round(wall, 4),
                                "batch_size": len(mine), "device": str(device),
                                **extras[i]})  # fmt: skip
        parts = [(records, stats)]
        if world > 1:
            import torch.distributed as dist

            parts = [None] * world
            dist.all_gather_object(parts, (records, stats))
        if rank == 0:
            for recs, (nfe, wall) in parts:
                if jsonl:
                    _append(jsonl, recs)
                if legacy_pt:
                    everything += recs
                first += recs[: max(0, 2 - len(first))]
                written += len(recs)
                nfe_total, wall_total = nfe_total + nfe, wall_total + wall
                if bar is not None:
                    bar.update(len(recs))
    if bar is not None:
        bar.close()
    summary = {**header, "settings": settings, "out": out or None, "samples": total,
               "written": written, "resumed": len(done), "nfe": nfe_total,
               "wall_s": round(wall_total, 3), "device": str(device),
               "shape": [written, len(first[0]["ids"]) if first else 0],
               "text": [r["text"] for r in first] if tok is not None else None}  # fmt: skip
    if legacy_pt and rank == 0:  # a .pt out: the token ids [N, L] as one tensor
        ids = [r["ids"] for r in sorted(everything, key=lambda r: r["index"])]
        torch.save(torch.tensor(ids, dtype=torch.int64), out)
    return summary
