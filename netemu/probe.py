"""A UDP probe with application timestamps: one-way delay and loss between nodes.

All namespaces share the machine's clock, so the receiver can subtract the
sender's CLOCK_REALTIME stamp from its own and get the one-way delay exactly.
The receiver's stamp is the kernel's (``SO_TIMESTAMPNS``): when the datagram
reached the node, however long the receiver took to be scheduled. Both
shapers apply the delay before the receiving kernel sees a packet (netem in
the sender's egress queue, the wire engine between the TAPs), so that stamp is
the emulated arrival; ``--stamp app`` stamps after ``recv`` instead.

    python -m netemu.probe recv --bind 172.16.0.6 --port 9000 --duration 10 > got.jsonl
    python -m netemu.probe send --to 172.16.0.6 --port 9000 --count 1000 --interval 0.01

The receiver writes one JSON line per datagram: ``{"seq", "sent_ns", "recv_ns"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import time

HEADER = struct.Struct("!QQ")  # sequence number, send time (ns since the epoch)
SO_TIMESTAMPNS = 35  # Linux; the kernel's receive time as a struct timespec
_TIMESPEC = struct.Struct("@qq")


def _measure_promptly() -> None:
    """Real-time priority where allowed (root), below the shaping engine's, for the
    receiver (it sleeps in recv): a stamp taken late because both cores were busy
    elsewhere would be counted as delay."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))


def send(to: str, port: int, count: int, interval: float, size: int, bind: str | None) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind:
        sock.bind((bind, 0))
    # Binding and the route lookup happen here, not between a timestamp and
    # its datagram (the first send of a fresh socket is ~0.4 ms slower). With
    # no route yet (an outage), each datagram looks for one as it goes.
    try:
        sock.connect((to, port))
        emit = sock.send
    except OSError:

        def emit(data: bytes) -> None:
            sock.sendto(data, (to, port))

    pad = b"\0" * max(0, size - HEADER.size)
    start = time.monotonic()
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with contextlib.suppress(OSError):  # no route right now: the datagram is lost
            emit(HEADER.pack(seq, time.time_ns()) + pad)
    return 0


def receive(bind: str, port: int, duration: float, out, kernel_stamps: bool = True) -> int:
    _measure_promptly()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    if kernel_stamps:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((bind, port))
    end = time.monotonic() + duration
    print(json.dumps({"listening": f"{bind}:{port}"}), file=out, flush=True)
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, ancillary, _, _ = sock.recvmsg(65535, 64)
        except TimeoutError:
            break
        now = time.time_ns()
        for level, kind, value in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                sec, nsec = _TIMESPEC.unpack_from(value)
                now = sec * 1_000_000_000 + nsec
        seq, sent = HEADER.unpack_from(data)
        print(json.dumps({"seq": seq, "sent_ns": sent, "recv_ns": now}), file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netemu.probe", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, default=9000)
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--interval", type=float, default=0.01)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--bind")
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    r.add_argument("--port", type=int, default=9000)
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument(
        "--stamp", choices=["kernel", "app"], default="kernel",
        help="receive time: the kernel's (default) or after recv",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.mode == "send":
        return send(args.to, args.port, args.count, args.interval, args.size, args.bind)
    return receive(args.bind, args.port, args.duration, sys.stdout, args.stamp == "kernel")


if __name__ == "__main__":
    sys.exit(main())
