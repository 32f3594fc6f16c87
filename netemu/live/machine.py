"""What a live run needs from the machine, checked before anything is made.

Root, the system tools, and memory enough for the topology: the machine's
available memory or, tighter, that of a memory cgroup this process runs in (a
container's, a systemd unit's ``MemoryMax``), above which the kernel's OOM killer
would end the run part-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from netemu.errors import InputError

#: bash: the hosts' shells; grep: Mininet counts the CPUs with it.
REQUIRED_TOOLS = ("mnexec", "ip", "tc", "iptables", "bash", "grep")
#: What a live node costs the machine (namespace, links, qdiscs, routes, controller
#: state): ~0.6 MiB measured at 1,590 nodes (benchmarks/results-live_scale.json), of
#: which ~0.2 MiB a bare namespace and ~86 KiB a veth pair; with room for other kernels.
MIB_PER_NODE = 2.0
MIB_BASE = 64.0


def preflight(extra_tools: tuple[str, ...] = ()) -> None:
    """What a live run needs from the machine, checked before anything is created."""
    if os.geteuid() != 0:
        raise InputError("netemu run needs root for network namespaces (try: sudo netemu run ...)")
    missing = [t for t in (*REQUIRED_TOOLS, *extra_tools) if shutil.which(t) is None]
    if missing:
        raise InputError(
            f"missing system tools: {', '.join(missing)} (run scripts/provision to install them)"
        )
    # OpenBLAS allocates its work buffer at the first matrix product and exit()s the
    # process if it cannot (under ulimit -v): let that happen before anything is made.
    np.ones((2, 2)) @ np.ones((2, 2))


def check_memory(n_nodes: int, available: tuple[float, str] | None = None) -> None:
    """Refuse a topology the machine cannot hold live (before anything is created)."""
    need = MIB_BASE + MIB_PER_NODE * n_nodes
    have, where = available or available_mib()
    if need > have:
        raise InputError(
            f"{n_nodes:,} nodes need about {need / 1024:.1f} GiB to emulate live, and "
            f"{where} has {have / 1024:.1f} GiB available: use a machine with more memory, "
            "or 'netemu plan' (no namespaces) for the schedule alone"
        )


def mem_available_mib() -> float:
    """The machine's ``MemAvailable``: what a bring-up phase took is its drop (kernel
    objects and processes alike)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory (``VmRSS``), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def available_mib() -> tuple[float, str]:
    """Memory a run can still take, and what limits it: the machine's available memory,
    or the tighter limit of a memory cgroup this process is in (a container's, a
    systemd unit's MemoryMax) above which the kernel's OOM killer ends the run."""
    have, where = mem_available_mib(), "this machine"
    for cgroup, headroom in _cgroup_headroom_mib():
        if headroom < have:
            have, where = headroom, f"memory cgroup {cgroup}"
    return have, where


def _cgroup_headroom_mib() -> list[tuple[str, float]]:
    """(cgroup, limit minus use) for each memory-limited cgroup above this process,
    cgroup v2 (memory.max) or v1 (memory.limit_in_bytes)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                root, limit, use = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
            elif "memory" in controllers.split(","):
                root = Path("/sys/fs/cgroup/memory")
                limit, use = "memory.limit_in_bytes", "memory.usage_in_bytes"
            else:
                continue
            group = root / path.lstrip("/")
            while group.is_relative_to(root):
                with contextlib.suppress(OSError, ValueError):  # no such file, "max"
                    free = int((group / limit).read_text()) - int((group / use).read_text())
                    found.append(("/" + str(group.relative_to(root)).strip("."), free / 2**20))
                if group == root:
                    break
                group = group.parent
    return found
