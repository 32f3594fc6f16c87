#!/usr/bin/env python3
"""Benchmark: the wire shaper's engine against the physical limit of this machine.

Prints one JSON object. Each shaper runs the same traffic on topologies/kepler.yaml
(controller stopped, so epoch 0's links and delays hold still), ``--runs`` times,
each figure reported as median with min and max:

- ``unshaped``: the same nodes, routes and veth pairs with nothing shaped: what
  this machine's kernel does without any emulation (the physical limit);
- ``wire``: TAP pairs and the compiled engine (netemu/shaping/engine.c);
and, as recorded in results-shaper.json before it was removed (``python_recorded``),
the former Python NFQUEUE engine: the baseline the compiled one is measured against.

Figures:

- capacity: 64-byte datagrams (sendmmsg, benchmarks/udpflood.c) from kep0 over
  its link to kep1, to a closed port there (the kernel counts them as it drops
  them), with the link's delay 0 and its geometric 14.35 ms: the highest rate
  carried exactly (all of it, 99% released within 0.5 ms of its due time), and
  what arrives of a flood as fast as the sender goes; the
  engine's CPU per packet (the receiving kernel's work included: the engine's
  writes run it);
- added delay per pass: 3,000 datagrams at 1 kHz over kep0-kep1, one-way delay
  (receive stamps by the kernel; the Python engine's by the application, since it
  delayed packets after the kernel's stamp) minus the link's delay;
- TCP (one iperf3 stream, 10 s) and UDP (1,200-byte datagrams offered at 600 Mbit/s
  and 1 Gbit/s, 5 s; loss as the receiving iperf3 counts it) over one kepler ISL
  (kep0-kep1, 2.5 Gbit/s, 14.35 ms) and over 5 hops (kep0 -> kep5, 71.7 ms), with
  the packets the emulator could not carry (overload) during each.

Run as root:  sudo .venv/bin/python benchmarks/shaper.py [--runs 3]
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

from netemu.api import Emulation, load_topology  # noqa: E402
from netemu.shaping import Shape, Shaper  # noqa: E402

RESULTS = REPO / "benchmarks" / "results-shaper.json"


class Unshaped(Shaper):
    """veth pairs and nothing else: no rate limiter, no delay, no loss."""

    name = "unshaped"

    def rate_limiters(self, directions_out):
        return []

    def started_at(self, direction, rate_mbit):
        pass

    def apply(self, changes):
        pass


def build_flood(tmp: Path) -> Path:
    out = tmp / "udpflood"
    subprocess.run(
        ["cc", "-O2", "-o", str(out), str(REPO / "benchmarks" / "udpflood.c")], check=True
    )
    return out


def sh(ns: str, command: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", command],
        capture_output=True, text=True, check=kw.pop("check", True), **kw,
    )  # fmt: skip


def sink_packets(ns: str) -> int:
    """Datagrams that reached a closed port in a namespace (each answered, at most
    ~1,000 a second, by an ICMP port unreachable)."""
    out = sh(ns, "nstat -az UdpNoPorts").stdout.split()
    return int(out[out.index("UdpNoPorts") + 1])


def engine_stats(emu) -> dict:
    return emu.shaper_stats(full=True) if emu.shaper.name != "unshaped" else {}


def settle(emu, timeout_s: float = 60.0) -> None:
    """Wait until the engine holds nothing (a flood's backlog would skew what follows)."""
    end = time.monotonic() + timeout_s
    while engine_stats(emu).get("held", 0) and time.monotonic() < end:
        time.sleep(0.5)


def udp_socket_drops(ns: str) -> int:
    """Datagrams the kernel dropped in a namespace because a socket's buffer was full."""
    out = sh(ns, "nstat -az UdpRcvbufErrors").stdout.split()
    return int(out[out.index("UdpRcvbufErrors") + 1])


def set_delay(emu, a: str, b: str, delay_ms: float) -> None:
    """Both directions of one link to ``delay_ms``, nothing else shaped."""
    link = emu.link(a, b)
    rate = link.shapes[0].rate_mbit
    emu.shaper.apply({d: Shape(delay_ms, rate) for d in (link.forward, link.backward)})


def flood_once(emu, flood: Path, seconds: float, rate: float = 0) -> dict:
    """64-byte datagrams kep0 -> sink (at ``rate`` per s, or as fast as they go): what
    was offered and what arrived per second, late releases, the engine's CPU."""
    a, b = emu.netns[0], emu.netns[1]
    before, stats0 = sink_packets(b), engine_stats(emu)
    sent = json.loads(sh(a, f"{flood} {emu.address('kep1')} 64 {seconds} {rate}").stdout)
    time.sleep(0.3)  # what is in flight arrives
    got = sink_packets(b) - before
    stats1 = engine_stats(emu)
    settle(emu)
    out = {
        "offered": sent["sent"],
        "arrived": got,
        "offered_pps": sent["sent"] / sent["seconds"],
        "pps": got / sent["seconds"],
        "late": stats1.get("late", 0) - stats0.get("late", 0),
    }
    if "cpu_s" in stats1:
        out["cpu_us_per_packet"] = (
            (stats1["cpu_s"] - stats0["cpu_s"]) * 1e6 / max(stats1["out"] - stats0["out"], 1)
        )
    return out


def exact(result: dict) -> bool:
    """Everything offered arrived, and 99% of it within 0.5 ms of its due time."""
    return result["arrived"] >= 0.999 * result["offered"] and result["late"] <= 0.01 * max(
        result["arrived"], 1
    )


def capacity(emu, flood: Path, delay_ms: float) -> dict:
    """The packet rate the shaper carries exactly (nothing lost, p99 release error
    <= 0.5 ms), found by doubling the offered rate and then halving the gap three
    times; and what arrives when the sender floods as fast as it can."""
    set_delay(emu, "kep0", "kep1", delay_ms)
    time.sleep(0.2)
    rate, good, bad = 25_000.0, 0.0, None
    while bad is None and rate <= 4_000_000:
        if exact(flood_once(emu, flood, 1.5, rate)):
            good, rate = rate, rate * 2
        else:
            bad = rate
    for _ in range(3 if bad else 0):
        mid = (good + bad) / 2
        if exact(flood_once(emu, flood, 1.5, mid)):
            good = mid
        else:
            bad = mid
    flat_out = flood_once(emu, flood, 3.0)
    out = {
        "exact_pps": round(good),
        "flood_offered_pps": round(flat_out["offered_pps"]),
        "flood_arrived_pps": round(flat_out["pps"]),
    }
    if "cpu_us_per_packet" in flat_out:
        out["cpu_us_per_packet"] = round(flat_out["cpu_us_per_packet"], 3)
    return out


def probe(emu, src: str, dst: str, count: int, interval: float) -> list:
    ns_src, ns_dst = emu.netns[emu.names.index(src)], emu.netns[emu.names.index(dst)]
    rx = subprocess.Popen(
        ["ip", "netns", "exec", ns_dst, sys.executable, "-m", "netemu.testing.probe", "recv",
         "--bind", emu.address(dst), "--duration", str(count * interval + 3)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    rx.stdout.readline()  # listening
    time.sleep(0.5)
    tx = subprocess.Popen(
        ["ip", "netns", "exec", ns_src, sys.executable, "-m", "netemu.testing.probe", "send",
         "--to", emu.address(dst), "--count", str(count), "--interval", str(interval)],
    )  # fmt: skip
    out, _ = rx.communicate()  # read as it goes: a full pipe would hold the receiver back
    tx.wait()
    return [json.loads(line) for line in out.splitlines()]


def pass_delay(emu, delay_ms: float) -> dict:
    got = probe(emu, "kep0", "kep1", 3000, 0.001)
    err = sorted((p["recv_ns"] - p["sent_ns"]) / 1e3 - delay_ms * 1e3 for p in got[1:])
    return {
        "median_us": round(statistics.median(err), 1),
        "p99_us": round(err[int(0.99 * len(err))], 1),
        "max_us": round(err[-1], 1),
        "received": len(got),
    }


def iperf(emu, src: str, dst: str, args: str) -> dict:
    ns_src, ns_dst = emu.netns[emu.names.index(src)], emu.netns[emu.names.index(dst)]
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns_dst, "iperf3", "-s", "-1", "-B", emu.address(dst)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    stats0 = engine_stats(emu)
    out = sh(ns_src, f"iperf3 -c {emu.address(dst)} -B {emu.address(src)} -J {args}", check=False)
    server.wait(timeout=30)
    stats1 = engine_stats(emu)
    result = json.loads(out.stdout)["end"]
    if stats1:
        result["overload"] = stats1.get("overload", 0) - stats0.get("overload", 0)
        result["late"] = stats1.get("late", 0) - stats0.get("late", 0)
    return result


def tcp(emu, src: str, dst: str) -> dict:
    end = iperf(emu, src, dst, "-t 10 -O 2")
    return {
        "gbit_s": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
        "retransmits": end["sum_sent"].get("retransmits"),
        "overload": end.get("overload", 0),
        "late_releases": end.get("late", 0),
    }


def udp(emu, src: str, dst: str, rate: str) -> dict:
    ns_dst = emu.netns[emu.names.index(dst)]
    drops = udp_socket_drops(ns_dst)
    end = iperf(emu, src, dst, f"-u -l 1200 -b {rate} -t 5")
    return {
        "lost_percent": round(end["sum"]["lost_percent"], 3),
        # Of those: what the receiving iperf3 did not read in time (its socket was full).
        "receiver_socket_drops": udp_socket_drops(ns_dst) - drops,
        "lost_packets": end["sum"]["lost_packets"],
        "received_mbit_s": round(end["sum"]["bits_per_second"] / 1e6, 1),
        "overload": end.get("overload", 0),
        "late_releases": end.get("late", 0),
    }


def one_run(topo, shaper_name: str, flood: Path) -> dict:
    shaper = Unshaped() if shaper_name == "unshaped" else "wire"
    with Emulation(topo, shaper=shaper, run_name=f"bsh_{shaper_name}") as emu:
        geometric = emu.link("kep0", "kep1").delay_ms
        out: dict = {"link_delay_ms": round(geometric, 3)}
        # Delay and goodput first: the capacity floods last (they overload an engine).
        delay = 0.0 if shaper_name == "unshaped" else geometric
        out["pass_delay"] = pass_delay(emu, delay)
        out["tcp_1_hop"] = tcp(emu, "kep0", "kep1")
        out["tcp_5_hops"] = tcp(emu, "kep0", "kep5")
        for rate in ("600M", "1G"):
            out[f"udp_{rate}_1_hop"] = udp(emu, "kep0", "kep1", rate)
            out[f"udp_{rate}_5_hops"] = udp(emu, "kep0", "kep5", rate)
        if shaper_name == "unshaped":  # no engine: what arrives of a flood is the limit
            flat_out = flood_once(emu, flood, 3.0)
            out["capacity_no_delay"] = {"flood_arrived_pps": round(flat_out["pps"])}
        else:
            out["capacity_no_delay"] = capacity(emu, flood, 0.0)
            out["capacity_with_delay"] = capacity(emu, flood, geometric)
        stats = engine_stats(emu)
        if stats:
            keys = ("late", "worst_late_ms", "overload")
            out["engine"] = {k: stats[k] for k in keys if k in stats}
            out["engine"]["notes"] = getattr(emu.shaper, "notes", [])
    return out


def summarise(runs: list[dict]) -> dict:
    """Each numeric leaf as {median, min, max} over the runs."""
    first = runs[0]
    out = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = summarise([r[key] for r in runs])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in runs if r.get(key) is not None]
            out[key] = {
                "median": statistics.median(values), "min": min(values), "max": max(values),
            }  # fmt: skip
        else:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["unshaped", "wire"], help="one shaper only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/shaper.py needs root", file=sys.stderr)
        return 2
    topo = load_topology(REPO / "topologies" / "kepler.yaml")
    shapers = ["unshaped", "wire"]
    if args.only:
        shapers = [args.only]
    with tempfile.TemporaryDirectory() as tmp:
        flood = build_flood(Path(tmp))
        runs = {s: [] for s in shapers}
        for _ in range(args.runs):
            for s in shapers:
                runs[s].append(one_run(topo, s, flood))
    result = {
        "benchmark": "shaper",
        "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
        "runs": args.runs,
        "shapers": {s: summarise(r) for s, r in runs.items()},
    }
    if RESULTS.exists():  # the Python engine's figures, kept from before it was removed
        recorded = json.loads(RESULTS.read_text())
        result["python_recorded"] = recorded.get("python_recorded") or recorded["shapers"]["python"]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
