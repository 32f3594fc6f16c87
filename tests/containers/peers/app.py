"""A user-style application for tests: each instance finds its peers from netemu's
environment and /etc/hosts, pings every one over UDP and keeps the fastest round
trip to each, in $NETEMU_RESULTS/rtt.json (what the test reads), and records two
stages (netemu.stages): started, and heard from every peer."""

import contextlib
import json
import os
import signal
import socket
import time

me = os.environ["NETEMU_INSTANCE"]
peers = {}
for entry in os.environ["NETEMU_PEERS"].split(","):
    name, where = entry.split("=")
    host, port = where.rsplit(":", 1)
    peers[name] = (host, int(port))
resolved = {name: socket.gethostbyname(name) == host for name, (host, _) in peers.items()}
out = os.path.join(os.environ["NETEMU_RESULTS"], "rtt.json")


def stage(name: str) -> None:
    with open(os.path.join(os.environ["NETEMU_RESULTS"], "stages.jsonl"), "a") as f:
        f.write(json.dumps({"id": f"discovery-{me}", "stage": name, "unix_ns": time.time_ns()}))
        f.write("\n")


stage("started")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((os.environ["NETEMU_ADDRESS"], int(os.environ["NETEMU_PORT"])))
sock.settimeout(0.02)
stopping = False
signal.signal(signal.SIGTERM, lambda *_: globals().update(stopping=True))
best: dict[str, float] = {}
next_round = 0.0
while not stopping:
    now = time.monotonic()
    if now >= next_round:
        for name, where in peers.items():
            if name != me:
                # No route now (a peer's node is down): the next round tries again.
                with contextlib.suppress(OSError):
                    sock.sendto(f"ping {me} {time.perf_counter_ns()}".encode(), where)
        next_round = now + 0.1
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "me": me,
                    "resolved": resolved,
                    "rtt_ms": best,
                    "gpu_slots": os.environ["NETEMU_GPU_SLOTS"],
                },
                f,
            )
        os.replace(tmp, out)
    try:
        data, sender = sock.recvfrom(256)
    except OSError:  # a timeout, a signal, an ICMP error from a peer that went away
        continue
    kind, who, stamp = data.decode().split()
    if kind == "ping":
        with contextlib.suppress(OSError):
            sock.sendto(f"pong {me} {stamp}".encode(), sender)
    else:
        rtt = (time.perf_counter_ns() - int(stamp)) / 1e6
        if who not in best and len(best) == len(peers) - 2:  # the last one missing
            stage("heard-all")
        best[who] = min(rtt, best.get(who, rtt))
