"""A UDP probe with timestamps: one-way delay and loss between nodes.

All namespaces share the machine's clock, so the receiver can subtract the
sender's CLOCK_REALTIME stamp from its own and get the one-way delay exactly.
Both stamps are the kernel's: the sender's when its datagram entered the link's
queue (``SO_TIMESTAMPING``, SCHED), carried in the datagram after it (known
only once sent, as PTP's follow-ups do), and the receiver's when the datagram
reached its node (``SO_TIMESTAMPNS``). So neither program's scheduling counts
as delay. Both shapers apply the delay before the receiving kernel sees a
packet (netem in the sender's egress queue, the wire engine between the
TAPs), so the receive stamp is the emulated arrival. A datagram whose follow-up
never came keeps the sender's application stamp (``"sent_by": "app"``);
``--stamp app`` stamps receptions after ``recv`` instead.

    python -m netemu.testing.probe recv --bind 172.16.0.6 --port 9000 --duration 10 > got.jsonl
    python -m netemu.testing.probe send --to 172.16.0.6 --port 9000 --count 1000 --interval 0.01

The receiver writes one JSON line per datagram: ``{"seq", "sent_ns", "recv_ns",
"sent_by"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time

#: Sequence number, application send time, the kernel's send time of the datagram
#: before (0: unknown), all ns since the epoch. FOLLOW_UP marks the last follow-up.
HEADER = struct.Struct("!QQQ")
FOLLOW_UP = 1 << 63
SO_TIMESTAMPNS = 35  # Linux; the kernel's receive time as a struct timespec
SO_TIMESTAMPING = 37
#: Stamp when the datagram enters the interface's queue, software clock, stamps only,
#: numbered per socket (so each stamp names its datagram).
_TX_FLAGS = (1 << 8) | (1 << 4) | (1 << 11) | (1 << 7)
_TIMESPEC = struct.Struct("@qq")
_EXTENDED_ERR = struct.Struct("@IBBBBII")  # errno, origin, type, code, pad, info, data


def _measure_promptly() -> None:
    """Real-time priority where allowed (root), below the shaping engine's, for the
    receiver (it sleeps in recv): what it prints is read promptly."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))


def _sent_stamps(sock: socket.socket, stamps: dict[int, int]) -> None:
    """The kernel's send stamps waiting on the socket's error queue, into ``stamps``
    ({counter: ns}), the first kept: a tunnel (VXLAN) carries the datagram's own
    buffer into the machines' network's queue, where it is stamped again, after
    the link's netem delay."""
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        when, counter = 0, None
        for level, kind, value in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPING):
                sec, nsec = _TIMESPEC.unpack_from(value)
                when = sec * 1_000_000_000 + nsec
            elif level == socket.SOL_IP and len(value) >= _EXTENDED_ERR.size:
                counter = _EXTENDED_ERR.unpack_from(value)[6]
        if counter is not None and when:
            stamps[counter] = min(when, stamps.get(counter, when))


def send(to: str, port: int, count: int, interval: float, size: int, bind: str | None) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind:
        sock.bind((bind, 0))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _TX_FLAGS)
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
    sent = 0  # the kernel numbers the datagrams the socket sent: 0, 1, ...
    numbered: dict[int, int] = {}  # that number -> our sequence number
    previous, stamps = None, {}
    for seq in range(count + 1):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _sent_stamps(sock, stamps)
        before = stamps.get(numbered.get(previous), 0) if previous is not None else 0
        last = seq == count  # a follow-up alone, for the last datagram's stamp
        with contextlib.suppress(OSError):  # no route right now: the datagram is lost
            emit(HEADER.pack(FOLLOW_UP | seq if last else seq, time.time_ns(), before) + pad)
            numbered[sent] = seq
            sent += 1
        numbered = {k: v for k, v in numbered.items() if v >= seq - 1}
        previous = seq
    return 0


def receive(bind: str, port: int, duration: float, out, kernel_stamps: bool = True) -> int:
    _measure_promptly()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    if kernel_stamps:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((bind, port))
    print(json.dumps({"listening": f"{bind}:{port}"}), file=out, flush=True)
    records = _Records(out)
    # Stopped (a stream that ran until something happened): the last datagram still counts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    end = time.monotonic() + duration
    try:
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
            records.arrived(*HEADER.unpack_from(data), now)
    finally:
        records.flush()
    return 0


class _Records:
    """The receiver's output: each datagram's record waits for the next datagram, which
    carries the kernel's send stamp of this one."""

    def __init__(self, out) -> None:
        self.out = out
        self.waiting: dict | None = None

    def arrived(self, seq: int, sent_ns: int, before_ns: int, recv_ns: int) -> None:
        last = self.waiting
        # Its stamp, if this is the datagram right after it (and the stamp falls between
        # the two datagrams' own send times, as only its stamp can).
        if (
            last
            and (seq & ~FOLLOW_UP) == last["seq"] + 1
            and last["sent_ns"] <= before_ns <= sent_ns
        ):
            last["sent_ns"], last["sent_by"] = before_ns, "kernel"
        self.flush()
        if not seq & FOLLOW_UP:
            self.waiting = {"seq": seq, "sent_ns": sent_ns, "recv_ns": recv_ns, "sent_by": "app"}

    def flush(self) -> None:
        if self.waiting is not None:
            print(json.dumps(self.waiting), file=self.out, flush=True)
            self.waiting = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netemu.testing.probe", description=__doc__)
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
