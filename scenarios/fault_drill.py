#!/usr/bin/env python3
"""Fault drill: defence tracking in orbit while the constellation breaks on purpose.

The missile_tracking pipeline on topologies/kepler.yaml (sensor kep0 -> the
nearest compute satellite with a free GPU -> patrol1 and c2_bodo), with faults
injected as it runs (orbital seconds after the start; --fault replaces them):

- ``cut:kep0-kep1@+100/150``: the sensor's laser link to kep1 is cut for
  150 s: frames reroute the long way round the ring (or to another compute
  node) while the link stays down;
- ``reboot:kep1@+300/120``: compute satellite kep1 reboots for 120 s: its
  service dies (frames in it are lost), the sensor turns to the next free
  compute node once its heartbeats stop, and kep1 returns (links acquire,
  service restarts);
- ``degrade:kep0-kep9@+500/100,loss=2``: 2% extra loss on the sensor's other
  ISL: frames lose fragments.

Prints the reports and end-to-end latency per consumer in each phase (the
faults in force), next to the usual table. What a run here showed (2 cores,
CPU, 70 frames at x10): the cut sends the sensor to kep9 (the nearest free
compute node the other way round) and e2e p50 rises from ~155 to ~232 ms
while it lasts; kep1's reboot cuts the aircraft off until kep1's links have
acquired again (patrol1 is on kep1 then): no reports for ~10 s after the
reboot; and 2% loss on one ISL loses *every* 4 MB frame (3,496 fragments, no
forward error correction: 0.98^3496), so nothing arrives while it lasts.
Run as root:

    sudo .venv/bin/python scenarios/fault_drill.py [--frames 70] [--fault KIND:TARGET@+S/S]

Results in results/fault_drill/ (latency.png marks the faults).
"""

from __future__ import annotations

import sys

import numpy as np
from rich.table import Table

from netemu.services import scenario

FAULTS = ["cut:kep0-kep1@+100/150", "reboot:kep1@+300/120", "degrade:kep0-kep9@+500/100,loss=2"]


def phases(events: list[dict]) -> list[tuple[str, float, float]]:
    """(faults in force, from, to) in wall unix seconds, between fault events."""
    active: list[str] = []
    out, start = [], 0.0
    for e in events:
        if e["type"] not in ("fault", "fault-cleared"):
            continue
        out.append((", ".join(active) or "no fault", start, e["unix_s"]))
        label = f"{e['fault']} {e['target']}"
        active = [*active, label] if e["type"] == "fault" else [a for a in active if a != label]
        start = e["unix_s"]
    out.append((", ".join(active) or "no fault", start, float("inf")))
    return [(name, a, b) for name, a, b in out if b > a]


def phase_table(rows: list[dict], events: list[dict]) -> Table:
    """Reports that arrived in each phase, and their end-to-end latency."""
    t = Table(title="end-to-end latency by phase (ms; reports by arrival)")
    for col in ("faults in force", "consumer", "reports", "p50", "p95", "max"):
        t.add_column(col, justify="left" if col in ("faults in force", "consumer") else "right")
    for name, a, b in phases(events):
        for consumer in sorted({r["consumer"] for r in rows}):
            mine = [r["e2e_ms"] for r in rows
                    if r["consumer"] == consumer and a <= r["arrival_ns"] / 1e9 < b]  # fmt: skip
            stats = np.percentile(mine, [50, 95, 100]) if mine else []
            t.add_row(name, consumer, str(len(mine)), *([f"{x:.1f}" for x in stats] or ["-"] * 3))
    return t


def main() -> int:
    p = scenario.parser(__doc__, frames=70, speed=10.0)
    args = p.parse_args()
    args.fault = args.fault or FAULTS

    def body(console) -> int:
        topo = scenario.load(args)
        sensors = [scenario.sensor_node(topo)]
        computes = [n.name for n in topo.satellites if n.gpus and n.name not in sensors]
        consumers = [n.name for n in topo.aircraft + topo.with_role("c2")]
        wall_s = args.frames * args.interval + 30
        with scenario.deployed("fault_drill", args, topo, wall_s) as dep:
            console.print(
                f"[bold]{topo.name}[/]: sensor {sensors[0]} -> {len(computes)} compute satellites "
                f"-> {', '.join(consumers)}; faults: {', '.join(args.fault)}"
            )
            scenario.run_pipeline(dep, sensors, computes, consumers, args, wall_s)
            figures = scenario.finish(dep, "fault_drill", args)
            events = list(dep.emu.events)
        console.print(scenario.table("sensor -> in-orbit compute -> consumers", figures))
        console.print(phase_table(figures["rows"], events))
        scenario.describe(console, figures)
        return 0

    return scenario.run_main("fault_drill", body)


if __name__ == "__main__":
    sys.exit(main())
