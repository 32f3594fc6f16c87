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


def train_access_yaml(start: str) -> str:
    """Topology text: the four-satellite train (no ISLs) over ground station gs_north."""
    return f"""
name: t
start: {start}
satellites:
  - tle: {{file: {TOPOLOGIES / "train.tle"}}}
    names: "t{{n}}"
ground_stations:
  - {{name: gs_north, lat_deg: 12.1, lon_deg: 71.9, altitude_km: 0.0}}
isl: {{policy: none}}
"""
