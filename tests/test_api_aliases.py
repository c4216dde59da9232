"""Moved names keep working: ``mdfast.prime`` (now :mod:`mdfast.digits`) and the seed-style
baselines once in :mod:`mdfast.reference` (now :mod:`mdfast.baselines`), each with a
DeprecationWarning; the op surface is reachable as before."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import mdfast
from mdfast import baselines, digits


def test_mdfast_prime_is_a_deprecated_alias_of_digits():
    sys.modules.pop("mdfast.prime", None)
    with pytest.warns(DeprecationWarning, match="mdfast.digits"):
        prime = importlib.import_module("mdfast.prime")
    for name in digits.__all__:
        assert getattr(prime, name) is getattr(digits, name)


@pytest.mark.parametrize("name", [*baselines.__all__, "MDLM_NEG_INFINITY"])
def test_reference_seed_names_resolve_to_baselines_with_a_warning(name):
    with pytest.warns(DeprecationWarning, match="mdfast.baselines"):
        value = getattr(mdfast.reference, name)
    assert value is getattr(baselines, "SEED_NEG_INFINITY" if name.startswith("MDLM") else name)


def test_reference_holds_no_seed_code_and_unknown_names_still_fail():
    assert not any(n.startswith("seed_") for n in vars(mdfast.reference))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mdfast.reference.nope  # noqa: B018


def test_op_surface_unchanged():
    for name in mdfast.ops.__all__:
        assert callable(getattr(mdfast.ops, name))
    assert callable(mdfast.ops.masked_ce)  # the function, not its family module
    loss = mdfast.ops.masked_ce(torch.zeros(2, 3), torch.tensor([0, 2]))
    torch.testing.assert_close(loss, torch.full((2,), torch.tensor(3.0).log().item()))


def test_digit_powers_have_one_home():
    """b^(ℓ−1−j) in mdfast.digits only; the twins and the Prime module use it."""
    assert digits.powers(3, 4).tolist() == [27, 9, 3, 1]
    c = torch.arange(81)
    assert torch.equal(digits.smallest_class(digits.to_digits(c, 3, 4), 3), c)
    masked = torch.tensor([[3, 1, 3, 2]])  # the mask id 3 counts as digit 0
    assert digits.smallest_class(masked, 3).tolist() == [0 * 27 + 1 * 9 + 0 * 3 + 2]
