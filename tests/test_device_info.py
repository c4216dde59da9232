"""Device facts for build_info() and the benchmark floors: arch lists, bandwidth from the memory
clock and bus width, the driver-attribute reader (on a stand-in driver here; on the real one
when a GPU is visible)."""

from __future__ import annotations

import types

import pytest
import torch

import mdfast
from mdfast import device_info


@pytest.mark.parametrize(
    ("arch_list", "expected"),
    [
        ("8.0;9.0+PTX", ["sm_80", "sm_90", "compute_90"]),
        ("7.5 8.6+PTX", ["sm_75", "sm_86", "compute_86"]),
        ("9.0a", ["sm_90a"]),
        ("Hopper", ["Hopper"]),
        ("", []),
        (None, []),
    ],
)
def test_parse_arch_list(arch_list, expected):
    assert device_info.parse_arch_list(arch_list) == expected


def test_theoretical_bandwidth_of_known_parts():
    # H100 SXM: 2619 MHz HBM3 on a 5120-bit bus; H200: 3201 MHz HBM3e on 6144 bits
    assert device_info.theoretical_bandwidth(2_619_000, 5120) == pytest.approx(3.352e12, rel=1e-3)
    assert device_info.theoretical_bandwidth(3_201_000, 6144) == pytest.approx(4.917e12, rel=1e-3)
    assert device_info.theoretical_bandwidth(None, 6144) is None
    assert device_info.theoretical_bandwidth(3_201_000, 0) is None


def _fake_driver(values: dict, name=b"Fake GPU\0\0\0", fail_on=None):
    """A stand-in for cuda.bindings.driver: results are (CUresult, value...) tuples."""
    attr = types.SimpleNamespace(**{v: v for v in device_info._DRIVER_ATTRIBUTES.values()})

    def get_attribute(which, dev):
        return (1 if which == fail_on else 0, values[which])

    return types.SimpleNamespace(
        CUdevice_attribute=attr,
        cuInit=lambda flags: (0,),
        cuDeviceGet=lambda index: (0, 100 + index),
        cuDeviceGetAttribute=get_attribute,
        cuDeviceGetName=lambda n, dev: (0, name),
        cuDeviceTotalMem=lambda dev: (0, 141 * 2**30),
    )


H200_ATTRIBUTES = {
    "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT": 132,
    "CU_DEVICE_ATTRIBUTE_CLOCK_RATE": 1_980_000,
    "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE": 3_201_000,
    "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH": 6144,
    "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE": 60 * 2**20,
    "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": 232448,
    "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR": 9,
    "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR": 0,
}


def test_driver_reader_maps_attributes():
    raw = device_info._from_driver(_fake_driver(H200_ATTRIBUTES), 1)
    assert raw["name"] == "Fake GPU"
    assert (raw["major"], raw["minor"], raw["sm_count"]) == (9, 0, 132)
    assert raw["memory_clock_khz"] == 3_201_000 and raw["memory_bus_width_bits"] == 6144
    assert raw["total_memory_bytes"] == 141 * 2**30 and raw["source"] == "cuda.bindings"


def test_driver_reader_raises_on_a_driver_error():
    bad = _fake_driver(H200_ATTRIBUTES, fail_on="CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE")
    with pytest.raises(RuntimeError, match="CUDA driver error"):
        device_info._from_driver(bad, 0)


def test_build_info_reports_archs_and_device():
    info = mdfast.build_info()
    assert info["cuda_archs"] == device_info.parse_arch_list(info["compiled"].get("cuda_arch_list"))
    if not torch.cuda.is_available():
        assert info["device"] is None
        return
    dev = info["device"]
    major, minor = torch.cuda.get_device_capability()
    assert dev["capability"] == f"{major}.{minor}"
    assert dev["sm_count"] == torch.cuda.get_device_properties(0).multi_processor_count
    assert dev["theoretical_bandwidth_gbps"] is None or dev["theoretical_bandwidth_gbps"] > 100
    if "CUDA" in info["backends"]:  # the build runs on this GPU: SASS or JIT-compiled PTX
        assert dev["kernel_image"]["runnable"], dev["kernel_image"]
        assert dev["kernel_image"]["sass"].startswith("sm_")
