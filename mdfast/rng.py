"""The (seed, offset) cursor that samplers hand to mdfast's random ops.

Every random op takes ``seed`` and ``offset``; two calls with different offsets never share a
Philox counter (``csrc/include/mdfast/philox.h``). A :class:`PhiloxStream` hands out consecutive
offsets, one per op call, the way torch's generator advances its Philox offset, so a loop of
sampler steps never reuses randomness and the same seed replays the same run, on CPU or CUDA.
"""

from __future__ import annotations

import secrets

_INT64_MAX = 2**63 - 1


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


def derived_seed(seed: int, *ids) -> int:
    """A 63-bit Philox seed for the draws named ``ids`` (ints or strings) of a run with
    ``seed``: the first 63 bits of BLAKE2b over both, so different ``ids`` give unrelated
    streams (unlike ``seed + i``) and nothing depends on how the work is split."""
    import hashlib

    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str)):
            raise TypeError(f"mdfast: seed ids must be ints or strings, got {i!r}")
    text = repr(("mdfast", int(seed), *ids)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
