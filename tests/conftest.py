"""Shared fixtures: the devices whose kernels can run here, and a switch that forces the
pure-PyTorch reference path through the public wrappers."""

from __future__ import annotations

import os
import secrets

import pytest
import torch

import mdfast
from mdfast import _extension

CUDA_RUNNABLE = torch.cuda.is_available() and "cuda" in _extension.BACKENDS
DEVICES = ["cpu", *(["cuda"] if CUDA_RUNNABLE else [])]


def pytest_report_header(config):
    info = mdfast.build_info()
    return [
        f"mdfast {info['version']}: extension={info['extension']} backends={info['backends']} "
        f"torch={info['torch']} cuda_available={info['cuda_available']}"
    ]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every device with runnable kernels: cpu always, cuda when a GPU and the CUDA build exist."""
    return torch.device(request.param)


@pytest.fixture(params=["kernel", "reference"])
def path(request, monkeypatch) -> str:
    """Run the test through the compiled kernel and again through the reference fallback."""
    if request.param == "kernel" and not _extension.BACKENDS:
        pytest.skip("compiled kernels not built (the reference run of this test still runs)")
    if request.param == "reference":
        monkeypatch.setattr("mdfast._extension.has_kernel", lambda device: False)
    return request.param


@pytest.fixture
def fresh_seed() -> int:
    """A new random seed every run (tests must hold for any seed), printed on failure."""
    seed = int(os.environ.get("MDFAST_TEST_SEED", secrets.randbits(62)))
    print(f"fresh_seed={seed} (rerun with MDFAST_TEST_SEED={seed})")
    return seed
