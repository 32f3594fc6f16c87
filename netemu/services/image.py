"""The services' image: netemu's sensor, inference and consumer as a container image.

Two layers, both made offline where only Debian mirrors are reachable (like the CI
machine): a base of Debian's python3-numpy, -scipy and -scapy (debootstrap, then
``podman import``; :func:`base_image`, tagged by its contents, the base of the
tests' and scenarios' own images too), and netemu's code on it, built by podman
from ``containers/services/Containerfile.in`` as users' images are
(:func:`services_image`, tagged by the code's hash: a code change is a new image in
under a second). ``containers/services/Containerfile`` makes the same from a
registry. The deployment runs them as :mod:`netemu.live.workloads` runs users'
containers; where podman does not work, as processes (:func:`choose_engine`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from netemu.errors import InputError
from netemu.kernel.containers import PODMAN, ImageError, image_exists, podman_works, provide_image

REPO = Path(__file__).resolve().parents[2]
CODE = REPO / "netemu"
CONTAINERFILE = REPO / "containers" / "services" / "Containerfile.in"
PACKAGES = ("python3", "python3-numpy", "python3-scipy", "python3-scapy")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
BASE = (
    "localhost/netemu-base:"
    + hashlib.sha256(" ".join((SUITE, *PACKAGES)).encode()).hexdigest()[:12]
)


def choose_engine(kind: str = "auto") -> str:
    """``podman`` (the services image made if needed), ``process``, or ``auto``:
    podman where it works."""
    if kind not in ("auto", "podman", "process"):
        raise InputError(f"--runtime must be auto, podman or process, got {kind!r}")
    works = kind != "process" and podman_works()
    if kind == "podman" and not works:
        raise InputError("--runtime podman: podman is not installed or does not work here")
    return "podman" if works else "process"


def _code_files() -> list[Path]:
    return sorted(p for p in CODE.rglob("*.py") if "__pycache__" not in p.parts)


def services_image(log=sys.stderr) -> str:
    """The services image for this code: present already, or built on the base."""
    base = base_image(log)
    digest = hashlib.sha256(base.encode() + CONTAINERFILE.read_bytes())
    for path in _code_files():
        digest.update(str(path.relative_to(CODE)).encode() + b"\0" + path.read_bytes())
    image = f"localhost/netemu-services:{digest.hexdigest()[:12]}"
    if image_exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="netemu-services-", dir="/var/tmp") as tmp:
        context = Path(tmp)
        for path in _code_files():
            dest = context / "netemu" / path.relative_to(CODE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        containerfile = context / "Containerfile"
        containerfile.write_text(CONTAINERFILE.read_text().format(base=base))
        try:
            provide_image(image, build=(context, containerfile))
        except ImageError as exc:
            raise InputError(f"the services image: {exc}") from None
    _remove_older(image)
    return image


def _remove_older(image: str) -> None:
    """The services images of earlier code (one a code change, ~1 MB each, and they
    would pile up); one still in use stays (podman refuses)."""
    repo = image.rsplit(":", 1)[0]
    listed = subprocess.run([*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                            capture_output=True, text=True).stdout.split()  # fmt: skip
    if older := [t for t in listed if t != image]:
        subprocess.run([*PODMAN, "rmi", *older], capture_output=True)


def base_image(log=sys.stderr) -> str:
    """The base image: present already, or built offline from Debian packages."""
    if image_exists(BASE):
        return BASE
    if not shutil.which("debootstrap"):
        raise InputError("building the services image needs debootstrap (apt install debootstrap)")
    print(f"building container image {BASE} from Debian packages (once, ~1-2 min)", file=log)
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
            [*PODMAN, "import", "--change", "CMD=python3", "-", BASE],
            stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        tar.wait()
    return BASE
