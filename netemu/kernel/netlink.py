"""Batched rtnetlink: many route changes per system call, inside a namespace.

One request per route (what ``ip route`` or pyroute2's ``route()`` do) costs a
round trip each; a mega-constellation needs millions of routes at bring-up and
thousands per epoch. Here route messages are encoded up front, many at a
time as numpy structured arrays (:func:`encode_replaces`,
:func:`encode_deletes`; :func:`route_message` builds one), and written back
to back on a netlink socket opened inside the node's namespace; only the last
asks for an acknowledgement, and errors come back as they happen.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterable

import numpy as np

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
RTN_UNSPEC, RTN_UNREACHABLE = 0, 7
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
            RTN_UNSPEC if delete else RTN_UNICAST,  # a delete matches any type
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


# Fixed-layout messages, encoded many at a time with numpy ('=' is host byte
# order, as netlink wants; addresses are big-endian, as on the wire).
_HDR = [
    ("len", "=u4"),
    ("type", "=u2"),
    ("flags", "=u2"),
    ("seq", "=u4"),
    ("pid", "=u4"),
    ("family", "u1"),
    ("dst_len", "u1"),
    ("src_len", "u1"),
    ("tos", "u1"),
    ("table", "u1"),
    ("protocol", "u1"),
    ("scope", "u1"),
    ("rtype", "u1"),
    ("rflags", "=u4"),
    ("dst_rta", "=u2", (2,)),
    ("dst", ">u4"),
]
_ROUTE_ATTRS = [
    ("oif_rta", "=u2", (2,)),
    ("oif", "=u4"),
    ("gw_rta", "=u2", (2,)),
    ("gw", ">u4"),
    ("src_rta", "=u2", (2,)),
    ("src", ">u4"),
]
_REPLACE = np.dtype(_HDR + _ROUTE_ATTRS)
_DELETE = np.dtype(_HDR)


def _fill_header(
    msgs: np.ndarray, kind: int, flags: int, dst, dst_len, rtype: int = RTN_UNICAST
) -> None:
    msgs["len"], msgs["type"], msgs["flags"] = msgs.dtype.itemsize, kind, flags
    msgs["seq"] = np.arange(1, len(msgs) + 1)
    msgs["family"], msgs["dst_len"], msgs["table"] = socket.AF_INET, dst_len, RT_TABLE_MAIN
    msgs["protocol"], msgs["scope"], msgs["rtype"] = RTPROT_STATIC, RT_SCOPE_UNIVERSE, rtype
    msgs["dst_rta"] = (8, RTA_DST)
    msgs["dst"] = dst


_CREATE_OR_REPLACE = NLM_F_REQUEST | NLM_F_REPLACE | NLM_F_CREATE


def encode_replaces(dst, gateway, oif, prefsrc, dst_len=32) -> np.ndarray:
    """RTM_NEWROUTE (replace/create) messages, all fields as integer arrays."""
    msgs = np.zeros(len(dst), _REPLACE)
    _fill_header(msgs, RTM_NEWROUTE, _CREATE_OR_REPLACE, dst, dst_len)
    msgs["oif_rta"], msgs["oif"] = (8, RTA_OIF), oif
    msgs["gw_rta"], msgs["gw"] = (8, RTA_GATEWAY), gateway
    msgs["src_rta"], msgs["src"] = (8, RTA_PREFSRC), prefsrc
    return msgs


def encode_unreachables(dst, dst_len=32) -> np.ndarray:
    """RTM_NEWROUTE messages making ``unreachable`` routes (ICMP net unreachable)."""
    msgs = np.zeros(len(dst), _DELETE)
    _fill_header(msgs, RTM_NEWROUTE, _CREATE_OR_REPLACE, dst, dst_len, RTN_UNREACHABLE)
    return msgs


def encode_deletes(dst, dst_len=32) -> np.ndarray:
    """RTM_DELROUTE messages for routes of any type (unicast or unreachable)."""
    msgs = np.zeros(len(dst), _DELETE)
    _fill_header(msgs, RTM_DELROUTE, NLM_F_REQUEST, dst, dst_len, rtype=RTN_UNSPEC)
    return msgs


# Interfaces: addresses, state, neighbours (what `ip addr/link/neigh` would send).
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWNEIGH = 16, 20, 28
NLM_F_EXCL = 0x200
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP, IFF_NOARP = 0x1, 0x80
NUD_PERMANENT = 0x80
_NLHDR = [("len", "=u4"), ("type", "=u2"), ("flags", "=u2"), ("seq", "=u4"), ("pid", "=u4")]
_ADDR = np.dtype(
    [
        *_NLHDR,
        *[("family", "u1"), ("prefixlen", "u1"), ("ifa_flags", "u1"), ("scope", "u1")],
        *[("index", "=u4"), ("local_rta", "=u2", (2,)), ("local", ">u4")],
        *[("address_rta", "=u2", (2,)), ("address", ">u4")],
    ]
)
_LINK = np.dtype(
    [
        *_NLHDR,
        *[("family", "u1"), ("pad", "u1"), ("ltype", "=u2"), ("index", "=i4")],
        *[("ifi_flags", "=u4"), ("change", "=u4")],
    ]
)
_NEIGH = np.dtype(
    [
        *_NLHDR,
        *[("family", "u1"), ("pad1", "u1"), ("pad2", "=u2"), ("index", "=i4")],
        *[("state", "=u2"), ("ndm_flags", "u1"), ("ntype", "u1")],
        *[("dst_rta", "=u2", (2,)), ("dst", ">u4")],
        *[("ll_rta", "=u2", (2,)), ("lladdr", "u1", (8,))],
    ]
)


def _messages(dtype: np.dtype, count: int, kind: int, flags: int) -> np.ndarray:
    msgs = np.zeros(count, dtype)
    msgs["len"], msgs["type"], msgs["flags"] = dtype.itemsize, kind, flags | NLM_F_REQUEST
    msgs["family"] = socket.AF_INET
    return msgs


def encode_addresses(index, address, prefixlen) -> np.ndarray:
    """RTM_NEWADDR: IPv4 ``address/prefixlen`` (integers) on interface ``index``."""
    msgs = _messages(_ADDR, len(index), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)
    msgs["prefixlen"], msgs["index"] = prefixlen, index
    msgs["local_rta"], msgs["local"] = (8, IFA_LOCAL), address
    msgs["address_rta"], msgs["address"] = (8, IFA_ADDRESS), address
    return msgs


def encode_links_up(index, noarp) -> np.ndarray:
    """RTM_NEWLINK: interface ``index`` up, and without ARP where ``noarp``."""
    msgs = _messages(_LINK, len(index), RTM_NEWLINK, 0)
    msgs["family"] = socket.AF_UNSPEC
    msgs["index"] = index
    msgs["change"] = IFF_UP | IFF_NOARP
    msgs["ifi_flags"] = IFF_UP | np.where(noarp, IFF_NOARP, 0)
    return msgs


def encode_neighbours(index, address, lladdr) -> np.ndarray:
    """RTM_NEWNEIGH: a permanent neighbour ``address`` (integers) with MAC ``lladdr``
    (rows of 6 bytes) on interface ``index``."""
    msgs = _messages(_NEIGH, len(index), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE)
    msgs["index"], msgs["state"] = index, NUD_PERMANENT
    msgs["dst_rta"], msgs["dst"] = (8, NDA_DST), address
    msgs["ll_rta"] = (10, NDA_LLADDR)
    msgs["lladdr"][:, :6] = lladdr
    return msgs


def send_all(
    sock: socket.socket, batches: list[np.ndarray], ignore: Iterable[int] = (errno.ESRCH,)
) -> None:
    """Send encoded message arrays on one socket; the very last asks for an ack.

    Sequence numbers continue across the arrays. Raises on unexpected errors.
    """
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


def send_messages(
    sock: socket.socket, messages: list[bytes], ignore: Iterable[int] = (errno.ESRCH,)
) -> None:
    """Send messages encoded one by one (sequence numbers 1..n, the last asking
    for an ack: see :func:`netem_change`), as few system calls as fit."""
    if not messages:
        return
    chunks, chunk = [], b""
    for m in messages:
        if len(chunk) + len(m) > _CHUNK:
            chunks.append(chunk)
            chunk = b""
        chunk += m
    _send_checked(sock, [*chunks, chunk], len(messages), ignore)


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


def send_requests(
    sock: socket.socket,
    requests: list[tuple[int, int, bytes]],
    ignore: Iterable[int] = (errno.ESRCH,),
) -> None:
    """Send (message type, flags, body) requests, numbered, the last acknowledged."""
    send_messages(
        sock,
        [
            _NLMSGHDR.pack(
                _NLMSGHDR.size + len(body),
                kind,
                flags | NLM_F_REQUEST | (NLM_F_ACK if seq == len(requests) else 0),
                seq,
                0,
            )
            + body
            for seq, (kind, flags, body) in enumerate(requests, 1)
        ],
        ignore,
    )


# Qdiscs: HTB rate limiters made, netem changed in place (what `tc` would send).
RTM_NEWQDISC, RTM_NEWTCLASS = 36, 40
TC_H_ROOT = 0xFFFF_FFFF
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
TC_LINKLAYER_ETHERNET = 1
_RATESPEC = struct.Struct("=BBHhHI")  # cell_log, linklayer, overhead, cell_align, mpu, rate
_PSCHED_TICK_NS = 64  # the kernel's PSCHED_SHIFT: HTB buffers are in 64 ns ticks


def htb_requests(
    ifindex: int, root: int, leaf: int, default: int, rate_bytes_s: int, burst_bytes: int
) -> list[tuple[int, int, bytes]]:
    """``tc qdisc replace dev IF root handle ROOT htb default DEFAULT`` and ``tc class
    replace dev IF parent ROOT classid LEAF htb rate R ceil R burst B cburst B`` as
    netlink requests (rates from 4 GB/s up in 64-bit attributes, like tc)."""
    kind = _attr(TCA_KIND, b"htb\0")
    glob = struct.pack("=5I", 3, 10, default, 0, 0)  # version, r2q, default class, ...
    qdisc = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, root, TC_H_ROOT, 0)
    qdisc += kind + _attr(TCA_OPTIONS | NLA_F_NESTED, _attr(TCA_HTB_INIT, glob))
    spec = _RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, -1, 0, min(rate_bytes_s, _U32_MAX))
    # As tc computes it: the burst's transmission time in whole microseconds, then in ticks.
    buffer = int(int(1e6 * burst_bytes / rate_bytes_s) * 1000 / _PSCHED_TICK_NS)
    attrs = _attr(TCA_HTB_PARMS, spec + spec + struct.pack("=5I", buffer, buffer, 0, 0, 0))
    if rate_bytes_s >= _U32_MAX:
        attrs += _attr(TCA_HTB_RATE64, struct.pack("=Q", rate_bytes_s))
        attrs += _attr(TCA_HTB_CEIL64, struct.pack("=Q", rate_bytes_s))
    cls = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, leaf, root, 0)
    cls += kind + _attr(TCA_OPTIONS | NLA_F_NESTED, attrs)
    flags = NLM_F_CREATE | NLM_F_REPLACE
    return [(RTM_NEWQDISC, flags, qdisc), (RTM_NEWTCLASS, flags, cls)]


TCA_KIND, TCA_OPTIONS = 1, 2
TCA_NETEM_LOSS, TCA_NETEM_LATENCY64, TCA_NETEM_JITTER64 = 5, 10, 11
NETEM_LOSS_GE = 2
NLA_F_NESTED = 0x8000
_TCMSG = struct.Struct("=BBHiIII")
_NETEM_QOPT = struct.Struct("=6I")  # latency, limit, loss, gap, duplicate, jitter
_U32_MAX = 0xFFFF_FFFF


def probability_u32(p: float) -> int:
    """A probability as netem's 32-bit fraction (``loss 100%`` is 0xffffffff)."""
    return round(min(max(p, 0.0), 1.0) * _U32_MAX)


