"""Shaping: making each link direction delay, lose and rate-limit packets.

One interface, two backends:

- :mod:`netemu.shaping.netem` drives ``tc netem`` (under an HTB rate limiter)
  on every normal distribution kernel;
- :mod:`netemu.shaping.wire` makes each link end a TAP interface and runs a
  compiled engine as the wire between them, for kernels built without
  ``sch_netem`` (this project's CI);

and :func:`choose` picks one (``auto`` probes the kernel).

A link between nodes a and b has two directions. Every direction has an HTB
rate limiter on the sender's interface; netem adds delay and loss after it in
the same interface's queue, the wire engine between the sender's interface
and the receiver's. Either way the receiving kernel sees a packet after its
delay.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from netemu.kernel import netns
from netemu.kernel.netlink.qdisc import htb_requests
from netemu.kernel.netlink.sockets import NamespaceSockets


@dataclass(frozen=True)
class Shape:
    """What one direction of a link does to the packets it carries."""

    delay_ms: float
    rate_mbit: float
    loss: float = 0.0  # probability, 0..1 (outside fades)
    jitter_ms: float = 0.0
    blocked: bool = False  # acquiring, or down: carries nothing
    #: Turbulence fades: share of time in a fade (all packets lost), mean length.
    fade_probability: float = 0.0
    fade_ms: float = 0.0

    def close_to(self, other: Shape | None, delay_tolerance_ms: float = 1e-3) -> bool:
        """Same shape for all practical purposes (delay within a microsecond)."""
        return (
            other is not None
            and abs(self.delay_ms - other.delay_ms) < delay_tolerance_ms
            and self.rate_mbit == other.rate_mbit
            and abs(self.loss - other.loss) < 1e-6
            and abs(self.fade_probability - other.fade_probability) < 1e-6
            and self.fade_ms == other.fade_ms
            and self.jitter_ms == other.jitter_ms
            and self.blocked == other.blocked
        )


BLOCKED = Shape(delay_ms=0.0, rate_mbit=1.0, blocked=True)


@dataclass(frozen=True)
class Direction:
    """One direction of a link: from ``src`` (sending interface) to ``dst``."""

    link: tuple[int, int]
    src_netns: str
    src_ifname: str  # in src's namespace, toward dst
    dst_netns: str
    dst_ifname: str  # in dst's namespace, toward src


@dataclass(frozen=True)
class Port:
    """One end of a link: an interface in a node's namespace, with its index and MAC."""

    netns: str
    ifname: str
    ifindex: int
    mac: str


class ShaperError(RuntimeError):
    """The shaper failed: traffic is stopped and the run must end."""


