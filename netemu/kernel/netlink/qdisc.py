"""Traffic-control messages (``tcmsg``): HTB rate limiters made, netem changed in place.

What ``tc qdisc replace ... htb``, ``tc class replace ... htb rate R`` and ``tc qdisc
change ... netem delay D loss L`` send. Their options are nested attributes, so each
request is packed on its own (there are a few per link, not per route); a request
is (message type, flags, body), numbered and sent by :func:`.sockets.send_requests`.
"""

from __future__ import annotations

import socket
import struct

from netemu.kernel.netlink.message import NLA_F_NESTED, NLM_F_CREATE, NLM_F_REPLACE, attr

RTM_NEWQDISC, RTM_NEWTCLASS = 36, 40
TC_H_ROOT = 0xFFFF_FFFF
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
TCA_NETEM_LOSS, TCA_NETEM_LATENCY64, TCA_NETEM_JITTER64 = 5, 10, 11
NETEM_LOSS_GE = 2
TC_LINKLAYER_ETHERNET = 1

#: struct tcmsg: family, pad, pad, ifindex, handle, parent, info.
TCMSG = struct.Struct("=BBHiIII")
_RATESPEC = struct.Struct("=BBHhHI")  # cell_log, linklayer, overhead, cell_align, mpu, rate
_NETEM_QOPT = struct.Struct("=6I")  # latency, limit, loss, gap, duplicate, jitter
_PSCHED_TICK_NS = 64  # the kernel's PSCHED_SHIFT: HTB buffers are in 64 ns ticks
_U32_MAX = 0xFFFF_FFFF

Request = tuple[int, int, bytes]


def _tcmsg(ifindex: int, handle: int, parent: int, kind: bytes, options: bytes) -> bytes:
    return (
        TCMSG.pack(socket.AF_UNSPEC, 0, 0, ifindex, handle, parent, 0)
        + attr(TCA_KIND, kind + b"\0")
        + options
    )


def htb_requests(
    ifindex: int, root: int, leaf: int, default: int, rate_bytes_s: int, burst_bytes: int
) -> list[Request]:
    """``tc qdisc replace dev IF root handle ROOT htb default DEFAULT`` and ``tc class
    replace dev IF parent ROOT classid LEAF htb rate R ceil R burst B cburst B`` as
    netlink requests (rates from 4 GB/s up in 64-bit attributes, like tc)."""
    glob = struct.pack("=5I", 3, 10, default, 0, 0)  # version, r2q, default class, ...
    qdisc = _tcmsg(ifindex, root, TC_H_ROOT, b"htb",
                   attr(TCA_OPTIONS | NLA_F_NESTED, attr(TCA_HTB_INIT, glob)))  # fmt: skip
    spec = _RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, -1, 0, min(rate_bytes_s, _U32_MAX))
    # As tc computes it: the burst's transmission time in whole microseconds, then in ticks.
    buffer = int(int(1e6 * burst_bytes / rate_bytes_s) * 1000 / _PSCHED_TICK_NS)
    attrs = attr(TCA_HTB_PARMS, spec + spec + struct.pack("=5I", buffer, buffer, 0, 0, 0))
    if rate_bytes_s >= _U32_MAX:
        attrs += attr(TCA_HTB_RATE64, struct.pack("=Q", rate_bytes_s))
        attrs += attr(TCA_HTB_CEIL64, struct.pack("=Q", rate_bytes_s))
    cls = _tcmsg(ifindex, leaf, root, b"htb", attr(TCA_OPTIONS | NLA_F_NESTED, attrs))
    flags = NLM_F_CREATE | NLM_F_REPLACE
    return [(RTM_NEWQDISC, flags, qdisc), (RTM_NEWTCLASS, flags, cls)]


def probability_u32(p: float) -> int:
    """A probability as netem's 32-bit fraction (``loss 100%`` is 0xffffffff)."""
    return round(min(max(p, 0.0), 1.0) * _U32_MAX)


def netem_change(
    ifindex: int,
    parent: int,
    handle: int,
    latency_ns: int,
    jitter_ns: int,
    limit: int,
    loss: float,
    gemodel: tuple[float, float, float, float] | None = None,
) -> Request:
    """RTM_NEWQDISC changing the netem qdisc ``handle`` under ``parent`` on interface
    ``ifindex``: delay and jitter in ns (64-bit attributes: no tick rounding),
    random ``loss``, or Gilbert-Elliott ``gemodel`` as the kernel takes it (p, r,
    h, k1: good->bad, bad->good, kept in the bad state, lost in the good state;
    ``tc ... loss gemodel P R 1-H 1-K`` converts its third argument). The delay
    distribution the qdisc has (e.g. ``normal``) is kept."""
    attrs = attr(TCA_NETEM_LATENCY64, struct.pack("=q", latency_ns))
    attrs += attr(TCA_NETEM_JITTER64, struct.pack("=q", jitter_ns))
    if gemodel is not None:
        ge = struct.pack("=4I", *(probability_u32(x) for x in gemodel))
        attrs += attr(TCA_NETEM_LOSS | NLA_F_NESTED, attr(NETEM_LOSS_GE, ge))
    qopt = _NETEM_QOPT.pack(0, limit, probability_u32(loss), 0, 0, 0)
    return RTM_NEWQDISC, 0, _tcmsg(ifindex, handle, parent, b"netem",
                                   attr(TCA_OPTIONS, qopt + attrs))  # fmt: skip
