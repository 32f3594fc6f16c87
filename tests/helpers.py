"""Helpers shared by netemu's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"

# Vallado's SGP4 verification satellite 00005 ("Revisiting Spacetrack Report #3").
VANGUARD_L1 = "1 00005U 58002B   00179.78495062  .00000023  00000-0  28098-4 0  4753"
VANGUARD_L2 = "2 00005  34.2682 348.7242 1859667 331.7664  19.3264 10.82419157413667"


def run_netemu(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the netemu CLI as a user would, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "netemu.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=300,
    )
