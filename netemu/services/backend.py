"""Where inference runs: the CPU (numpy/scipy) or a CUDA GPU (CuPy).

:func:`choose` picks CUDA automatically when CuPy is installed and sees a
GPU, else the CPU; ``cpu`` and ``cuda`` force one (``cuda`` fails clearly
when it is not there). A :class:`Backend` runs detection on one device: each
worker slot of a compute service gets its own (GPU ``slot % gpus``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netemu.errors import InputError
from netemu.kernel.gpus import cuda_devices
from netemu.services.detect import detect


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "cuda"
    device: str  # what it runs on, for results: a CPU model or a GPU name
    gpu_index: int | None = None

    def detect(self, image: np.ndarray) -> np.ndarray:
        if self.gpu_index is None:
            return detect(image)
        import cupy
        from cupyx.scipy import ndimage

        with cupy.cuda.Device(self.gpu_index):
            found = detect(cupy.asarray(image), xp=cupy, ndimage=ndimage)
            cupy.cuda.Stream.null.synchronize()
        return found


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def choose(kind: str = "auto", slot: int = 0) -> Backend:
    """The backend for worker ``slot``: ``auto``, ``cpu`` or ``cuda``."""
    if kind not in ("auto", "cpu", "cuda"):
        raise InputError(f"--backend must be auto, cpu or cuda, got {kind!r}")
    gpus = cuda_devices() if kind != "cpu" else []
    if kind == "cuda" and not gpus:
        raise InputError("--backend cuda: no CUDA GPU usable (install cupy-cuda12x and a driver)")
    if gpus:
        i = slot % len(gpus)
        return Backend("cuda", gpus[i], i)
    return Backend("cpu", cpu_name())
