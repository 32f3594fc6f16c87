#!/usr/bin/env python3
"""Coverage and handovers of a topology's aircraft and ground stations over a period.

A small example of netemu's Python API (no root needed):

    python3 scenarios/coverage.py topologies/kepler.yaml --hours 6 --step 10
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netemu.errors import InputError
from netemu.model.topology import NodeKind, load_topology
from netemu.plan.planner import Planner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topology", type=Path, nargs="?", default=Path("topologies/kepler.yaml"))
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--step", type=float, default=10.0, help="seconds between epochs")
    args = parser.parse_args()
    try:
        topo = load_topology(args.topology)
    except InputError as exc:
        print(f"coverage: {exc}", file=sys.stderr)
        return 2

    users = [n for n in topo.nodes if n.kind is not NodeKind.SATELLITE]
    covered: Counter[str] = Counter()
    handovers: Counter[str] = Counter()
    epochs = 0
    for epoch in Planner(topo).run(topo.start, args.hours * 3600, args.step):
        epochs += 1
        served = {topo.nodes[b].name for b in epoch.up.b.tolist()}
        covered.update(n.name for n in users if n.name in served)
        handovers.update(e["node"] for e in epoch.events if e["type"] == "handover")

    table = Table(title=f"{topo.name}: {args.hours:g} h from {topo.start:%Y-%m-%d %H:%M} UTC")
    for col in ("node", "kind", "covered", "handovers"):
        table.add_column(col)
    for n in users:
        table.add_row(
            n.name, n.kind.value, f"{100 * covered[n.name] / epochs:.1f}%", str(handovers[n.name])
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
