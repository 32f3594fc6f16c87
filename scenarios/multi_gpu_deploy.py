#!/usr/bin/env python3
"""Deploy one inference service across 6 GPUs on 2 spacecraft and check every instance.

As the seed's partners do: one instance per GPU (3 GPUs on each of two
compute satellites of topologies/kepler.yaml), each pinned to its GPU and
listening on its own port. The sensor satellite sends frames to the
instances in turn over the inter-satellite links; the check passes when
every instance came up and its reports reached the consumer. Prints the
latency per instance. Run as root:

    sudo .venv/bin/python scenarios/multi_gpu_deploy.py [--spacecraft kep1 kep2]

Results in results/multi_gpu_deploy/ (instances.json besides the usual files).
"""

from __future__ import annotations

import json
import sys

from rich.table import Table

from netemu.services import measure, scenario
from netemu.services.app import FRAGMENT_PORT


def main() -> int:
    p = scenario.parser(__doc__, frames=18, interval=0.5, size=512)
    p.add_argument("--spacecraft", nargs=2, default=["kep1", "kep2"])
    p.add_argument("--gpus-each", type=int, default=3)
    p.add_argument("--consumer", default="c2_bodo")
    args = p.parse_args()

    def body(console) -> int:
        topo = scenario.load(args)
        sensor = scenario.sensor_node(topo)
        scenario.check_nodes(topo, [*args.spacecraft, args.consumer])
        wall_s = args.frames * args.interval + 20
        with scenario.deployed("multi_gpu_deploy", args, topo, wall_s) as dep:
            dep.consumer(args.consumer)
            instances = [
                dep.compute(craft, [args.consumer], [sensor], slots=1, port=FRAGMENT_PORT + k,
                            first_gpu=k, label=f"{craft}/gpu{k}")
                for craft in args.spacecraft
                for k in range(args.gpus_each)
            ]  # fmt: skip
            console.print(
                f"{len(instances)} instances up: " + ", ".join(i.label for i in instances)
            )
            app = dep.sensor(sensor, instances, policy="round-robin",
                             **scenario.sensor_options(args))  # fmt: skip
            dep.wait(app, timeout=wall_s + 60)
            dep.emu.wait(3.0)
            routes = {c: dep.emu.route(sensor, c) for c in args.spacecraft}
            dep.stop()
            figures = scenario.finish(dep, "multi_gpu_deploy", args)
            rows = figures["rows"]
        t = Table(title=f"one service on {len(instances)} GPUs: {sensor} -> instance -> "
                        f"{args.consumer} (ms)")  # fmt: skip
        for col in ("instance", "ISL path", "reports", "e2e p50", "e2e max", "inference p50"):
            t.add_column(col)
        per = {}
        for inst in instances:
            mine = [r for r in rows if r["compute"] == inst.label]
            e2e = measure.percentiles(r["e2e_ms"] for r in mine)
            inf = measure.percentiles(r["inference_ms"] for r in mine)
            node = inst.label.split("/")[0]
            per[inst.label] = {"endpoint": inst.endpoint, "reports": len(mine), "e2e_ms": e2e,
                               "inference_ms": inf, "path": routes[node]}  # fmt: skip
            t.add_row(inst.label, " > ".join(routes[node] or ["-"]), str(len(mine)),
                      f"{e2e['p50']:.1f}" if e2e else "-", f"{e2e['max']:.1f}" if e2e else "-",
                      f"{inf['p50']:.1f}" if inf else "-")  # fmt: skip
        console.print(t)
        out = figures["paths"]["json"].with_name("instances.json")
        out.write_text(json.dumps(per, indent=2, default=float) + "\n")
        scenario.describe(console, figures)
        silent = [k for k, v in per.items() if v["reports"] == 0]
        if silent:
            console.print(f"[red]no answer from {', '.join(silent)}[/]")
            return 1
        console.print(f"[green]all {len(per)} instances answered across the ISLs[/]")
        return 0

    return scenario.run_main("multi_gpu_deploy", body)


if __name__ == "__main__":
    sys.exit(main())
