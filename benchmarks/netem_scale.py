#!/usr/bin/env python3
"""Benchmark: the netem path at scale, in a kernel that has sch_netem (the QEMU lane's).

Correctness, not timing: QEMU runs the guest in software here, so its times say how
the phases compare, not what a real machine takes. Brings up the first ``--planes``
planes of Starlink shell 1 (all 72 by default: 1,590 nodes) with the netem shaper,
lets the controller apply ``--epochs`` epochs at ``--speed`` (late ones catch up),
then reads every netem qdisc back from the kernel (``tc -j qdisc show``, one per
namespace) and compares each link direction's delay, loss and queue limit with
what the link table says the shaper was given. Prints one JSON object: the bring-up
phases' times and memory, each epoch's update time, the directions compared and
every mismatch; exits 1 if there is one.

    NETEMU_VM_MEMORY_MIB=8192 tests/vm/run --timeout 2400 --keep DIR -- \
        .venv/bin/python benchmarks/netem_scale.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_scale import shell_topology

from netemu.api import Emulation
from netemu.shaping.netem import netem_available, netem_limit


def qdiscs(namespace: str) -> dict[str, dict]:
    """{interface: netem options} in one namespace, as the kernel reports them."""
    out = subprocess.run(
        ["tc", "-n", namespace, "-j", "qdisc", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {q["dev"]: q.get("options", {}) for q in json.loads(out) if q["kind"] == "netem"}


def compare(emu) -> tuple[int, list[dict]]:
    """Every direction's netem parameters against the shapes last applied."""
    want = {}
    for link in emu.links_now():
        for d, shape in zip((link.forward, link.backward), link.shapes, strict=True):
            want[(d.src_netns, d.src_ifname)] = (f"{link.a}-{link.b}", shape)
    spaces = sorted({ns for ns, _ in want})
    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(spaces, pool.map(qdiscs, spaces), strict=True))
    checked, wrong = 0, []
    for (ns, dev), (link, shape) in want.items():
        got = found[ns].get(dev)
        delay = 0.0 if shape.blocked else shape.delay_ms / 1000
        loss = 1.0 if shape.blocked else shape.loss
        limit = netem_limit(shape.rate_mbit, shape.delay_ms, shape.jitter_ms)
        if got is None:
            wrong.append({"link": link, "dev": dev, "problem": "no netem qdisc"})
            continue
        if shape.fade_probability > 0:  # gemodel: not compared here
            continue
        checked += 1
        got_delay = got.get("delay", {}).get("delay", 0.0)
        got_loss = got.get("loss-random", {}).get("loss", 0.0)
        # tc prints delays in seconds to 5 significant digits.
        if abs(got_delay - delay) > max(5e-6, 1e-4 * delay):
            wrong.append({"link": link, "dev": dev, "delay_s": got_delay, "want_s": delay})
        if abs(got_loss - loss) > max(1e-6, 1e-3 * loss):
            wrong.append({"link": link, "dev": dev, "loss": got_loss, "want": loss})
        if got.get("limit") != limit:
            wrong.append({"link": link, "dev": dev, "limit": got.get("limit"), "want": limit})
    return checked, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planes", type=int, default=72, help="planes of shell 1 (22 each)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs applied before the check")
    parser.add_argument(
        "--speed", type=float, default=30.0,
        help="orbital seconds a wall second (delays then change by more than 1 us an epoch)",
    )  # fmt: skip
    args = parser.parse_args()
    if not netem_available():
        print("netem_scale: this kernel has no sch_netem (run it in tests/vm/run)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        topo = shell_topology(args.planes, Path(tmp))
        t0 = time.perf_counter()
        emu = Emulation(topo, shaper="netem", run_name="netemscale", speed=args.speed)
        try:
            emu.start()
            up = time.perf_counter() - t0
            emu.start_controller()
            emu.wait_until(lambda: emu.epoch_index >= args.epochs, timeout=3600, poll=0.5)
            emu.stop_controller()
            t1 = time.perf_counter()
            checked, wrong = compare(emu)
            check_s = time.perf_counter() - t1
            epochs = [u for u in emu.updates if u["refresh"] and "epoch_ms" in u]
            result = {
                "benchmark": "netem_scale",
                "kernel": subprocess.run(
                    ["uname", "-r"], capture_output=True, text=True
                ).stdout.strip(),
                "nodes": len(topo.nodes),
                "links": len(emu.links_now()),
                "up_s": round(up, 1),
                "up_phases_s": emu.timings,
                "up_phases_memory_mib": emu.memory_mib,
                "epochs": len(epochs),
                "epoch_ms": {
                    "median": round(statistics.median(u["epoch_ms"] for u in epochs), 1),
                    "max": round(max(u["epoch_ms"] for u in epochs), 1),
                    "shape_changes": [u["shape_changes"] for u in epochs],
                }
                if epochs
                else {},
                "late_epochs": emu.late_epochs,
                "directions_compared": checked,
                "check_s": round(check_s, 1),
                "mismatches": len(wrong),
                "first_mismatches": wrong[:10],
            }
        finally:
            t2 = time.perf_counter()
            emu.stop()
    result["down_s"] = round(time.perf_counter() - t2, 1)
    print(json.dumps(result, indent=2))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
