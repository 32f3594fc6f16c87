"""How service applications run on an emulated host: in a container or as a process.

- :class:`PodmanRuntime`: ``podman run`` joined to the host's network namespace
  (``--network ns:/run/netns/...``), the GPUs passed through via CDI when the
  machine has them (``--device nvidia.com/gpu=all``). The image is
  ``containers/services/Containerfile`` where a registry is reachable, or, on
  machines that only reach Debian mirrors (like the CI machine), built
  offline by :func:`ensure_image`: debootstrap with Debian's python3-numpy,
  -scipy and -scapy, then ``podman import``; cached by a tag that names its
  contents. netemu's own code is mounted read-only, so code changes need no
  rebuild.
- :class:`ProcessRuntime`: a plain process in the Mininet host, for machines
  without a container engine.

Facts behind the podman options (runc, cgroupfs, explicit ulimits) are in the
shared machine notes. Containers are named ``netemu-<run>-<node>-<app>``, so
:func:`netemu.kernel.containers.remove_containers` (and ``netemu clean``) find a killed run's.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from netemu.errors import InputError
from netemu.kernel.containers import PODMAN, image_exists, podman_works

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("python3", "python3-numpy", "python3-scipy", "python3-scapy")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
IMAGE = (
    "localhost/netemu-services:"
    + hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
)
CDI_SPECS = (Path("/etc/cdi/nvidia.yaml"), Path("/var/run/cdi/nvidia.yaml"))


@dataclass
class App:
    """One running application: its process (the app, or the podman client)."""

    node: str
    app: str
    proc: subprocess.Popen
    stderr: Path
    container: str | None = None
    label: str = ""  # what results call it (node, or node/instance)
    endpoint: str = ""  # ADDR:PORT where it receives, for a compute service
    stopped_by_fault: bool = False  # a lost or rebooting node took it down (netemu.model.faults)
    args: list[str] = field(default_factory=list)  # what it was started with (to restart it)

    def errors(self) -> str:
        """The end of what the app wrote to stderr."""
        try:
            return self.stderr.read_text()[-2000:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (podman forwards it), then SIGKILL; the return code. A container
        that outlives its client is removed with the others (:func:`remove`)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


def _module_args(app: str, args: list[str]) -> list[str]:
    return ["-m", f"netemu.services.{app}", *args]


class ProcessRuntime:
    name = "process"

    def start(self, emu, node: str, app: str, args: list[str], stderr: Path) -> App:
        with open(stderr, "w") as err:
            proc = emu.host(node).popen(
                [sys.executable, *_module_args(app, args)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        return App(node, app, proc, stderr)


class PodmanRuntime:
    name = "podman"

    def __init__(self, image: str = IMAGE):
        self.image = image
        self.image_checked = False
        self.gpus = any(p.exists() for p in CDI_SPECS)

    def start(self, emu, node: str, app: str, args: list[str], stderr: Path) -> App:
        # Checked once: podman would otherwise try to pull it, minutes where offline.
        if not self.image_checked and not image_exists(self.image):
            raise InputError(f"container image {self.image} is not on this machine (podman images)")
        self.image_checked = True
        netns = emu.netns[emu.topology.by_name[node].index]
        # netemu-<run>-<label>-<app>: the log's name, unique per instance.
        name = netns.removesuffix(node) + stderr.stem
        mounts = {str(REPO / "netemu"): "/opt/netemu/netemu:ro"}
        mounts |= {d: f"{d}:rw" for d in _log_dirs(args)}
        cmd = [
            *PODMAN, "run", "--rm", "--name", name,
            "--network", f"ns:/run/netns/{netns}",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
            "--security-opt", "label=disable", "-e", "PYTHONPATH=/opt/netemu",
            *(x for src, dst in mounts.items() for x in ("-v", f"{src}:{dst}")),
            *(["--device", "nvidia.com/gpu=all"] if self.gpus else []),
            self.image, "python3", *_module_args(app, args),
        ]  # fmt: skip
        with open(stderr, "w") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=emu.env,
                start_new_session=True,  # stopped by the controller, not by the terminal
            )
        return App(node, app, proc, stderr, container=name)


def _log_dirs(args: list[str]) -> set[str]:
    """Folders of the files an app writes (its --log), shared into the container."""
    return {str(Path(v).parent) for k, v in itertools.pairwise(args) if k == "--log"}


def choose(kind: str = "auto") -> ProcessRuntime | PodmanRuntime:
    """``podman`` (built image needed), ``process``, or ``auto``: podman where it works."""
    if kind not in ("auto", "podman", "process"):
        raise InputError(f"--runtime must be auto, podman or process, got {kind!r}")
    works = kind != "process" and podman_works()
    if kind == "podman" and not works:
        raise InputError("--runtime podman: podman is not installed or does not work here")
    if not works:
        return ProcessRuntime()
    ensure_image()
    return PodmanRuntime()


def ensure_image(image: str = IMAGE, log=sys.stderr) -> str:
    """The services image: present already, or built offline from Debian packages."""
    if image_exists(image):
        return image
    if not shutil.which("debootstrap"):
        raise InputError("building the services image needs debootstrap (apt install debootstrap)")
    print(f"building container image {image} from Debian packages (once, ~1-2 min)", file=log)
    with tempfile.TemporaryDirectory(prefix="netemu-image-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(root), MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for junk in ("usr/share/doc", "usr/share/locale", "usr/share/man", "var/cache/apt"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [*PODMAN, "import", "--change", "CMD=python3", "-", image],
            stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        tar.wait()
    return image
