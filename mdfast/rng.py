"""Where mdfast's random numbers come from: one Philox stream (``csrc/include/mdfast/philox.h``),
reached through two kinds of key.

**Sampler cursor.** Every random op takes ``seed`` and ``offset``; two calls with different
offsets never share a Philox counter. A :class:`PhiloxStream` hands out consecutive offsets, one
per op call, the way torch's generator advances its Philox offset, so a loop of sampler steps
never reuses randomness and the same seed replays the same run, on CPU or CUDA.

**Keyed noise** (training, evaluation, any loop over batches). A draw is keyed by what it is
for, never by process layout: (seed, purpose, global step, global sample index).

* The purpose (a :class:`Purpose` or any string, plus optional ids such as a dropout layer's
  name) and the run's seed pick the Philox key: ``stream_seed(seed, purpose, *ids)`` = the first
  63 bits of BLAKE2b(seed, purpose, ids). Distinct (seed, purpose, ids) give unrelated streams,
  so ``(seed=0, batch 1)`` and ``(seed=1, batch 0)`` share nothing (unlike ``seed + i``).
* Sample g of global step s draws elements 0, 1, ... of the stream at offset ``(s << 32) | g``
  (:func:`mdfast.ops.uniform_rows`), where g is the sample's index in the step's *global* batch.
  A sample's numbers therefore do not depend on how the global batch is split over processes and
  gradient-accumulation micro-batches: 1 process and N processes draw the same noise.

A :class:`SampleCursor` keys a sampler's op calls the same way (step = the call's number, g =
the sample's index in the generation job): ``mdfast sample`` gives sample g the same tokens
whatever batch, process or resumed run draws it.

A :class:`NoiseKey` holds (seed, step, this process's global sample indices, global batch size);
the trainer activates one per micro-batch with :func:`noise_key`, and :func:`draw`,
:func:`stratified` and :class:`mdfast.models.dropout.KeyedDropout` read it. With no key active
they fall back to ``torch.rand`` / ``torch.nn.functional.dropout`` (torch's global generator or
the ``generator`` given), so objectives still work in a user's own loop. Under ``torch.compile``
the draws run eagerly (a graph break): the step and sample indices are data, not constants to
specialise and recompile on.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import hashlib
import secrets
from dataclasses import dataclass, field

import torch

__all__ = [
    "NoiseKey",
    "PhiloxStream",
    "Purpose",
    "SampleCursor",
    "current_noise_key",
    "draw",
    "noise_key",
    "stratified",
    "stream_seed",
]

_INT64_MAX = 2**63 - 1
_MAX_STEP = 2**31 - 1
_SHARED_INDEX = 2**32 - 1  # the sample index of draws shared by a whole step; no sample has it


def _check_int(value, name: str, hi: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"mdfast: argument '{name}' must be an int, got {value!r}")
    if not 0 <= value <= hi:
        raise ValueError(f"mdfast: argument '{name}' must be in [0, {hi}], got {value}")
    return value


class PhiloxStream:
    """A seed and a running offset.

    >>> stream = PhiloxStream(seed=1234)
    >>> stream.next()
    (1234, 0)
    >>> stream.next()
    (1234, 1)
    """

    def __init__(self, seed: int | None = None, offset: int = 0):
        if seed is None:
            seed = secrets.randbits(63)
        for name, value in (("seed", seed), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"mdfast: argument '{name}' must be an int, got {value!r}")
            if not 0 <= value <= _INT64_MAX:
                raise ValueError(f"mdfast: argument '{name}' must be in [0, 2**63), got {value}")
        self.seed = seed
        self.offset = offset

    def next(self, calls: int = 1) -> tuple[int, int]:
        """(seed, offset) for the next op call; reserves ``calls`` consecutive offsets."""
        if calls < 1:
            raise ValueError(f"mdfast: argument 'calls' must be >= 1, got {calls}")
        if self.offset + calls > _INT64_MAX:
            raise OverflowError("mdfast: Philox offset exhausted for this seed")
        out = (self.seed, self.offset)
        self.offset += calls
        return out

    def state_dict(self) -> dict:
        return {"seed": self.seed, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(state["seed"], state["offset"])

    def __repr__(self) -> str:
        return f"PhiloxStream(seed={self.seed}, offset={self.offset})"


class Purpose(str, enum.Enum):
    """What a keyed draw is for; each purpose (with its ids) is its own stream."""

    TIME = "time"  # diffusion time t, one per sample
    MASK = "mask"  # forward-process masking, one per token (or digit)
    DROPOUT = "dropout"  # dropout masks; ids = (layer name,)
    LABEL_DROP = "label_drop"  # classifier-free guidance: replace the label by the null class
    EPSILON = "epsilon"  # IMDM's continuous noise of masked positions
    REVERSE = "reverse"  # reverse-step decisions of hand-written samplers (e.g. IMDM)
    WINDOW = "window"  # semi-autoregressive windows; ids = (window index,)
    BATCH = "batch"  # one sampler call per batch of a multi-batch job; ids = (batch index,)
    SAMPLER = "sampler"  # a sampler's op calls keyed per sample (SampleCursor): step = call k


@functools.lru_cache(maxsize=4096)
def _stream_seed(seed: int, purpose: str, ids: tuple) -> int:
    text = repr(("mdfast", seed, purpose, ids)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def stream_seed(seed: int, purpose: Purpose | str, *ids) -> int:
    """The Philox seed of the stream (``seed``, ``purpose``, ``ids``): 63 bits of BLAKE2b of the
    three, so streams of different seeds, purposes or ids are unrelated. ``ids`` are ints or
    strings (e.g. a window index, a layer name)."""
    _check_int(seed, "seed")
    name = purpose.value if isinstance(purpose, Purpose) else str(purpose)
    for i in ids:
        if not isinstance(i, (int, str)) or isinstance(i, bool):
            raise TypeError(f"mdfast: stream ids must be ints or strings, got {i!r}")
    return _stream_seed(seed, name, tuple(ids))


@dataclass(frozen=True)
class NoiseKey:
    """Keys the draws of one (micro-)batch: ``seed`` of the run, global ``step``, the global
    indices ``index`` [b] of this process's samples in the step's global batch, and the global
    batch size ``batch_size`` (for stratified draws). Sample g draws from offset
    ``(step << 32) | g`` of each purpose's stream (see the module docstring)."""

    seed: int
    step: int
    index: torch.Tensor
    batch_size: int
    _offsets: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_int(self.seed, "seed")
        _check_int(self.step, "step", _MAX_STEP)
        _check_int(self.batch_size, "batch_size")
        index = torch.as_tensor(self.index, dtype=torch.int64).reshape(-1).cpu()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.batch_size):
            raise ValueError(
                f"mdfast: NoiseKey 'index' must lie in [0, batch_size={self.batch_size}), got "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        if self.batch_size >= _SHARED_INDEX:
            raise ValueError(
                f"mdfast: NoiseKey 'batch_size' must be < 2**32 - 1, got {self.batch_size}"
            )
        object.__setattr__(self, "index", index)

    @classmethod
    def for_batch(cls, seed: int, step: int, batch_size: int) -> NoiseKey:
        """The key of a whole batch drawn in one process: indices 0..batch_size-1."""
        return cls(seed, step, torch.arange(batch_size), batch_size)

    def __len__(self) -> int:
        return self.index.numel()

    def offsets(self, device=None) -> torch.Tensor:
        """int64[b]: ``(step << 32) | index`` on ``device`` (cached per device)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        if device not in self._offsets:
            self._offsets[device] = ((self.step << 32) | self.index).to(device)
        return self._offsets[device]

    @torch.compiler.disable
    def uniform(
        self,
        purpose: Purpose | str,
        shape=(),
        *ids,
        dtype: torch.dtype = torch.float64,
        device=None,
    ) -> torch.Tensor:
        """Uniforms in (0, 1) of shape [b, *shape]: sample i's numbers from its own stream."""
        from mdfast import ops

        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = 1
        for s in shape:
            n *= int(s)
        seed = stream_seed(self.seed, purpose, *ids)
        return ops.uniform_rows(self.offsets(device), n, seed, dtype).view(len(self), *shape)

    @torch.compiler.disable
    def shared_uniform(
        self, purpose: Purpose | str, shape=(), *ids, dtype=torch.float64, device=None
    ) -> torch.Tensor:
        """Uniforms of shape ``shape`` shared by every sample (and process) of this step."""
        from mdfast import ops

        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        offset = (self.step << 32) | _SHARED_INDEX
        return ops.uniform(shape, stream_seed(self.seed, purpose, *ids), offset, dtype, device)

    @torch.compiler.disable
    def stratified(self, purpose: Purpose | str, *ids, device=None) -> torch.Tensor:
        """float64[b]: v_g = (u_g + g) / batch_size, one uniform per stratum
        [g / B, (g + 1) / B) of the *global* batch (MDLM's antithetic draw), so the strata do not
        depend on the batch split."""
        u = self.uniform(purpose, (), *ids, device=device)
        return (u + self.offsets(device).bitwise_and(2**32 - 1).double()) / self.batch_size

    def op_args(self, purpose: Purpose | str, *ids) -> list[tuple[int, int]]:
        """(seed, offset) of each sample for an op that takes one (seed, offset) per call
        (:func:`mdfast.ops.sample_x0`, :func:`mdfast.ops.mask_step`): sample i calls it on the
        (seed, purpose, ids) stream at offset ``(step << 32) | index[i]``, the offset
        :meth:`uniform` reads, so its numbers do not depend on the other samples of the call."""
        seed = stream_seed(self.seed, purpose, *ids)
        return [(seed, off) for off in self.offsets().tolist()]

    def select(self, rows) -> NoiseKey:
        """The key of a subset of this key's samples (``rows``: indices or a bool mask)."""
        return NoiseKey(
            self.seed, self.step, self.index[torch.as_tensor(rows).cpu()], self.batch_size
        )


class SampleCursor:
    """The keyed counterpart of :class:`PhiloxStream` for a sampler whose samples carry global
    indices (sample g of a generation job): the k-th :meth:`next` is the :class:`NoiseKey`
    (seed, step k, ``index``), so op call k draws sample g's numbers from the
    :data:`Purpose.SAMPLER` stream at offset ``(k << 32) | g`` (:meth:`NoiseKey.op_args`,
    :meth:`NoiseKey.uniform`). The same seed gives sample g the same numbers whatever batch it
    runs in, on any device and any number of processes.

    >>> cursor = SampleCursor(7, torch.tensor([3, 9]))
    >>> cursor.next().step, cursor.next().step
    (0, 1)
    """

    purpose = Purpose.SAMPLER

    def __init__(self, seed: int, index):
        _check_int(seed, "seed")
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1).cpu()
        if index.numel() and int(index.min()) < 0:
            raise ValueError(
                f"mdfast: argument 'sample_index' must be >= 0, got {int(index.min())}"
            )
        self.seed = seed
        self.index = index
        self.batch_size = int(index.max()) + 1 if index.numel() else 1
        self.step = 0

    def next(self, calls: int = 1) -> NoiseKey:
        """The key of the next op call; reserves ``calls`` consecutive steps (the key of the
        first)."""
        if calls < 1:
            raise ValueError(f"mdfast: argument 'calls' must be >= 1, got {calls}")
        key = self.at(self.step)
        self.step += calls
        return key

    def at(self, step: int) -> NoiseKey:
        """The key of op call ``step`` (one reserved by :meth:`next`)."""
        return NoiseKey(self.seed, step, self.index, self.batch_size)

    def __len__(self) -> int:
        return self.index.numel()


