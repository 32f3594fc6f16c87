#!/usr/bin/env python3
"""Benchmark: a live constellation at scale, netemu against stock Mininet.

Prints one JSON object. For each size (satellites taken from
topologies/starlink-shell1.yaml: the first P planes of 22), measured in the
same run on the same machine:

- netemu: bring-up time (with its phases), memory (the machine's
  MemAvailable drop, so shells, engine and kernel objects count), per-epoch
  update time (link shaping and routing, median and worst), teardown time;
- stock Mininet: ``addHost`` + ``addLink`` for the same nodes and links,
  its memory, ``net.stop()``, and one ``tc`` program per link change (timed
  on a sample, scaled to every link direction: labelled as such).

Run as root:  sudo .venv/bin/python benchmarks/live_scale.py [--sizes 110 506 1584]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netemu.emulation import Emulation  # noqa: E402
from netemu.topology import load_topology  # noqa: E402


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable")


def settled_mem_available_mib(timeout_s: float = 60.0) -> float:
    """MemAvailable once it stops moving: the kernel frees namespaces asynchronously,
    so memory of a run just torn down keeps coming back for a while."""
    last = mem_available_mib()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        time.sleep(1.0)
        now = mem_available_mib()
        if abs(now - last) < 4:
            return now
        last = now
    return last


def shell_topology(planes: int, tmp: Path):
    """The first ``planes`` planes of Starlink shell 1, spaced as in the full shell."""
    text = (REPO / "topologies/starlink-shell1.yaml").read_text()
    if planes < 72:
        text = text.replace(
            "planes: 72", f"planes: {planes}\n      raan_spread_deg: {360 * planes / 72}"
        )
    path = tmp / f"shell-{planes}.yaml"
    path.write_text(text)
    return load_topology(path)


def ms(values) -> dict:
    v = sorted(values)
    return {"median": round(statistics.median(v), 1), "max": round(v[-1], 1), "n": len(v)}


def bench_netemu(topo, epochs: int) -> dict:
    before = settled_mem_available_mib()
    t0 = time.perf_counter()
    emu = Emulation(topo, shaper="nfqueue", duration_s=120, run_name="bench")
    try:
        emu.start()
        up = time.perf_counter() - t0
        memory = before - mem_available_mib()
        links_ms, routes_ms = [], []
        for _ in range(epochs):
            emu._advance()
            links_ms.append(emu.last_update["links_ms"])
            routes_ms.append(emu.last_update["routes_ms"])
        n_links = len(emu.links)
        phases = dict(emu.timings)
    finally:
        t1 = time.perf_counter()
        emu.stop()
        down = time.perf_counter() - t1
    return {
        "up_s": round(up, 2),
        "up_phases_s": phases,
        "memory_mib": round(memory),
        "epoch_links_ms": ms(links_ms),
        "epoch_routes_ms": ms(routes_ms),
        "epoch_total_ms": ms([a + b for a, b in zip(links_ms, routes_ms, strict=True)]),
        "down_s": round(down, 2),
        "links": n_links,
    }


def bench_mininet(topo, link_pairs, sample: int) -> dict:
    from mininet.net import Mininet

    before = settled_mem_available_mib()
    t0 = time.perf_counter()
    net = Mininet(topo=None, controller=None, build=False)
    for node in topo.nodes:
        net.addHost(node.name, ip=None)
    links = [net.addLink(topo.nodes[a].name, topo.nodes[b].name) for a, b in link_pairs]
    up = time.perf_counter() - t0
    memory = before - mem_available_mib()
    # One tc program per change, the way a naive controller applies an epoch.
    t1 = time.perf_counter()
    done = 0
    for link in links[:sample]:
        for intf in (link.intf1, link.intf2):
            intf.node.cmd(
                f"tc qdisc replace dev {intf.name} root tbf rate 2500mbit "
                "burst 1250000 latency 50ms"
            )
            done += 1
    per_change = (time.perf_counter() - t1) / done
    t2 = time.perf_counter()
    net.stop()
    down = time.perf_counter() - t2
    return {
        "up_s": round(up, 2),
        "memory_mib": round(memory),
        "down_s": round(down, 2),
        "epoch_one_tc_per_change_ms": round(per_change * 2 * len(links) * 1000, 1),
        "epoch_note": f"one tc per link direction, timed on {done} changes, "
        f"scaled to {2 * len(links)}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[110, 506, 1584],
        help="satellites (multiples of 22)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sample", type=int, default=150, help="links timed for the tc baseline")
    parser.add_argument("--no-mininet", action="store_true", help="skip the stock baseline")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("live_scale: needs root", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            topo = shell_topology(max(1, size // 22), Path(tmp))
            ours = bench_netemu(topo, args.epochs)
            row = {"satellites": len(topo.satellites), "nodes": len(topo.nodes), "netemu": ours}
            if not args.no_mininet:
                from netemu.plan import Planner

                first = next(Planner(topo).run(duration_s=0, step_s=1))
                base = bench_mininet(topo, first.up.keys(), args.sample)
                row["stock_mininet"] = base
                row["ratios"] = {
                    "up": round(base["up_s"] / ours["up_s"], 1),
                    "down": round(base["down_s"] / ours["down_s"], 1),
                    "memory": round(base["memory_mib"] / max(ours["memory_mib"], 1), 2),
                    "epoch_links": round(
                        base["epoch_one_tc_per_change_ms"] / ours["epoch_links_ms"]["median"], 1
                    ),
                }
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "live_scale",
                "topology": "starlink-shell1 (first planes)",
                "shaper": "nfqueue",
                "goals": {"up_s": 30, "epoch_links_ms": 200, "memory_mib": 1536},
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
