"""Images as users have them (netemu.kernel.containers.provide_image), live: an image
loaded from a podman archive (a docker-archive tarball) by a topology's containers:
entry, its instance running on its node; an archive without the image named."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from netemu.kernel.containers import PODMAN, image_exists, podman_works
from netemu.live.emulation import Emulation

from helpers import leftovers, needs_root, train_topology

BUSYBOX = Path("/usr/bin/busybox")

pytestmark = [
    needs_root,
    pytest.mark.skipif(not podman_works(), reason="podman is not installed or does not work"),
]


def tiny_archive(folder: Path) -> tuple[Path, str]:
    """A 2 MB image (static busybox as sh and sleep), saved as a docker-archive, its
    tag no longer on the machine: what a partner would hand over."""
    if not BUSYBOX.exists():
        pytest.fail("busybox-static is missing: scripts/provision installs it")
    tag = "localhost/netemu-test-tiny:" + hashlib.sha256(BUSYBOX.read_bytes()).hexdigest()[:12]
    root = folder / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "sleep", "cat"):
        (root / "bin" / tool).symlink_to("busybox")
    with tarfile.open(folder / "rootfs.tar", "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run([*PODMAN, "import", str(folder / "rootfs.tar"), tag], check=True,
                   capture_output=True)  # fmt: skip
    archive = folder / "tiny.tar"
    subprocess.run([*PODMAN, "save", "-q", "-o", str(archive), tag], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*PODMAN, "rmi", "-f", tag], check=True, capture_output=True)
    assert not image_exists(tag)
    return archive, tag


def test_an_image_loaded_from_an_archive_runs_on_its_node(tmp_path):
    archive, tag = tiny_archive(tmp_path)
    topo = train_topology(tmp_path, f"""
containers:
  - {{name: tiny, image: "{tag}", archive: {archive}, nodes: t2, command: "sleep 60"}}
""")  # fmt: skip
    with Emulation(topo, shaper="wire", run_name="tarch") as emu:
        (instance,) = emu.containers()
        assert (instance["node"], instance["state"]) == ("t2", "running")
        assert image_exists(tag)
    assert leftovers("tarch") == []


def test_an_archive_without_the_image_named_is_one_line(tmp_path):
    archive, tag = tiny_archive(tmp_path)
    topo = train_topology(tmp_path, f"""
containers:
  - {{name: tiny, image: "localhost/other:1", archive: {archive}, nodes: t2}}
""")  # fmt: skip
    emu = Emulation(topo, shaper="wire", run_name="tarch2")
    with pytest.raises(Exception, match=r"tiny\.tar holds no image named localhost/other:1"):
        emu.start()
    assert leftovers("tarch2") == []
    subprocess.run([*PODMAN, "rmi", "-f", tag], capture_output=True)
