"""PhiloxStream hands out consecutive, never-repeating offsets and round-trips its state."""

from __future__ import annotations

import pytest
import torch

from mdfast import ops
from mdfast.rng import PhiloxStream


def test_stream_advances_and_replays(fresh_seed):
    a, b = PhiloxStream(fresh_seed), PhiloxStream(fresh_seed)
    draws_a = [ops.uniform((64,), *a.next()) for _ in range(3)]
    draws_b = [ops.uniform((64,), *b.next()) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(draws_a, draws_b, strict=True))
    assert not torch.equal(draws_a[0], draws_a[1])
    assert a.next(calls=5) == (fresh_seed, 3) and a.offset == 8


def test_stream_state_round_trip(fresh_seed):
    a = PhiloxStream(fresh_seed, offset=41)
    a.next()
    b = PhiloxStream(0)
    b.load_state_dict(a.state_dict())
    assert b.next() == a.next() == (fresh_seed, 42)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1, "offset": -2}, ValueError, "offset"),
        ({"seed": "7"}, TypeError, "seed"),
    ],
)
def test_stream_bad_input(kwargs, error, name):
    with pytest.raises(error, match=f"'{name}'"):
        PhiloxStream(**kwargs)


def test_stream_bad_calls():
    with pytest.raises(ValueError, match="'calls'"):
        PhiloxStream(1).next(0)
