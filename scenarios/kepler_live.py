#!/usr/bin/env python3
"""The Kepler-like constellation live: the patrol aircraft talks to the C2 post.

Brings up topologies/kepler.yaml (one Mininet host per node, shaped from
orbital geometry), runs the orbits SPEED times faster than real time, and
every few seconds measures the round trip from the aircraft to the command
post at Bodø over whatever path the constellation offers at that moment,
next to the geometric path delay. Run as root:

    sudo .venv/bin/python scenarios/kepler_live.py [--minutes 10] [--speed 10]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netemu.api import Emulation, InputError, load_topology

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", type=Path, default=REPO / "topologies/kepler.yaml")
    parser.add_argument("--minutes", type=float, default=6.0, help="orbital minutes to run")
    parser.add_argument("--speed", type=float, default=6.0, help="orbital time acceleration")
    parser.add_argument("--every", type=float, default=3.0, help="wall seconds between probes")
    parser.add_argument("--src", default="patrol1")
    parser.add_argument("--dst", nargs="+", default=["c2_bodo", "svalbard"])
    parser.add_argument("--shaper", default="auto", choices=["auto", "netem", "wire"])
    args = parser.parse_args()
    console = Console()
    try:
        topo = load_topology(args.topology)
        emu = Emulation(
            topo,
            duration_s=args.minutes * 60,
            speed=args.speed,
            shaper=args.shaper,
            run_name="kepler_live",
            log_path=REPO / "results/kepler_live/run.jsonl",
        )
    except InputError as exc:
        print(f"kepler_live: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"round trips from {args.src}, orbits x{args.speed:g}")
    for col in ("orbital time", "to", "path", "geometric RTT ms", "measured RTT ms"):
        table.add_column(col)
    try:
        with emu:
            console.print(
                f"[bold]{topo.name}[/] up: {len(topo.nodes)} hosts, "
                f"{len(emu.links_now())} links, shaper [bold]{emu.shaper.name}[/]"
            )
            emu.start_controller()
            while not emu.finished.is_set():
                for dst in args.dst:
                    route = emu.route(args.src, dst)
                    geo = emu.path_delay_ms(args.src, dst)
                    out = emu.host(args.src).cmd(f"ping -U -c 1 -W 1 {emu.address(dst)}")
                    rtt = re.search(r"time=([\d.]+) ms", out)
                    row = (
                        f"{emu.now():%H:%M:%S}",
                        dst,
                        " > ".join(route) if route else "no path",
                        f"{2 * geo:.2f}" if geo is not None else "-",
                        rtt.group(1) if rtt else "lost",
                    )
                    table.add_row(*row)
                    console.print("  ".join(row), highlight=False)
                emu.wait(args.every)
            status = emu.status()
    except KeyboardInterrupt:
        return 130
    console.print(table)
    console.print(
        f"{status['epoch'] + 1} epochs, {status['handovers']} handovers, "
        f"{status['late_epochs']} late; everything removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
