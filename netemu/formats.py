"""What netemu's JSON outputs say about themselves: the netemu that wrote them and
the format's name and version (``"format": "netemu-plan/1"``), so that a reader can
tell what it holds before it relies on a key. A format's version goes up when a key
changes meaning or goes away (new keys do not change it)."""

from __future__ import annotations

import netemu

VERSIONS = {
    "plan": 1,  # netemu plan --json: one epoch per line
    "run-log": 1,  # a run's JSON lines (netemu.live.runlog)
    "analysis": 1,  # netemu analyze --json
    "stages": 1,  # netemu stages --json
    "results": 1,  # a scenario's summary.json (and its other JSON files)
    "partition": 1,  # netemu plan --machines M --json
}


def stamp(name: str) -> dict[str, str]:
    """The two keys a JSON output of format ``name`` begins with."""
    return {"netemu_version": netemu.__version__, "format": f"netemu-{name}/{VERSIONS[name]}"}
