#!/usr/bin/env python3
"""Long runs: does a day of orbits keep the controller's memory, its epoch timing and the
wire engine's held packets flat?

Runs topologies/kepler.yaml accelerated (a full day of orbits in ``--wall-minutes``, default
120: speed 12) with a steady UDP stream across the ISLs, and samples every
``--sample-s`` wall seconds: the controller's and the engine's resident memory, the
packets the engine holds, the epochs that came late, and how long each epoch's update
took. Prints JSON: the samples, and the first tenth of the run (the baseline) next to the
last tenth, with the growth per hour. Root. E.g. a quick look:

    sudo .venv/bin/python benchmarks/long_run.py --wall-minutes 10

Goal (issue 9): memory and epoch timing flat over the run; the engine does not leak
held packets (what it holds follows the traffic in flight, and is ~0 once traffic stops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from netemu.api import Emulation, load_topology

REPO = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topology", default=str(REPO / "topologies/kepler.yaml"))
    p.add_argument("--orbital-hours", type=float, default=24.0)
    p.add_argument("--wall-minutes", type=float, default=120.0)
    p.add_argument("--sample-s", type=float, default=30.0)
    p.add_argument("--rate-pps", type=float, default=200.0, help="the steady stream's rate")
    args = p.parse_args()
    wall_s = args.wall_minutes * 60
    speed = args.orbital_hours * 3600 / wall_s
    topo = load_topology(args.topology)
    src, dst = topo.satellites[0].name, topo.satellites[len(topo.satellites) // 2].name
    samples = []
    emu = Emulation(topo, speed=speed, step_s=1.0, shaper="wire", run_name="longrun")
    with emu:
        emu.start_controller()
        count = int(wall_s * args.rate_pps)
        stream = emu.host(src).popen(
            [sys.executable, "-m", "netemu.testing.probe", "send", "--to", emu.address(dst),
             "--count", str(count), "--interval", str(1 / args.rate_pps)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sink = emu.host(dst).popen(
            [sys.executable, "-m", "netemu.testing.probe", "recv", "--bind", emu.address(dst),
             "--duration", str(wall_s + 5)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        t0 = time.monotonic()
        engine = emu.shaper.pids[0]
        updates: list[float] = []
        while time.monotonic() - t0 < wall_s:
            emu.wait(args.sample_s)
            stats = emu.shaper_stats()
            last = emu.last_update
            updates.append(last.get("links_ms", 0) + last.get("routes_ms", 0))
            samples.append(
                {
                    "wall_s": round(time.monotonic() - t0, 1),
                    "orbital": emu.now().isoformat(),
                    "controller_rss_mib": round(rss_mib(os.getpid()), 1),
                    "engine_rss_mib": round(rss_mib(engine), 1),
                    "engine_held": stats["held"],
                    "late_epochs": emu.late_epochs,
                    "epochs": emu.epoch_index + 1,
                    "update_ms": round(updates[-1], 2),
                    "events": len(emu.events),
                }
            )
            print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
        stream.kill()
        emu.wait(1.0)  # what is in flight lands
        held_after = emu.shaper_stats()["held"]
        sink.kill()
    tenth = max(1, len(samples) // 10)
    first, last = samples[:tenth], samples[-tenth:]
    hours = (last[-1]["wall_s"] - first[0]["wall_s"]) / 3600 or 1e-9

    def summary(part: list[dict]) -> dict:
        return {
            k: round(float(np.mean([s[k] for s in part])), 2)
            for k in ("controller_rss_mib", "engine_rss_mib", "engine_held", "update_ms")
        }

    base, end = summary(first), summary(last)
    print(
        json.dumps(
            {
                "benchmark": "long_run",
                "topology": topo.name,
                "wall_minutes": args.wall_minutes,
                "orbital_hours": args.orbital_hours,
                "speed": round(speed, 2),
                "stream_pps": args.rate_pps,
                "baseline_first_tenth": base,
                "last_tenth": end,
                "growth_per_wall_hour": {
                    k: round((end[k] - base[k]) / hours, 2)
                    for k in ("controller_rss_mib", "engine_rss_mib")
                },
                "late_epochs": samples[-1]["late_epochs"],
                "epochs": samples[-1]["epochs"],
                "engine_held_after_traffic_stopped": held_after,
                "samples": samples,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
