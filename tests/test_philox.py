"""The counter-based RNG: Philox4x32-10 known answers, the documented uniform mapping, kernel ==
reference bit for bit, distribution, stream separation, opcheck, torch.compile (bad input:
test_op_contract.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import assert_all_written, poisoned
from scipy import stats

import mdfast
from mdfast import ops, reference
from mdfast._extension import BACKENDS

M32 = 0xFFFFFFFF

# Random123 known-answer vectors (kat_vectors, philox4x32_10).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

needs_kernels = pytest.mark.skipif(not BACKENDS, reason="compiled kernels not built")


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(path, device, counter, key, expected):
    out = ops.philox4x32(torch.tensor([counter], device=device), torch.tensor(key, device=device))
    assert out.dtype == torch.int64 and out.shape == (1, 4)
    assert tuple(out[0].tolist()) == expected


def test_philox_kernel_matches_reference_on_random_counters(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    counter = torch.randint(0, 2**32, (4097, 4), generator=g, dtype=torch.int64)
    key = torch.randint(0, 2**32, (2,), generator=g, dtype=torch.int64)
    expected = reference.philox4x32(counter, key)
    got = ops.philox4x32(counter.to(device), key.to(device)).cpu()
    assert torch.equal(got, expected)
    assert int(got.min()) >= 0 and int(got.max()) <= M32


def _documented_uniform(seed: int, offset: int, i: int, dtype: torch.dtype) -> float:
    """Element i of a uniform draw, composed by hand from the block function as philox.h says."""
    per_block = 2 if dtype == torch.float64 else 4
    block = i // per_block
    counter = torch.tensor([[block & M32, block >> 32, offset & M32, offset >> 32]])
    words = ops.philox4x32(counter, torch.tensor([seed & M32, seed >> 32]))[0].tolist()
    if dtype == torch.float64:
        j = 2 * (i % 2)
        k = ((words[j] << 32) | words[j + 1]) >> 11
        return 2.0**-54 if k == 0 else k * 2.0**-53
    k = words[i % 4] >> 8
    return 2.0**-25 if k == 0 else k * 2.0**-24


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_follows_documented_mapping(path, dtype, fresh_seed):
    seed, offset = fresh_seed, (fresh_seed * 7919) % 2**40 + 2**33  # offset uses both words
    u = ops.uniform((11,), seed, offset, dtype=dtype)
    for i in range(11):
        assert u[i].item() == _documented_uniform(seed, offset, i, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1,), (3,), (5, 7), (2, 3, 1001), (1 << 18,)])
def test_uniform_kernel_bitwise_equals_reference(device, dtype, shape, fresh_seed):
    offset = fresh_seed % 1000003
    expected = reference.uniform(shape, fresh_seed, offset, dtype=dtype)
    got = ops.uniform(shape, fresh_seed, offset, dtype=dtype, device=device)
    assert got.shape == shape and got.dtype == dtype and got.device.type == device.type
    assert torch.equal(got.cpu(), expected)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_out_writes_every_element(device, dtype, fresh_seed):
    out = poisoned((3, 1237), dtype, device)
    torch.ops.mdfast.uniform_out(out, fresh_seed, 5)
    assert_all_written(out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_open_interval_and_bits(path, device, dtype, fresh_seed):
    bits = 53 if dtype == torch.float64 else 24
    u = ops.uniform((1 << 20,), fresh_seed, 0, dtype=dtype, device=device).double().cpu()
    assert (u > 0).all() and (u < 1).all()
    k = u * 2.0**bits
    regular = k >= 1  # all but the k = 0 cell sit on the 2^-bits grid
    assert torch.equal(k[regular], k[regular].floor())
    # the lowest random bit is live: about half of the grid integers are odd
    odd = (k[regular].remainder(2) == 1).double().mean().item()
    assert abs(odd - 0.5) < 0.005
    # and the top bits too: a value below 2^-20 happens at rate 2^-20 (53/24-bit draws reach it)
    assert u.min().item() < 2.0**-14


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_kolmogorov_smirnov(device, dtype, fresh_seed):
    u = ops.uniform((200_000,), fresh_seed, 3, dtype=dtype, device=device).double().cpu().numpy()
    result = stats.kstest(u, "uniform")
    assert result.pvalue > 1e-6, result


def test_uniform_streams_do_not_overlap(device, fresh_seed):
    n = 1 << 16
    draws = [ops.uniform((n,), fresh_seed, off, device=device).cpu() for off in (0, 1, 2**32)]
    draws.append(ops.uniform((n,), fresh_seed ^ 1, 0, device=device).cpu())
    values = torch.cat(draws)
    # 53-bit values: a chance collision among 2^18 draws has probability ~2^-18
    assert torch.unique(values).numel() >= values.numel() - 1


def test_uniform_prefix_property(device, fresh_seed):
    """A shorter draw is a prefix of a longer one (element i depends only on i)."""
    long = ops.uniform((1001,), fresh_seed, 9, device=device)
    short = ops.uniform((5, 7), fresh_seed, 9, device=device)
    assert torch.equal(short.reshape(-1), long[:35])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_empty(path, dtype):
    assert ops.uniform((0, 3), 1, 1, dtype=dtype).shape == (0, 3)


# ------------------------------------------------------------------------------- uniform_rows


def _row_offsets(fresh_seed: int, rows: int) -> torch.Tensor:
    """Offsets that exercise both 32-bit words (step << 32 | index, as NoiseKey builds them)."""
    g = torch.Generator().manual_seed(fresh_seed)
    return (torch.randint(0, 2**20, (rows,), generator=g) << 32) | torch.randint(
        0, 2**32, (rows,), generator=g
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 1001])
def test_uniform_rows_equals_uniform_per_row(path, device, dtype, n, fresh_seed):
    """Row r is ops.uniform((n,), seed, offsets[r]) bit for bit, on the kernel and the
    reference path (itself checked against the per-row reference draw)."""
    offsets = _row_offsets(fresh_seed, 7)
    got = ops.uniform_rows(offsets.to(device), n, fresh_seed, dtype)
    assert got.shape == (7, n) and got.dtype == dtype and got.device.type == device.type
    for r, off in enumerate(offsets.tolist()):
        assert torch.equal(got[r].cpu(), reference.uniform((n,), fresh_seed, off, dtype=dtype))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_rows_out_writes_every_element(device, dtype, fresh_seed):
    out = poisoned((5, 1237), dtype, device)
    torch.ops.mdfast.uniform_rows_out(out, fresh_seed, _row_offsets(fresh_seed, 5).to(device))
    assert_all_written(out)


@needs_kernels
def test_uniform_rows_kernel_checks_shapes():
    offsets = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="'offsets'"):
        torch.ops.mdfast.uniform_rows_out(torch.empty(4, 2, dtype=torch.float64), 1, offsets)
    with pytest.raises(ValueError, match="'seed'"):
        torch.ops.mdfast.uniform_rows_out(torch.empty(3, 2, dtype=torch.float64), -1, offsets)
    with pytest.raises(RuntimeError, match="'out'"):
        torch.ops.mdfast.uniform_rows_out(torch.empty(3, dtype=torch.float64), 1, offsets)


@needs_kernels
def test_opcheck(device, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    counter = torch.randint(0, 2**32, (33, 4), generator=g, dtype=torch.int64).to(device)
    key = torch.randint(0, 2**32, (2,), generator=g, dtype=torch.int64).to(device)
    torch.library.opcheck(torch.ops.mdfast.philox4x32.default, (counter, key))
    for dtype in (torch.float64, torch.float32):
        out = torch.empty(17, 3, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.mdfast.uniform_out.default, (out, fresh_seed, 7))
        rows = torch.empty(5, 9, dtype=dtype, device=device)
        offsets = _row_offsets(fresh_seed, 5).to(device)
        torch.library.opcheck(
            torch.ops.mdfast.uniform_rows_out.default, (rows, fresh_seed, offsets)
        )


@needs_kernels
def test_torch_compile_fullgraph(device, fresh_seed):
    def noisy(x, counter, key):
        u = ops.uniform(x.shape, fresh_seed, 11, device=x.device)
        words = ops.philox4x32(counter, key)
        return x + u, words

    x = torch.randn(64, 5, dtype=torch.float64, device=device)
    counter = torch.randint(0, 2**32, (8, 4), dtype=torch.int64, device=device)
    key = torch.tensor([3, 4], device=device)
    compiled = torch.compile(noisy, fullgraph=True, backend="inductor")
    got = compiled(x, counter, key)
    expected = noisy(x, counter, key)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.skipif("cuda" not in BACKENDS or not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_equals_cpu_bit_for_bit(dtype, fresh_seed):
    cpu = ops.uniform((3, 100_003), fresh_seed, 77, dtype=dtype, device="cpu")
    cuda = ops.uniform((3, 100_003), fresh_seed, 77, dtype=dtype, device="cuda")
    assert torch.equal(cuda.cpu(), cpu)
    offsets = _row_offsets(fresh_seed, 33)
    rows = ops.uniform_rows(offsets, 2049, fresh_seed, dtype)
    assert torch.equal(ops.uniform_rows(offsets.cuda(), 2049, fresh_seed, dtype).cpu(), rows)
    counter = torch.randint(0, 2**32, (1000, 4), dtype=torch.int64)
    key = torch.tensor([fresh_seed & M32, fresh_seed >> 32])
    assert torch.equal(
        ops.philox4x32(counter.cuda(), key.cuda()).cpu(), ops.philox4x32(counter, key)
    )


# ------------------------------------------------------------------------------- packaging


def test_build_info_reports_backends():
    info = mdfast.build_info()
    assert info["torch"] == torch.__version__
    if info["extension"]:
        assert "CPU" in info["backends"]
        assert {"philox4x32", "uniform_out"} <= set(info["ops"])
        assert info["compiled"]["torch_version"] == torch.__version__
        assert ("CUDA" in info["backends"]) == info["compiled"]["cuda"]
    else:
        assert info["backends"] == [] and info["extension_error"]


def test_imports_and_works_without_extension():
    code = (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import mdfast\n"
        "msgs = [str(x.message) for x in w if 'mdfast' in str(x.message)]\n"
        "assert len(msgs) == 1 and 'MDFAST_DISABLE_EXTENSION' in msgs[0], msgs\n"
        "info = mdfast.build_info()\n"
        "assert not info['extension'] and info['backends'] == []\n"
        "u = mdfast.ops.uniform((5,), 1, 2)\n"
        "print(u.tolist())\n"
    )
    env = {**__import__("os").environ, "MDFAST_DISABLE_EXTENSION": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout.strip()) == reference.uniform((5,), 1, 2).tolist()
