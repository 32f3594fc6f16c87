"""Helpers for tests that run a live emulation (root, real namespaces)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netemu.testing import Network, received
from netemu.topology import load_topology

from helpers import TOPOLOGIES

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def train_topology(tmp_path: Path, extra: str = "", start: str | None = None):
    """topologies/train.yaml with extra YAML appended (e.g. link_defaults)."""
    text = (
        (TOPOLOGIES / "train.yaml")
        .read_text()
        .replace("file: train.tle", f"file: {TOPOLOGIES / 'train.tle'}")
    )
    if start:
        text = text.replace("start: 2026-06-21T03:05:00Z", f"start: {start}")
    path = tmp_path / "train.yaml"
    path.write_text(text + "\n" + extra)
    return load_topology(path)


def start_receiver(emu, node: str, duration: float, port: int = 9000) -> subprocess.Popen:
    return Network(emu).probe_receiver(node, duration, port)


def send(emu, src: str, dst: str, count: int, interval: float, port: int = 9000):
    return Network(emu).probe_sender(src, dst, count, interval, port=port)


def stream(emu, src: str, dst: str, count: int, interval: float) -> list[dict]:
    """Send ``count`` timestamped datagrams from src to dst; return those that arrived."""
    # Listen long enough for a slow sender (Python under QEMU runs ~10x slower).
    rx = start_receiver(emu, dst, duration=1.5 * count * interval + 2.0)
    tx = send(emu, src, dst, count=count, interval=interval)
    got = received(rx)
    tx.wait()
    return got


def leftovers(run: str) -> list[str]:
    """Anything of this run's still on the machine: namespaces, processes."""
    found = (
        [n for n in os.listdir("/run/netns") if n.startswith(f"netemu-{run}-")]
        if (os.path.isdir("/run/netns"))
        else []
    )
    ps = subprocess.run(
        # tcpdump -i tx-PEER / rx-PEER: a capture's recorder (netemu.capture).
        ["pgrep", "-af", f"mininet:|netemu-engine-|netemu run.*{run}|tcpdump -i [tr]x-"],
        capture_output=True,
        text=True,
    ).stdout
    found += [
        line for line in ps.splitlines() if "pgrep" not in line and not _dead(line.split()[0])
    ]
    return found


def _dead(pid: str) -> bool:
    """Gone, or a zombie: dead and holding nothing, until init collects its exit status
    (a killed controller's engine, reparented to init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
