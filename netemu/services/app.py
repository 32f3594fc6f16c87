"""What the service applications share: their JSON-lines log, UDP sockets,
ports and a clean stop on SIGTERM/SIGINT.

The applications (:mod:`~netemu.services.sensor`,
:mod:`~netemu.services.inference`, :mod:`~netemu.services.consumer`) run on
the emulated hosts, as plain processes or in containers, and talk only over
the emulated network. Each writes one JSON object per line and flushes it at
once, so a run killed at any moment leaves readable records. Timestamps are
``time.time_ns()``: all namespaces (and containers) share the host's clock,
so one-way delays between hosts are exact differences.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import threading
import time
from pathlib import Path

FRAGMENT_PORT = 7001  # sensor -> compute: frame fragments
REPORT_PORT = 7002  # compute -> consumers: track reports
STATUS_PORT = 7003  # compute -> sensors: heartbeats

now_ns = time.time_ns
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; Python's socket module lacks them


class JsonLog:
    """Append-only JSON lines, flushed per record."""

    def __init__(self, path: str | Path):
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def write(self, event: str, **fields) -> None:
        self.file.write(json.dumps({"event": event, **fields}) + "\n")

    def close(self) -> None:
        self.file.close()


def udp_socket(address: str, port: int = 0, buffer_bytes: int = 32 << 20) -> socket.socket:
    """A UDP socket bound to ``address:port`` with large buffers (frames come in bursts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt, force in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        # *BUFFORCE passes the sysctl caps as root; fall back within them otherwise.
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
    sock.bind((address, port))
    return sock


def send(sock: socket.socket, data: bytes, to: tuple[str, int]) -> bool:
    """Send one datagram; False where the network has no way there now (an outage:
    the route is withdrawn) or no buffer, which the caller counts as lost."""
    try:
        sock.sendto(data, to)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOBUFS, errno.EPERM):
            return False
        raise


def stop_event() -> threading.Event:
    """Set on SIGTERM or SIGINT: the application finishes its records and exits 0."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def addresses(text: str) -> list[str]:
    return [a for a in text.split(",") if a]
