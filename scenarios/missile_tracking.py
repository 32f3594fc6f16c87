#!/usr/bin/env python3
"""Defence tracking in orbit: sensor satellite -> nearest free compute satellite -> aircraft and C2.

On topologies/kepler.yaml: the sensor satellite (role ``sensor``) images a
seeded sea scene with moving targets (4 MB SAR tiles by default) and sends
each frame over the laser ISLs to the nearest compute satellite with a free
GPU slot (learnt from the services' heartbeats). The inference service
(CA-CFAR detection on a worker slot per GPU, Kalman tracking) sends track
reports to the patrol aircraft over its space-to-air link and to the C2 post
on the ground. Every report's latency is broken into stages; tracks are
scored against the scene's ground truth. Run as root:

    sudo .venv/bin/python scenarios/missile_tracking.py [--frames 30] [--speed 10]

Results in results/missile_tracking/: summary.json, reports.csv,
latency.png, stages.png, logs/ and the emulation's run.jsonl.
"""

from __future__ import annotations

import sys

from netemu.services import scenario


def main() -> int:
    p = scenario.parser(__doc__, frames=40, speed=10.0)
    p.add_argument("--computes", nargs="*", help="compute satellites (default: all with GPUs)")
    p.add_argument("--consumers", nargs="*", help="default: the aircraft and role c2")
    args = p.parse_args()

    def body(console) -> int:
        topo = scenario.load(args)
        sensors = [scenario.sensor_node(topo)]
        computes = args.computes or [
            n.name for n in topo.satellites if n.gpus and n.name not in sensors
        ]
        consumers = args.consumers or [n.name for n in topo.aircraft + topo.with_role("c2")]
        scenario.check_nodes(topo, computes + consumers)
        wall_s = args.frames * args.interval + 30  # deployment and the last reports
        with scenario.deployed("missile_tracking", args, topo, wall_s) as dep:
            console.print(
                f"[bold]{topo.name}[/]: sensor {sensors[0]} -> {len(computes)} compute "
                f"satellites -> {', '.join(consumers)}; {args.frames} frames of "
                f"{4 * args.size**2 / 1e6:.1f} MB, orbits x{args.speed:g}"
            )
            scenario.run_pipeline(dep, sensors, computes, consumers, args, wall_s)
            figures = scenario.finish(dep, "missile_tracking", args)
        console.print(scenario.table("sensor -> in-orbit compute -> consumers", figures))
        scenario.describe(console, figures)
        return 0

    return scenario.run_main("missile_tracking", body)


if __name__ == "__main__":
    sys.exit(main())
