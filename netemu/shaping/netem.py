"""The netem backend: ``tc netem`` under an HTB rate limiter, changed in place.

On each sending interface: ``htb`` root (rate) -> class 1:10 -> ``netem``
(delay, jitter, loss), made with ``tc -batch`` at bring-up. An epoch's delay
and loss changes go to the kernel as netlink messages, one batch per namespace
that has changes and no program at all (Starlink shell 1 changes thousands of
link directions in hundreds of namespaces every second); the rare changes tc
does better stay ``tc -batch`` lines: a rate (``tc class change``) and a
link's first jitter (tc loads netem's ``normal`` delay distribution table,
which later changes keep). The qdiscs are never torn down and rebuilt.

netem's queue ``limit`` (default 1000 packets) must hold everything in flight
on the link, or a long fat link drops packets: it is sized to the
bandwidth-delay product (see :func:`netem_limit`).
"""

from __future__ import annotations

import math
import subprocess
from collections import defaultdict
from functools import cache

from netemu.kernel.netlink.qdisc import netem_change
from netemu.kernel.netlink.sockets import send_requests
from netemu.shaping import (
    BLOCKED,
    Direction,
    Shape,
    Shaper,
    htb_rate,
    tc_batches,
)

#: Where netem sits: class 1:10 of the HTB root, handle 10: (tc reads ids in hex).
PARENT, HANDLE = 0x0001_0010, 0x0010_0000
#: Smallest packet the limit is sized for: with 1,500-byte packets only, small
#: packets (ACKs) would overflow a limit sized in full frames.
_SIZING_PACKET_BYTES = 500


def netem_limit(rate_mbit: float, delay_ms: float, jitter_ms: float = 0.0) -> int:
    """netem queue length (packets) that holds a link's bandwidth-delay product.

    The HTB limiter in front caps the arrival rate, so at most
    ``rate x (delay + 4 jitter)`` bytes are inside netem; counted in 500-byte
    packets, and never below netem's default of 1,000.
    """
    in_flight_bytes = rate_mbit * 1e6 / 8 * (delay_ms + 4 * jitter_ms) / 1000
    return max(1000, math.ceil(in_flight_bytes / _SIZING_PACKET_BYTES))


def netem_args(shape: Shape) -> str:
    """netem parameters for a shape; ``us`` keeps sub-millisecond precision."""
    limit = netem_limit(shape.rate_mbit, shape.delay_ms, shape.jitter_ms)
    if shape.blocked:
        return f"delay 0us loss 100% limit {limit}"
    out = f"delay {shape.delay_ms * 1000:.1f}us"
    if shape.jitter_ms > 0:
        out += f" {shape.jitter_ms * 1000:.1f}us distribution normal"
    if shape.fade_probability > 0 and shape.fade_ms > 0:
        p, r = gilbert_elliott_per_packet(shape)
        # gemodel p r 1-h 1-k: all lost in a fade, the link's own loss outside.
        out += f" loss gemodel {p * 100:.6g}% {r * 100:.6g}% 100% {shape.loss * 100:.6g}%"
    elif shape.loss > 0:
        out += f" loss {shape.loss * 100:.6g}%"
    return out + f" limit {limit}"


def gilbert_elliott_per_packet(shape: Shape) -> tuple[float, float]:
    """netem's gemodel steps once per packet: (P(good->bad), P(bad->good)) per
    packet for fades of ``fade_ms`` at the link's full rate of 1,500-byte packets
    (the engine's chain runs on time instead, whatever the traffic)."""
    packets_per_fade = max(shape.fade_ms / 1000 * shape.rate_mbit * 1e6 / (8 * 1500), 1.0)
    r = 1.0 / packets_per_fade
    pi = min(shape.fade_probability, 0.999)
    return min(r * pi / (1 - pi), 1.0), r


#: The probe: a netem qdisc on the loopback of a namespace that has no name and
#: ends with the command, so nothing is left however the probe ends.
NETEM_PROBE = ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem"]


@cache
def netem_available() -> bool:
    """Whether this kernel has sch_netem (loaded on demand by the probe)."""
    try:
        return subprocess.run(NETEM_PROBE, capture_output=True).returncode == 0
    except OSError:  # no unshare
        return False


class NetemShaper(Shaper):
    name = "netem"

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[Direction, Shape] = {}
        self.with_distribution: set[Direction] = set()

    def started_at(self, direction: Direction, rate_mbit: float) -> None:
        self.current[direction] = Shape(delay_ms=0.0, rate_mbit=rate_mbit, blocked=True)

    def tc_lines(self, directions_out: list[tuple[Direction, float]]) -> list[str]:
        """netem under each new limiter, blocked until the first epoch shapes it."""
        return [
            f"qdisc replace dev {d.src_ifname} parent 1:10 handle 10: netem "
            + netem_args(self.current[d])
            for d, _ in directions_out
        ]

    def apply(self, changes: dict[Direction, Shape]) -> None:
        by_ns: dict[str, list[str]] = defaultdict(list)
        netlink: dict[str, list[tuple[Direction, Shape]]] = defaultdict(list)
        for d, shape in changes.items():
            old = self.current.get(d, BLOCKED)
            if shape.rate_mbit != old.rate_mbit:
                by_ns[d.src_netns].append(
                    f"class change dev {d.src_ifname} parent 1: classid 1:10 htb "
                    + htb_rate(shape.rate_mbit)
                )
            if shape.jitter_ms > 0 and not shape.blocked and d not in self.with_distribution:
                by_ns[d.src_netns].append(
                    f"qdisc change dev {d.src_ifname} parent 1:10 handle 10: netem "
                    + netem_args(shape)
                )
                self.with_distribution.add(d)
            else:
                netlink[d.src_netns].append((d, shape))
        tc_batches(by_ns)
        for ns, items in netlink.items():
            send_requests(self.sockets(ns), [self._change(d, shape) for d, shape in items])
        self.current.update(changes)

    def _change(self, d: Direction, shape: Shape) -> tuple[int, int, bytes]:
        """The netlink twin of ``tc qdisc change ... netem`` + :func:`netem_args`."""
        limit = netem_limit(shape.rate_mbit, shape.delay_ms, shape.jitter_ms)
        ifindex = self.ifindex[(d.src_netns, d.src_ifname)]
        if shape.blocked:
            return netem_change(ifindex, PARENT, HANDLE, 0, 0, limit, 1.0)
        gemodel = None
        if shape.fade_probability > 0 and shape.fade_ms > 0:
            p, r = gilbert_elliott_per_packet(shape)
            gemodel = (p, r, 0.0, shape.loss)  # h: none kept in a fade; k1: the link's loss outside
        return netem_change(
            ifindex, PARENT, HANDLE, round(shape.delay_ms * 1e6),
            round(shape.jitter_ms * 1e6), limit, shape.loss, gemodel,
        )  # fmt: skip
