"""The container engine as netemu runs it: podman, rootful, runc and cgroupfs.

Those work on every machine netemu supports. Here: its command, whether it works
on this machine, having an image (there, loaded from an archive, built from a
Containerfile or pulled), and finding and removing a run's containers
(``netemu clean`` too).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

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


def image_exists(image: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", image], capture_output=True).returncode == 0


class ImageError(RuntimeError):
    """An image that could not be had (pulled, loaded or built): podman's last words."""


def _podman(args: list[str], what: str, timeout_s: float) -> None:
    try:
        p = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: no answer within {timeout_s:.0f} s") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        raise ImageError(f"{what}: {last}")


def provide_image(
    image: str, archive: Path | None = None, build: tuple[Path, Path] | None = None
) -> str:
    """``image`` on this machine: there already, loaded from ``archive`` (podman load:
    docker-archive or OCI), built from (context, Containerfile), or pulled from a
    registry. Returns how it was had; raises :class:`ImageError` saying why not."""
    if build is not None:
        context, containerfile = build
        _podman(["build", "-q", "-t", image, "-f", str(containerfile), str(context)],
                f"building {image} from {containerfile}", 1800)  # fmt: skip
        return "built"
    if image_exists(image):
        return "present"
    if archive is not None:
        _podman(["load", "-q", "-i", str(archive)], f"loading {archive}", 600)
        if not image_exists(image):
            raise ImageError(f"{archive} holds no image named {image}")
        return "loaded"
    _podman(["pull", "-q", image], f"container image {image} is not on this machine, and "
            "pulling it failed", 300)  # fmt: skip
    return "pulled"