_ACTIVE: contextvars.ContextVar[NoiseKey | None] = contextvars.ContextVar(
    "mdfast_noise_key", default=None
)


@contextlib.contextmanager
def noise_key(key: NoiseKey | None):
    """Make ``key`` the active key for :func:`draw`, :func:`stratified` and keyed dropout inside
    the block (``None``: no key, torch's RNG)."""
    token = _ACTIVE.set(key)
    try:
        yield key
    finally:
        _ACTIVE.reset(token)


def current_noise_key() -> NoiseKey | None:
    """The active :class:`NoiseKey`, or None."""
    return _ACTIVE.get()


def _active_for(purpose, batch: int, generator) -> NoiseKey | None:
    if generator is not None:
        return None
    key = _ACTIVE.get()
    if key is not None and len(key) != batch:
        name = purpose.value if isinstance(purpose, Purpose) else purpose
        raise ValueError(
            f"mdfast: noise '{name}' asked for {batch} samples but the active NoiseKey holds "
            f"{len(key)} sample indices (the batch dimension must be the key's samples)"
        )
    return key


@torch.compiler.disable
def draw(
    purpose: Purpose | str,
    size,
    *ids,
    device=None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniforms in (0, 1) of ``size`` = (batch, ...): keyed by the active :class:`NoiseKey`
    (dim 0 = its samples), else ``torch.rand`` (from ``generator`` if given, which always wins).
    """
    size = (size,) if isinstance(size, int) else tuple(size)
    key = _active_for(purpose, size[0], generator)
    if key is None:
        return torch.rand(size, generator=generator, device=device, dtype=dtype)
    return key.uniform(purpose, size[1:], *ids, dtype=dtype, device=device)


@torch.compiler.disable
def stratified(
    purpose: Purpose | str,
    n: int,
    *ids,
    device=None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` stratified uniforms, one per stratum: over the active key's global batch
    (:meth:`NoiseKey.stratified`), else over these n (``u_i / n + i / n``, MDLM's
    ``_sample_t``)."""
    key = _active_for(purpose, n, generator)
    if key is None:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return (u / n + torch.arange(n, device=device, dtype=dtype) / n) % 1
    return key.stratified(purpose, *ids, device=device).to(dtype)
