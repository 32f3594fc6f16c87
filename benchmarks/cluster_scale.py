#!/usr/bin/env python3
"""Benchmark: one emulation over three simulated machines against one machine, same run.

Prints one JSON object. For the first ``--planes`` planes of Starlink shell 1
(72: all of it, 1,590 nodes), each ``--runs`` times, measured on this host:

- ``one_machine``: :func:`live_scale.bench_netemu` (bring-up and its phases,
  memory, epoch updates, fidelity on a path half the shell long, teardown);
- ``three_machines``: the same topology over three simulated machines
  (:class:`netemu.cluster.underlay.SimulatedMachines`, a Ray node each; the
  driver in the first), by :class:`netemu.api.ClusterEmulation`: Ray's start
  (not part of bring-up: a cluster is up before runs), bring-up and its phases,
  the host's memory drop and each machine's agent and engine resident memory,
  each epoch's update (planning, routing and every machine's apply call),
  fidelity on the same path (it crosses machines: the partition cuts the shell
  by plane), teardown.

All three simulated machines share this host's cores (2 here): the cluster's
figures are what one host carrying three machines' work shows, not what three
real machines would (docs/scaling.md estimates those from these).

Run as root:  sudo .venv/bin/python benchmarks/cluster_scale.py [--planes 72] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from live_scale import (  # noqa: E402
    bench_netemu,
    epoch_update,
    fidelity,
    mem_available_mib,
    probe_pairs,
    settled_mem_available_mib,
    shell_topology,
)

from netemu.api import ClusterEmulation  # noqa: E402
from netemu.cluster.underlay import SimulatedMachines, enter  # noqa: E402


def bench_cluster(topo, address: str, realtime_s: float, step_s: float) -> dict:
    """The cluster's figures (run in the first simulated machine: the driver's)."""
    before = settled_mem_available_mib()
    t0 = time.perf_counter()
    emu = ClusterEmulation(topo, address, run_name="benchcl", keep_history=True, step_s=step_s)
    try:
        emu.start()
        up = time.perf_counter() - t0
        memory = before - mem_available_mib()
        machines = {m: s["rss_mib"] for m, s in emu.stats().items()}
        nodes = {m.name: len(emu.partition.nodes_of(k)) for k, m in enumerate(emu.machines)}
        emu.start_controller()
        emu.wait(3.0)  # links acquire before the stream starts
        fid = fidelity(emu, probe_pairs(topo), realtime_s)
        route = emu.route(*probe_pairs(topo)["intra_shell"]) or []
        fid["intra_shell"]["machines"] = sorted({emu.machine_of(n) for n in route})
        update = epoch_update(emu, step_s, ("apply",), emu.controller.late_epochs)
        engines = {
            m: {k: s[k] for k in ("late", "worst_late_ms", "overload", "release_error_us")}
            for m, s in emu.stats().items()
        }
        links, across = len(emu.table), len(emu.links_across())
    finally:
        t1 = time.perf_counter()
        unreachable = emu.stop()
        down = time.perf_counter() - t1
    return {
        "up_s": round(up, 2),
        "up_phases_s": dict(emu.timings),
        "memory_mib": round(memory),
        "rss_mib": machines,
        "nodes": nodes,
        "links": links,
        "links_across_machines": across,
        "clocks": {m: vars(o) for m, o in emu.clock_offsets.items()},
        "epoch_update": update,
        "fidelity": fid,
        "engines": engines,
        "down_s": round(down, 2),
        "unreachable": unreachable,
    }


def three_machines(planes: int, realtime_s: float, step_s: float) -> dict:
    """Three simulated machines with Ray; the cluster part run in the first."""
    sim = SimulatedMachines("benchclm", 3)
    try:
        sim.make()
        t0 = time.perf_counter()
        address = sim.start_ray()
        ray_s = time.perf_counter() - t0
        p = subprocess.run(
            [*enter(sim.machines[0]), sys.executable, __file__, "--cluster-part", address,
             "--planes", str(planes), "--realtime-s", str(realtime_s), "--step", str(step_s)],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if p.returncode != 0:
            raise RuntimeError(f"the cluster part failed: {p.stderr[-3000:]}")
        return {"ray_start_s": round(ray_s, 1), **json.loads(p.stdout.splitlines()[-1])}
    finally:
        sim.remove()


def summary(rows: list[dict]) -> dict:
    """Median, min and max of the headline figures over the runs."""

    def spread(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out = {}
    for side in ("one_machine", "three_machines"):
        got = [r[side] for r in rows]
        fid = [g["fidelity"]["intra_shell"] for g in got]
        out[side] = {
            "up_s": spread([g["up_s"] for g in got]),
            "memory_mib": spread([g["memory_mib"] for g in got]),
            "epoch_update_median_ms": spread(
                [g["epoch_update"]["total_ms"]["median"] for g in got]
            ),
            "epoch_update_max_ms": spread([g["epoch_update"]["total_ms"]["max"] for g in got]),
            "fidelity_error_median_ms": spread([f["error_ms"]["median"] for f in fid]),
            "fidelity_error_p99_ms": spread([f["error_ms"]["p99"] for f in fid]),
            "fidelity_within_0.5ms": spread([f["within_0.5ms"] for f in fid]),
            "down_s": spread([g["down_s"] for g in got]),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planes", type=int, default=72, help="planes of shell 1 (72: all)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--realtime-s", type=float, default=30.0, help="seconds of probe stream")
    ap.add_argument("--step", type=float, default=1.0, help="seconds between epochs")
    ap.add_argument("--cluster-part", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (sudo): namespaces and Ray nodes are made", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        topo = shell_topology(args.planes, Path(tmp))
        if args.cluster_part:
            print(json.dumps(bench_cluster(topo, args.cluster_part, args.realtime_s, args.step)))
            return 0
        rows = []
        for _ in range(args.runs):
            rows.append(
                {
                    "one_machine": bench_netemu(topo, args.realtime_s, args.step),
                    "three_machines": three_machines(args.planes, args.realtime_s, args.step),
                }
            )
    print(
        json.dumps(
            {
                "benchmark": "cluster_scale",
                "nodes": len(topo.nodes),
                "cpus": os.cpu_count(),
                "runs": rows,
                "summary": summary(rows),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