class Shaper(ABC):
    name: str

    def __init__(self) -> None:
        #: (namespace, interface name) -> interface index, of every link interface.
        self.ifindex: dict[tuple[str, str], int] = {}

    @property
    def pids(self) -> list[int]:
        """Processes of the shaper's own (``netemu clean`` kills them after a kill -9)."""
        return []

    def namespace_commands(self) -> list[str]:
        """Shell commands run once in every node's namespace at bring-up."""
        return []

    def make_links(self, pairs: list[tuple[Port, Port]]) -> None:
        """Create the interfaces of new links, each end in its namespace: a veth pair
        each, all in one ``ip -batch`` (a shaper with interfaces of its own overrides)."""
        netns.ip_batch(
            [
                f"link add name {a.ifname} index {a.ifindex} address {a.mac} netns {a.netns} "
                f"type veth peer name {b.ifname} index {b.ifindex} address {b.mac} netns {b.netns}"
                for a, b in pairs
            ]
        )

    def rate_limiters(self, directions_out: list[tuple[Direction, float]]) -> list:
        """netlink requests (:func:`netemu.kernel.netlink.sockets.send_requests`) making new sending
        interfaces' HTB limiters: root ``1:``, default class ``1:10`` at each
        direction's rate (Mbit/s), burst :func:`htb_burst_bytes`."""
        out = []
        for d, rate in directions_out:
            self.started_at(d, rate)
            out += htb_requests(
                self.ifindex[(d.src_netns, d.src_ifname)], HTB_ROOT, HTB_LEAF, HTB_LEAF & 0xFFFF,
                round(rate * 1e6 / 8), htb_burst_bytes(rate),
            )  # fmt: skip
        return out

    @abstractmethod
    def started_at(self, direction: Direction, rate_mbit: float) -> None:
        """A new sending interface gets its limiter at ``rate_mbit``."""

    def tc_lines(self, directions_out: list[tuple[Direction, float]]) -> list[str]:
        """``tc -batch`` lines that also prepare new sending interfaces in one
        namespace, after their limiters (none unless a shaper needs more)."""
        return []

    def start(
        self,
        namespaces: list[str],
        env: dict[str, str] | None = None,
        sockets: NamespaceSockets | None = None,
    ) -> None:
        """Called once the namespaces exist, before any link is made; ``env``: the
        environment for processes of the shaper's own (tagged with the run); ``sockets``:
        the run's netlink socket per namespace (its owner closes them)."""
        self.sockets = sockets or NamespaceSockets()

    def add_interfaces(self, ifindex: dict[tuple[str, str], int]) -> None:
        """Learn the (namespace, interface) -> index of new interfaces."""
        self.ifindex.update(ifindex)

    @abstractmethod
    def apply(self, changes: dict[Direction, Shape]) -> None:
        """Change the given directions in place (no qdisc is torn down)."""

    def check(self) -> None:
        """Raise :class:`ShaperError` if the shaper can no longer shape."""
        return None

    def stats(self, full: bool = False) -> dict:
        """What the shaper counted ({} where the kernel does it all): see the wire shaper."""
        return {}

    #: The CPU the shaper's own process runs on, if it has one (the wire engine's).
    cpu: int | None = None

    @contextlib.contextmanager
    def elsewhere(self) -> Iterator[None]:
        """Run the calling thread off the shaper's CPU meanwhile (an epoch's netlink batches:
        the kernel does not preempt a system call here, so one on that CPU would hold the
        engine's next release back by milliseconds). Threads only: what runs in the nodes
        keeps every CPU."""
        allowed = os.sched_getaffinity(0)
        if self.cpu is None or allowed - {self.cpu} == set():
            yield
            return
        os.sched_setaffinity(0, allowed - {self.cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, allowed)

    def stop(self) -> None:
        """Release what the shaper holds outside the namespaces."""
        return None


#: The HTB limiter on every sending interface: root ``1:``, default class ``1:10``
#: (tc writes handles in hex).
HTB_ROOT, HTB_LEAF = 0x0001_0000, 0x0001_0010


def htb_burst_bytes(rate_mbit: float) -> int:
    """The burst holds 0.25 ms at the rate (at least 2 full frames): about one GSO
    packet at 2.5 Gbit/s, so the limiter still reaches its rate (HTB waits on
    high-resolution timers), while a burst never leaves faster than the link
    serialises it by more than that (with 4 ms, a 4.2 MB frame's first 1.25 MB
    left at once: the frame arrived 4 ms before physics allows)."""
    return max(int(rate_mbit * 1e6 / 8 * 0.00025), 3028)


def htb_rate(rate_mbit: float) -> str:
    """HTB rate, ceiling and bursts for a rate in Mbit/s, as tc arguments.

    ``mbit`` is megabits per second (``mbps`` would be megabytes: a classic trap).
    """
    burst = htb_burst_bytes(rate_mbit)
    return f"rate {rate_mbit:.6g}mbit ceil {rate_mbit:.6g}mbit burst {burst} cburst {burst}"


def tc_batches(lines_by_netns: dict[str, list[str]]) -> None:
    """Run one ``tc -batch`` per namespace (:func:`netns.run_all`); raise on any failure."""
    try:
        netns.run_all(netns.tc_jobs(lines_by_netns))
    except netns.CommandError as exc:
        raise ShaperError(f"tc failed: {exc}") from None


def choose(kind: str) -> Shaper:
    """The shaper for ``kind``: ``netem``, ``wire`` or ``auto``."""
    from netemu.shaping.netem import NetemShaper, netem_available
    from netemu.shaping.wire import WireShaper

    if kind == "auto":
        kind = "netem" if netem_available() else "wire"
    if kind == "netem":
        return NetemShaper()
    if kind == "wire":
        return WireShaper()
    raise ValueError(
        f"unknown shaper {kind!r}"
        + (" (the nfqueue shaper became 'wire')" if kind == "nfqueue" else "")
    )
