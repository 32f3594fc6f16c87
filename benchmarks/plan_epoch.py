#!/usr/bin/env python3
"""Benchmark: one epoch of geometry (positions + all feasible links) at scale.

Prints one JSON object. netemu's vectorised path (SatrecArray + matrix
rotations + numpy link checks) is timed against a naive baseline measured in
the same run on the same epochs: one Skyfield ``EarthSatellite.at()`` per
satellite and a Python loop over the candidate link pairs. Both must find the
same links, or the benchmark fails.

    python benchmarks/plan_epoch.py [TOPOLOGY] [--epochs N] [--baseline-epochs M]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from skyfield.api import EarthSatellite
from skyfield.framelib import itrs

from netemu.api import Planner, load_topology
from netemu.model.constants import EARTH_RADIUS_KM
from netemu.model.skydata import timescale
from netemu.plan.geometry import epochs

REPO = Path(__file__).resolve().parent.parent


def naive_epoch(topo, sats, pairs, t):
    """Positions one satellite at a time, then each +Grid pair checked in Python."""
    pos = [sat.at(t).frame_xyz(itrs).km for sat in sats]
    up = []
    limit = topo.link_defaults[next(iter(topo.link_defaults))].max_range_km
    g = EARTH_RADIUS_KM + topo.isl.grazing_altitude_km
    for a, b in pairs:
        pa, pb = pos[a], pos[b]
        d = pb - pa
        dist = float(np.sqrt(d @ d))
        s = min(max(-(pa @ d) / (d @ d), 0.0), 1.0)
        closest = pa + s * d
        if dist <= limit and float(np.sqrt(closest @ closest)) > g:
            up.append((a, b))
    return up


def stats_ms(samples):
    ms = sorted(x * 1000 for x in samples)
    return {
        "median": round(statistics.median(ms), 3),
        "p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "max": round(ms[-1], 3),
        "n": len(ms),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "topology", nargs="?", default=str(REPO / "topologies/starlink-shell1.yaml")
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--baseline-epochs", type=int, default=5)
    args = parser.parse_args()

    topo = load_topology(args.topology)
    planner = Planner(topo)
    ts = timescale()
    times = [epochs(topo.start + timedelta(seconds=i), 0, 1)[0] for i in range(args.epochs)]

    # netemu: what the live controller does each epoch (one time, all nodes).
    held = None
    samples = []
    for t in times:
        t0 = time.perf_counter()
        pos = planner.geometry.positions_km(t)
        held = planner.links.evaluate(pos, held)
        samples.append(time.perf_counter() - t0)
    links_up = len(held)

    # Whole plans are vectorised over time as well: epochs per second.
    t0 = time.perf_counter()
    n_plan = sum(1 for _ in planner.run(topo.start, args.epochs - 1, 1.0))
    plan_rate = n_plan / (time.perf_counter() - t0)

    # Baseline on the first epochs, checked against netemu's links.
    sats = [EarthSatellite.from_satrec(rec, ts) for rec in topo.satrecs]
    pairs = list(zip(planner.links.grid_a.tolist(), planner.links.grid_b.tolist(), strict=True))
    base = []
    for t in times[: args.baseline_epochs]:
        t0 = time.perf_counter()
        naive = naive_epoch(topo, sats, pairs, t)
        base.append(time.perf_counter() - t0)
    ours = planner.links.evaluate(planner.geometry.positions_km(times[args.baseline_epochs - 1]))
    ours_isl = sorted(
        k for k, kind in zip(ours.keys(), ours.kind.tolist(), strict=True) if kind == 0
    )
    if ours_isl != sorted(naive):
        print(json.dumps({"error": "baseline and netemu disagree on the links"}))
        return 1

    ours_ms, base_ms = stats_ms(samples), stats_ms(base)
    print(
        json.dumps(
            {
                "benchmark": "plan_epoch",
                "what": "positions of all nodes + every feasible link, one epoch",
                "topology": topo.name,
                "satellites": len(topo.satellites),
                "nodes": len(topo.nodes),
                "links_up": links_up,
                "netemu_ms": ours_ms,
                "baseline": "EarthSatellite.at() per satellite, Python loop over +Grid pairs",
                "baseline_ms": base_ms,
                "speedup": round(base_ms["median"] / ours_ms["median"], 1),
                "plan_epochs_per_s": round(plan_rate, 1),
                "goal_ms": 20,
                "meets_goal": ours_ms["median"] <= 20,
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
