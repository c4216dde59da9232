"""What the GPU is and whether this build's kernels run on it: read from the device itself.

The attributes come from the CUDA driver through cuda-python (``cuda.bindings.driver``) when it
is installed, else from ``torch.cuda.get_device_properties``. The benchmarks' floors use them::

    theoretical DRAM bandwidth = 2 (double data rate) x memory clock x bus width / 8   [bytes/s]

(an H100 SXM: 2 x 2.619 GHz x 5120 bit / 8 = 3.35 TB/s; an H200: 2 x 3.201 GHz x 6144 / 8 =
4.92 TB/s). ``kernel_image`` asks the CUDA runtime which of the build's images (SASS of an arch in
``TORCH_CUDA_ARCH_LIST``, or PTX compiled by the driver) runs on the device.
"""

from __future__ import annotations

import re

import torch

__all__ = ["cuda_device", "kernel_image", "parse_arch_list", "theoretical_bandwidth"]


def parse_arch_list(arch_list: str | None) -> list[str]:
    """The code a ``TORCH_CUDA_ARCH_LIST`` asks nvcc for: ``"8.0;9.0+PTX"`` -> ``["sm_80",
    "sm_90", "compute_90"]`` (SASS per arch, PTX for those marked +PTX; names like ``Hopper``
    are kept as written)."""
    out: list[str] = []
    for item in re.split(r"[;\s]+", arch_list or ""):
        if not item:
            continue
        arch, ptx = (item[:-4], True) if item.upper().endswith("+PTX") else (item, False)
        m = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)", arch)
        if m is None:
            out.append(item)
            continue
        num = f"{m.group(1)}{m.group(2)}{m.group(3)}"
        out.append(f"sm_{num}")
        if ptx:
            out.append(f"compute_{num}")
    return out


def theoretical_bandwidth(memory_clock_khz: float | None, bus_width_bits: float | None):
    """DRAM bytes/s from the memory clock (kHz, as the driver reports it) and the bus width (bits);
    None when either is unknown or zero."""
    if not memory_clock_khz or not bus_width_bits:
        return None
    return 2.0 * memory_clock_khz * 1e3 * bus_width_bits / 8.0


_DRIVER_ATTRIBUTES = {
    "sm_count": "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT",
    "sm_clock_khz": "CU_DEVICE_ATTRIBUTE_CLOCK_RATE",
    "memory_clock_khz": "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE",
    "memory_bus_width_bits": "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH",
    "l2_cache_bytes": "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE",
    "max_shared_memory_per_block_optin": "CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN",
    "major": "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR",
    "minor": "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR",
}


def _import_driver():
    try:
        from cuda.bindings import driver
    except ImportError:
        try:  # cuda-python < 12.6
            from cuda import cuda as driver
        except ImportError:
            return None
    return driver


def _from_driver(driver, index: int) -> dict:
    """Attributes of device ``index`` through the driver API; raises RuntimeError on a driver
    error (the caller falls back to torch)."""

    def ok(result):
        err, *values = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA driver error {err}")
        return values[0] if len(values) == 1 else values

    ok(driver.cuInit(0))
    dev = ok(driver.cuDeviceGet(index))
    attrs = {
        key: int(ok(driver.cuDeviceGetAttribute(getattr(driver.CUdevice_attribute, name), dev)))
        for key, name in _DRIVER_ATTRIBUTES.items()
    }
    name = ok(driver.cuDeviceGetName(256, dev))
    attrs["name"] = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    attrs["total_memory_bytes"] = int(ok(driver.cuDeviceTotalMem(dev)))
    attrs["source"] = "cuda.bindings"
    return attrs


def _from_torch(index: int) -> dict:
    p = torch.cuda.get_device_properties(index)
    return {
        "name": p.name,
        "major": p.major,
        "minor": p.minor,
        "sm_count": p.multi_processor_count,
        "sm_clock_khz": getattr(p, "clock_rate", None),
        "memory_clock_khz": getattr(p, "memory_clock_rate", None),
        "memory_bus_width_bits": getattr(p, "memory_bus_width", None),
        "l2_cache_bytes": getattr(p, "L2_cache_size", None),
        "max_shared_memory_per_block_optin": getattr(p, "shared_memory_per_block_optin", None),
        "total_memory_bytes": p.total_memory,
        "source": "torch",
    }


def kernel_image(index: int) -> dict | None:
    """Which image of this build the CUDA runtime runs on device ``index``: ``{"runnable",
    "sass", "ptx", "error"}`` (``sass``/``ptx`` like ``"sm_90"`` / ``"compute_90"``), or None when
    the extension has no CUDA kernels."""
    from mdfast import _extension

    probe = getattr(_extension._C, "cuda_kernel_image", None)
    if probe is None:
        return None
    info = dict(probe(index))
    return {
        "runnable": bool(info["runnable"]),
        "sass": f"sm_{info['binary_version']}" if info["runnable"] else None,
        "ptx": f"compute_{info['ptx_version']}" if info["runnable"] else None,
        "error": info["error"] or None,
    }


def cuda_device(index: int | None = None) -> dict | None:
    """The GPU ``index`` (default: the current one) as a dict, or None when no GPU is visible:
    ``name``, ``capability`` ("9.0"), ``sm_count``, ``sm_clock_mhz``, ``memory_clock_mhz``,
    ``memory_bus_width_bits``, ``theoretical_bandwidth_gbps``, ``l2_cache_mb``,
    ``total_memory_gib``, ``max_shared_memory_per_block_optin``, ``source`` (``cuda.bindings``
    or ``torch``), ``source_error`` (why cuda.bindings was not used) and ``kernel_image``."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if index is None else int(index)
    driver = _import_driver()
    why = None if driver is not None else "cuda-python (cuda.bindings) not installed"
    raw = None
    if driver is not None:
        try:
            raw = _from_driver(driver, index)
        except Exception as exc:  # a driver/bindings mismatch must not break build_info()
            why = f"cuda.bindings failed: {type(exc).__name__}: {exc}"
    if raw is None:
        raw = _from_torch(index)

    def mhz(khz):
        return None if not khz else round(khz / 1e3, 1)

    bw = theoretical_bandwidth(raw["memory_clock_khz"], raw["memory_bus_width_bits"])
    l2 = raw["l2_cache_bytes"]
    return {
        "index": index,
        "name": raw["name"],
        "capability": f"{raw['major']}.{raw['minor']}",
        "sm_count": raw["sm_count"],
        "sm_clock_mhz": mhz(raw["sm_clock_khz"]),
        "memory_clock_mhz": mhz(raw["memory_clock_khz"]),
        "memory_bus_width_bits": raw["memory_bus_width_bits"],
        "theoretical_bandwidth_gbps": None if bw is None else round(bw / 1e9, 1),
        "l2_cache_mb": None if not l2 else round(l2 / 2**20, 1),
        "total_memory_gib": round(raw["total_memory_bytes"] / 2**30, 1),
        "max_shared_memory_per_block_optin": raw["max_shared_memory_per_block_optin"],
        "source": raw["source"],
        "source_error": why,
        "kernel_image": kernel_image(index),
    }
