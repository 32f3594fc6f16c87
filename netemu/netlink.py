"""Batched rtnetlink: many route changes per system call, inside a namespace.

One request per route (what ``ip route`` or pyroute2's ``route()`` do) costs a
round trip each; a mega-constellation needs millions of routes at bring-up and
thousands per epoch. Here route messages are encoded up front (pure
functions, see :func:`route_message`) and written back to back on a netlink
socket opened inside the node's namespace; only the last asks for an
acknowledgement, and errors come back as they happen.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterable

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
CLONE_NEWNET = 0x40000000

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_ERR = struct.Struct("=i")
#: Bytes written per system call (well below the socket's buffer).
_CHUNK = 64 * 1024


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + b"\0" * (-length % 4)


def route_message(
    seq: int,
    dst: str,
    gateway: str | None = None,
    oif: int | None = None,
    prefsrc: str | None = None,
    delete: bool = False,
    ack: bool = False,
) -> bytes:
    """One RTM_NEWROUTE (replace or create) or RTM_DELROUTE for an IPv4 /32."""
    attrs = _attr(RTA_DST, socket.inet_aton(dst))
    if not delete:
        attrs += _attr(RTA_OIF, struct.pack("=I", oif))
        attrs += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
        if prefsrc:
            attrs += _attr(RTA_PREFSRC, socket.inet_aton(prefsrc))
    body = (
        _RTMSG.pack(
            socket.AF_INET,
            32,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            0,
        )
        + attrs
    )
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    kind = RTM_DELROUTE
    if not delete:
        kind, flags = RTM_NEWROUTE, flags | NLM_F_REPLACE | NLM_F_CREATE
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def errors_in(data: bytes) -> list[tuple[int, int]]:
    """(sequence number, errno) of each error in netlink replies; errno 0 is an ack."""
    out, offset = [], 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR:
            (code,) = _ERR.unpack_from(data, offset + _NLMSGHDR.size)
            out.append((seq, -code))
        offset += (length + 3) & ~3
    return out


_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(netns_path: str) -> socket.socket:
    """An rtnetlink socket bound to another network namespace.

    The calling thread enters the namespace just long enough to open the
    socket (setns affects only this thread), which keeps it for life.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            sock.bind((0, 0))
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
    return sock


class RouteBatch:
    """Collects route changes for one namespace, then sends them all at once."""

    def __init__(self) -> None:
        self.changes: list[dict] = []

    def __len__(self) -> int:
        return len(self.changes)

    def replace(self, dst: str, gateway: str, oif: int, prefsrc: str | None = None) -> None:
        self.changes.append(dict(dst=dst, gateway=gateway, oif=oif, prefsrc=prefsrc))

    def delete(self, dst: str) -> None:
        self.changes.append(dict(dst=dst, delete=True))

    def send(self, sock: socket.socket, ignore: Iterable[int] = (errno.ESRCH,)) -> None:
        """Write every change; wait for the last one's ack; raise on unexpected errors."""
        last = len(self.changes)
        if not last:
            return
        failures: list[tuple[int, int]] = []
        chunk, size = [], 0
        for seq, change in enumerate(self.changes, start=1):
            chunk.append(route_message(seq, **change, ack=seq == last))
            size += len(chunk[-1])
            if size >= _CHUNK or seq == last:
                sock.send(b"".join(chunk))
                chunk, size = [], 0
                failures += _drain(sock, block=seq == last)
        while not any(seq == last for seq, _ in failures):
            failures += _drain(sock, block=True)
        self.changes.clear()
        bad = [(s, e) for s, e in failures if e and e not in set(ignore)]
        if bad:
            seq, err = bad[0]
            raise OSError(err, f"route change {seq} of {last}: {os.strerror(err)}")


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
