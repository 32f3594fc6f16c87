"""What runs as root, and what is handed back to the user who ran ``sudo``."""

from __future__ import annotations

import os
from pathlib import Path


def invoking_user() -> tuple[int, int] | None:
    """(uid, gid) of the user behind ``sudo``; None when not run through sudo."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    return (int(uid), int(gid)) if uid and gid else None


def chown_to_invoker(path: str | Path) -> None:
    """Under sudo, results belong to the user who asked for them.

    The file, and the folders above it that lie inside the working directory
    (those netemu made for results); nothing outside it but the file itself.
    """
    user = invoking_user()
    path = Path(path)
    if user is None or not path.exists():
        return
    os.chown(path, *user)
    cwd = Path.cwd().resolve()
    for parent in path.resolve().parents:
        if parent == cwd or not parent.is_relative_to(cwd):
            break
        os.chown(parent, *user)


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p``; under sudo, the folders made belong to the invoking user."""
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    user = invoking_user()
    if user:
        for p in made:
            os.chown(p, *user)
    return path


def chown_tree_to_invoker(folder: str | Path) -> None:
    """Under sudo, a results folder netemu made, and all in it, belong to the invoking user."""
    user = invoking_user()
    if user is None or not Path(folder).exists():
        return
    chown_to_invoker(folder)  # and the folders above it that netemu made
    for path in Path(folder).rglob("*"):
        os.chown(path, *user)
