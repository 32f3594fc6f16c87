"""netemu's compiled parts: built from their C source beside the module that uses
them, with the machine's own compiler, cached by the source's hash.

The wire engine (a program) and the routes' inner loops (the composition's and
the aggregation's: shared libraries loaded with ctypes) are built by the live layer
the first time a run needs them, or by ``scripts/provision`` ahead of time; nothing
is ever downloaded. Pure code only loads a part where it was built (:func:`loaded`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CFLAGS = ["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra"]


class BuildError(RuntimeError):
    """A compiled part could not be built (no compiler, or the compiler failed)."""


def cache_dir() -> Path:
    if os.environ.get("NETEMU_CACHE"):
        return Path(os.environ["NETEMU_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/netemu")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "netemu"


def target(source: Path, name: str, flags: list[str]) -> Path:
    """Where the file built from ``source`` with ``CFLAGS + flags`` is kept (it may not
    be there yet): pure code loads a compiled part from here and never builds it."""
    options = [*CFLAGS, *flags]
    digest = hashlib.sha256(source.read_bytes() + " ".join(options).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}"


def loaded(source: Path, name: str, flags: list[str]) -> ctypes.CDLL | None:
    """The shared library built from ``source`` where it was built, else None (pure code
    then does the same work in NumPy)."""
    path = target(source, name, flags)
    try:
        return ctypes.CDLL(str(path)) if path.exists() else None
    except OSError:
        return None


def built(source: Path, name: str, flags: list[str], libs: list[str] = ()) -> Path:
    """The file built from ``source`` with ``CFLAGS + flags`` (a program, or with
    ``-shared`` a library), compiled now if this source and these flags never were."""
    options = [*CFLAGS, *flags]
    target_path = target(source, name, flags)
    if target_path.exists():
        return target_path
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BuildError(
            f"{source.name} is built from C source and no C compiler was found "
            "(run scripts/provision, or install gcc)"
        )
    target_path.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed: concurrent builds (pytest -n) never see half.
    fd, tmp = tempfile.mkstemp(dir=target_path.parent, prefix=".build-")
    os.close(fd)
    try:
        p = subprocess.run(
            [cc, *options, "-o", tmp, str(source), *libs], capture_output=True, text=True
        )
        if p.returncode != 0:
            raise BuildError(f"building {source.name} failed: {p.stderr.strip()[-500:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target_path