def netem_change(
    seq: int,
    ifindex: int,
    parent: int,
    handle: int,
    latency_ns: int,
    jitter_ns: int,
    limit: int,
    loss: float,
    gemodel: tuple[float, float, float, float] | None = None,
    ack: bool = False,
) -> bytes:
    """RTM_NEWQDISC changing the netem qdisc ``handle`` under ``parent`` on interface
    ``ifindex``: delay and jitter in ns (64-bit attributes: no tick rounding),
    random ``loss``, or Gilbert-Elliott ``gemodel`` as the kernel takes it (p, r,
    h, k1: good->bad, bad->good, kept in the bad state, lost in the good state;
    ``tc ... loss gemodel P R 1-H 1-K`` converts its third argument). The delay
    distribution the qdisc has (e.g. ``normal``) is kept."""
    attrs = _attr(TCA_NETEM_LATENCY64, struct.pack("=q", latency_ns))
    attrs += _attr(TCA_NETEM_JITTER64, struct.pack("=q", jitter_ns))
    if gemodel is not None:
        ge = struct.pack("=4I", *(probability_u32(x) for x in gemodel))
        attrs += _attr(TCA_NETEM_LOSS | NLA_F_NESTED, _attr(NETEM_LOSS_GE, ge))
    qopt = _NETEM_QOPT.pack(0, limit, probability_u32(loss), 0, 0, 0)
    body = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, handle, parent, 0)
    body += _attr(TCA_KIND, b"netem\0") + _attr(TCA_OPTIONS, qopt + attrs)
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWQDISC, flags, seq, 0) + body


_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(netns_path: str) -> socket.socket:
    """An rtnetlink socket bound to another network namespace.

    The calling thread enters the namespace just long enough to open the
    socket (setns affects only this thread), which keeps it for life.
    """
    with entered(netns_path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((0, 0))
    return sock


class NamespaceSockets:
    """One rtnetlink socket per network namespace of a run, opened on first use and
    shared by all that talk to that namespace's kernel (links, routes, qdiscs)."""

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
