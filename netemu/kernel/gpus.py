"""The machine's GPUs as netemu sees them (CuPy's view: what the services can use)."""

from __future__ import annotations

import functools


@functools.cache
def cuda_devices() -> list[str]:
    """Names of the CUDA GPUs CuPy can use (none without CuPy or a driver)."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        return [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(count)]
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return []
