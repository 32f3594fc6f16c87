"""The container engine as netemu runs it: podman, rootful, runc and cgroupfs.

Those work on every machine netemu supports. Here: its command, whether it works
on this machine, and finding and removing a run's containers (``netemu clean`` too).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess

PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime=runc"]


def podman_works() -> bool:
    if not shutil.which("podman"):
        return False
    return subprocess.run([*PODMAN, "info"], capture_output=True).returncode == 0


def remove(names: list[str]) -> None:
    """Remove these containers (one podman call; absent ones ignored)."""
    if names:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run([*PODMAN, "rm", "-f", "-i", "-t", "2", *names], capture_output=True)


def names(prefix: str) -> list[str]:
    """Containers, running or not, whose name starts with ``prefix`` (none without podman)."""
    if not shutil.which("podman"):
        return []
    out = subprocess.run(
        [*PODMAN, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout.split()
    return [n for n in out if n.startswith(prefix)]


def remove_containers(prefix: str) -> list[str]:
    """Remove containers whose name starts with ``prefix``; their names."""
    found = names(prefix)
    remove(found)
    return found
