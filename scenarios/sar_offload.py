#!/usr/bin/env python3
"""SAR offload: the same imagery processed in orbit vs. sent raw to the ground (bent pipe).

On topologies/kepler.yaml, two phases on one live emulation with the same
seeded frames: (1) in orbit: the sensor satellite sends each tile over the
ISLs to the nearest free compute satellite, which sends track reports to
the patrol aircraft; (2) bent pipe: the sensor sends the raw tiles down to
a ground station (by default one the sensor reaches then), processed there
on GPUs, and the reports go back up to the aircraft. Side by side: latency to the aircraft
and raw bytes sent down to the ground. Run as root:

    sudo .venv/bin/python scenarios/sar_offload.py [--frames 20]

Results in results/sar_offload/{in_orbit,bent_pipe}/ and comparison.json.
"""

from __future__ import annotations

import json
import sys

from rich.table import Table

from netemu.formats import stamp
from netemu.model.topology import NodeKind
from netemu.services import measure, scenario
from netemu.services.deploy import Deployment


def phase(dep: Deployment, name: str, args, sensor: str, computes: list[str], consumer: str,
          ground_gpus: int) -> dict:  # fmt: skip
    """One pipeline on the running emulation; its figures (results in <results>/<name>)."""
    sub = Deployment(dep.emu, dep.results / name, dep.engine, dep.backend, dep.hold_ms, dep.image)
    with sub:
        sub.consumer(consumer)
        services = [
            sub.compute(c, [consumer], [sensor], slots=None if dep.emu.topology.by_name[c].gpus
                        else ground_gpus)
            for c in computes
        ]  # fmt: skip
        app = sub.sensor(sensor, services, **scenario.sensor_options(args))
        sub.wait(app, timeout=args.frames * args.interval + 60)
        dep.emu.wait(3.0)
        sub.stop()
        figures = scenario.finish(sub, f"sar_offload/{name}", args)
    # Raw bytes that left the sensor (fragments refused for want of a route not
    # counted), and those addressed to a ground station: down a space-ground link.
    ground = {
        a.endpoint for a in services if dep.emu.topology.by_name[a.label].kind is NodeKind.GROUND
    }
    frames = [r for _, r in measure.records(figures["logs"], "sensor", "frame")]
    sent = [(r["bytes"] * (1 - r["unsent"] / r["fragments"]), r["to"]) for r in frames]
    figures["bytes"] = {
        "raw_frames": sum(b for b, _ in sent),
        "raw_to_ground": sum(b for b, to in sent if to in ground),
        "reports_delivered": figures["summary"]["consumers"][consumer]["delivered"],
    }
    return figures


def main() -> int:
    p = scenario.parser(__doc__, frames=20, speed=1.0)
    p.add_argument("--ground", help="ground station of the bent pipe (default: a reachable one)")
    p.add_argument("--ground-gpus", type=int, default=4, help="GPUs at the ground station")
    p.add_argument("--consumer", default=None, help="default: the first aircraft")
    args = p.parse_args()

    def body(console) -> int:
        topo = scenario.load(args)
        sensor = scenario.sensor_node(topo)
        consumer = args.consumer or topo.aircraft[0].name
        scenario.check_nodes(topo, [consumer, *([args.ground] if args.ground else [])])
        in_orbit = [n.name for n in topo.satellites if n.gpus and n.name != sensor]
        wall_s = 2 * (args.frames * args.interval + 20)
        with scenario.deployed("sar_offload", args, topo, wall_s) as dep:
            ground = args.ground or next(
                (g.name for g in topo.ground_stations if dep.emu.route(sensor, g.name)), None
            )
            if ground is None or dep.emu.route(sensor, ground) is None:
                console.print(f"[yellow]no path from {sensor} to {ground or 'a ground station'}"
                              " now: bent-pipe frames are lost until there is one[/]")  # fmt: skip
                ground = ground or topo.ground_stations[0].name
            figures = {
                "bent_pipe": phase(dep, "bent_pipe", args, sensor, [ground], consumer,
                                   args.ground_gpus),
                "in_orbit": phase(dep, "in_orbit", args, sensor, in_orbit, consumer, 0),
            }  # fmt: skip
        t = Table(title=f"{sensor} -> {consumer}: in orbit vs bent pipe via {ground}")
        for col in ("pipeline", "got", "lost", "e2e p50 ms", "e2e p95 ms", "uplink p50",
                    "inference p50", "downlink p50", "MB raw sent to ground"):  # fmt: skip
            t.add_column(col)
        for name, f in figures.items():
            s = f["summary"]["consumers"][consumer]
            st = s["stages_ms"]
            t.add_row(
                name, str(s["delivered"]), str(s["lost"]),
                *(f"{st[k][q]:.1f}" if st.get(k) else "-"
                  for k, q in (("e2e", "p50"), ("e2e", "p95"), ("uplink", "p50"),
                               ("inference", "p50"), ("downlink", "p50"))),
                f"{f['bytes']['raw_to_ground'] / 1e6:.0f}",
            )  # fmt: skip
        console.print(t)
        out = (args.results or scenario.REPO / "results" / "sar_offload") / "comparison.json"
        phases = {k: {"summary": v["summary"], "bytes": v["bytes"], "ran_on": v["meta"]}
                  for k, v in figures.items()}  # fmt: skip
        out.write_text(json.dumps({**stamp("results"), **phases}, indent=2, default=float))
        scenario.describe(console, figures["bent_pipe"])
        console.print(f"comparison: {out}")
        return 0

    return scenario.run_main("sar_offload", body)


if __name__ == "__main__":
    sys.exit(main())
