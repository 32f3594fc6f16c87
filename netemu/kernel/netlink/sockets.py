"""Entering a namespace, its one rtnetlink socket, and sending batches on it.

:func:`entered` is the one way netemu enters a network namespace from Python
(``setns`` for this thread only, and back); :class:`NamespaceSockets` keeps one
socket per namespace of a run, opened inside it and shared by all that talk to
that namespace's kernel (links, routes, qdiscs). :func:`send_all` writes arrays
of fixed-layout messages, :func:`send_requests` packed requests; both number the
messages, ask only the last for an acknowledgement, and raise on the first error
that is not expected.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
from collections.abc import Iterable

import numpy as np

from netemu.kernel.netlink.message import NLM_F_ACK, errors_in, packed

NETLINK_ROUTE = 0
CLONE_NEWNET = 0x40000000
#: Bytes written per system call (well below the socket's buffer).
_CHUNK = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def entered(netns_path: str):
    """This thread inside another network namespace for the ``with`` block: what it
    opens there (sockets, /proc/sys/net files) belongs to that namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def socket_in(netns_path: str) -> socket.socket:
    """An rtnetlink socket bound to another network namespace (which it keeps for life)."""
    with entered(netns_path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((0, 0))
    return sock


class NamespaceSockets:
    """One rtnetlink socket per network namespace of a run, opened on first use."""

    def __init__(self) -> None:
        self._open: dict[str, socket.socket] = {}

    def __call__(self, netns: str) -> socket.socket:
        sock = self._open.get(netns)
        if sock is None:
            sock = self._open[netns] = socket_in(f"/run/netns/{netns}")
        return sock

    def close(self) -> None:
        for sock in self._open.values():
            sock.close()
        self._open.clear()


def send_all(
    sock: socket.socket, batches: list[np.ndarray], ignore: Iterable[int] = (errno.ESRCH,)
) -> None:
    """Send arrays of encoded messages on one socket, numbered across the arrays."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return
    seq = 0
    for b in batches:
        b["seq"] = np.arange(seq + 1, seq + len(b) + 1)
        seq += len(b)
    batches[-1]["flags"][-1] |= NLM_F_ACK
    chunks = (
        b[start : start + max(1, _CHUNK // b.dtype.itemsize)].tobytes()
        for b in batches
        for start in range(0, len(b), max(1, _CHUNK // b.dtype.itemsize))
    )
    _send_checked(sock, chunks, seq, ignore)


def send_requests(
    sock: socket.socket,
    requests: list[tuple[int, int, bytes]],
    ignore: Iterable[int] = (errno.ESRCH,),
) -> None:
    """Send (message type, flags, body) requests, numbered, as few system calls as fit."""
    if not requests:
        return
    chunks, chunk = [], b""
    for seq, (kind, flags, body) in enumerate(requests, 1):
        message = packed(kind, flags | (NLM_F_ACK if seq == len(requests) else 0), seq, body)
        if len(chunk) + len(message) > _CHUNK:
            chunks.append(chunk)
            chunk = b""
        chunk += message
    _send_checked(sock, [*chunks, chunk], len(requests), ignore)


def _send_checked(sock: socket.socket, chunks, last_seq: int, ignore: Iterable[int]) -> None:
    """Write chunks of messages, then wait for the last one's ack; raise on errors."""
    failures: list[tuple[int, int]] = []
    for chunk in chunks:
        sock.send(chunk)
        failures += _drain(sock, block=False)
    while not any(s == last_seq for s, _ in failures):
        failures += _drain(sock, block=True)
    bad = [(s, e) for s, e in failures if e and e not in set(ignore)]
    if bad:
        s, err = bad[0]
        raise OSError(err, f"netlink request {s} of {last_seq}: {os.strerror(err)}")


def _drain(sock: socket.socket, block: bool) -> list[tuple[int, int]]:
    """Replies waiting on the socket (after blocking for the first, if asked)."""
    out = []
    sock.setblocking(block)
    try:
        while True:
            out += errors_in(sock.recv(1 << 20))
            sock.setblocking(False)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return out
