"""One machine's ends of the links whose peers are on other machines: VXLAN over their network.

A link between a node here and a node on another machine has its end here made
with the node's ``to-<peer>`` name, index and MAC (:mod:`netemu.routes.addressing`);
what the node sends on it crosses the machines' own network in VXLAN (this
kernel has no GRE, every Linux has VXLAN). Each machine delays what its own
nodes send, so each direction is delayed once, on the sending machine, by the
geometric delay less what the machines' network adds
(:func:`substrate_one_way_ms`, measured: half the median round trip between the
two machines), and what arrives from a tunnel goes to its node at once. Every
VXLAN device is made in the machine's network, where its UDP socket stays, and
then lives in a namespace of the run's: deleting the run's namespaces removes
everything the run made for its tunnels (``netemu clean`` finds them by the
run's ``netemu-<run>-`` prefix).

With netem (the kernel shapes): the node's ``to-<peer>`` *is* a VXLAN device,
one per link (VNI :func:`link_vni`, its one remote the peer's machine), with the
HTB limiter and netem on its egress as any link end's; what arrives is decapsulated
by the kernel straight into the node's namespace.

With the wire shaper (the engine shapes, between TAPs): a link end here is a pair
of the engine's TAPs: the node's ``to-<peer>`` and ``x<n>`` in this machine's
*tunnel namespace*, ``netemu-<run>-tunnels.<machine>``, where ``x<n>`` is a port
of a bridge with the run's one VXLAN device (VNI from the run's name,
:func:`run_vni`). The bridge and the VXLAN device forward by static entries (each
remote node end's MAC -> the VXLAN device -> its machine's address; each local
end's MAC -> its ``x<n>``): no learning, no flooding, so a frame reaches only its
link's peer; what arrives passes the engine at zero delay.

Every machine of a run uses the same kind (the driver picks one for all): the
two kinds' frames do not meet.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import zlib
from dataclasses import dataclass, replace

from netemu.cluster.underlay import Machine
from netemu.kernel import netns
from netemu.routes.addressing import NETNS_PREFIX
from netemu.shaping import Direction, Port, Shape, Shaper, ShaperError
from netemu.shaping.wire import WireShaper

#: IANA's VXLAN port.
VXLAN_PORT = 4789
#: VXLAN's own bytes (outer Ethernet, IPv4, UDP, VXLAN headers) over the nodes' frames.
VXLAN_OVERHEAD = 50
#: The nodes' links carry 1,500-byte packets, as real terminals' Ethernet does.
LINK_MTU = 1500
#: What arrives from a tunnel was delayed on the machine that sent it.
AT_ONCE = Shape(delay_ms=0.0, rate_mbit=1e6)
#: Round trips whose median gives the substrate's latency.
SUBSTRATE_PINGS = 20


def run_vni(run_name: str) -> int:
    """The run's VXLAN network id (24 bits, never 0): runs that share machines use
    different ones unless two names hash alike (then the second run's tunnels fail
    to be made, saying so)."""
    return zlib.crc32(run_name.encode()) % ((1 << 24) - 1) + 1


def link_vni(run_name: str, number: int) -> int:
    """The VXLAN network id of link ``number``'s own device (netem ends): the run's
    block of ids from :func:`run_vni` on, so a run's links never share one."""
    return (run_vni(run_name) - 1 + number) % ((1 << 24) - 1) + 1


def tunnel_namespace(run_name: str, machine: str) -> str:
    """Where a machine's tunnels for a run live (node names have no '.')."""
    return f"{NETNS_PREFIX}{run_name}-tunnels.{machine}"


@dataclass(frozen=True)
class CrossEnd:
    """This machine's end of a link to a node on another machine."""

    number: int  # unique among this machine's cross ends in the run: its ``x<n>``
    link: tuple[int, int]  # the link's key (node indices, lower first)
    local: Port  # the node's interface toward its peer
    peer: Port  # the peer's interface toward this node, on the other machine
    remote: Machine  # the peer's machine


class Tunnels:
    """One machine's cross-machine link ends for one run (see the module's docstring)."""

    def __init__(self, run_name: str, machine: Machine, port: int = VXLAN_PORT) -> None:
        self.run_name = run_name
        self.machine = machine
        self.vni = run_vni(run_name)
        self.port = port
        self.netns = tunnel_namespace(run_name, machine.name)
        #: One-way latency of the machines' network to each remote machine, by address.
        self.substrate_ms: dict[str, float] = {}
        #: The direction each cross end's node sends on, by the end's number.
        self.toward: dict[int, Direction] = {}
        self._bridged = False

    def make(self) -> None:
        """Check that the machines' network carries the links' packets in VXLAN."""
        mtu = underlay_mtu(self.machine)
        if mtu < LINK_MTU + VXLAN_OVERHEAD:
            raise ShaperError(
                f"machine {self.machine.name}: its network's MTU is {mtu}, VXLAN needs "
                f"{LINK_MTU + VXLAN_OVERHEAD} to carry the links' {LINK_MTU}-byte packets "
                "(set the machines' interfaces to jumbo frames, e.g. mtu 9000)"
            )

    def _make_bridge(self) -> None:
        """The wire ends' tunnel namespace, its bridge and the run's VXLAN device in it."""
        temporary = f"nevx{self.vni:06x}"  # in the machine's network until moved
        netns.ip_batch([f"netns add {self.netns}"])
        self._bridged = True
        try:
            netns.ip_batch(
                [
                    f"link add {temporary} mtu {LINK_MTU} type vxlan id {self.vni} "
                    f"local {self.machine.address} dstport {self.port} nolearning",
                    f"link set {temporary} netns {self.netns}",
                ],
                self.machine.netns,
            )
            netns.ip_batch(
                [
                    f"link set {temporary} name vxlan0",
                    f"link add br0 mtu {LINK_MTU} type bridge",
                    "link set vxlan0 master br0",
                    "link set vxlan0 up",
                    "link set br0 up",
                    "link set lo up",
                ],
                self.netns,
            )
            self._bridge(["link set dev vxlan0 learning off flood off mcast_flood off"])
        except BaseException:
            self.remove()
            raise

    def measure(self, remotes: list[Machine]) -> dict[str, float]:
        """The machines' network's one-way latency to each of ``remotes`` (ms)."""
        for m in remotes:
            if m.address not in self.substrate_ms:
                self.substrate_ms[m.address] = substrate_one_way_ms(self.machine, m.address)
        return self.substrate_ms

    def add(self, shaper: Shaper, ends: list[CrossEnd]) -> None:
        """Make ``ends`` (see the module's docstring: VXLAN devices with netem, the
        engine's TAP pairs and the bridge's entries with the wire shaper); a node's
        direction toward its peer starts as the shaper starts any (blocked)."""
        self.measure([e.remote for e in ends])
        if isinstance(shaper, WireShaper):
            self._add_engine_ends(shaper, ends)
        else:
            self._add_kernel_ends(ends)

    def _add_kernel_ends(self, ends: list[CrossEnd]) -> None:
        lines = [
            f"link add name {e.local.ifname} index {e.local.ifindex} address {e.local.mac} "
            f"netns {e.local.netns} mtu {LINK_MTU} "
            f"type vxlan id {link_vni(self.run_name, e.number)} "
            f"local {self.machine.address} remote {e.remote.address} dstport {self.port} "
            "nolearning"
            for e in ends
        ]
        try:
            netns.ip_batch(lines, self.machine.netns)
        except netns.CommandError as exc:
            raise ShaperError(
                f"machine {self.machine.name}: a link's VXLAN device could not be made ({exc}); "
                f"ids from {link_vni(self.run_name, 0)} on are this run's: another run on "
                "these machines may hold some"
            ) from None
        for e in ends:
            self.toward[e.number] = Direction(
                e.link, e.local.netns, e.local.ifname, e.peer.netns, e.peer.ifname
            )

    def _add_engine_ends(self, shaper: WireShaper, ends: list[CrossEnd]) -> None:
        if not self._bridged:
            self._make_bridge()
        if self.netns not in shaper.ns_ids:
            shaper.bind([self.netns])
        outer = [Port(self.netns, f"x{e.number}", 0, _outer_mac(e.number)) for e in ends]
        shaper.make_links([(e.local, o) for e, o in zip(ends, outer, strict=True)])
        ip, bridge, back = [], [], []
        for e, o in zip(ends, outer, strict=True):
            ip += [f"link set {o.ifname} mtu {LINK_MTU} master br0", f"link set {o.ifname} up"]
            bridge += [
                f"link set dev {o.ifname} learning off flood off mcast_flood off",
                f"fdb add {e.local.mac} dev {o.ifname} master static",
                f"fdb add {e.peer.mac} dev vxlan0 master static",
                f"fdb append {e.peer.mac} dev vxlan0 self dst {e.remote.address}",
            ]
            self.toward[e.number] = Direction(
                e.link, e.local.netns, e.local.ifname, o.netns, o.ifname
            )
            back.append(Direction(e.link, o.netns, o.ifname, e.local.netns, e.local.ifname))
            shaper.started_at(back[-1], AT_ONCE.rate_mbit)
        netns.ip_batch(ip, self.netns)
        self._bridge(bridge)
        shaper.apply(dict.fromkeys(back, AT_ONCE))

    def shape_toward(self, end: CrossEnd, shape: Shape) -> Shape:
        """What the engine here gives a direction toward ``end``'s peer: the link's
        ``shape`` less the machines' network's latency (never below zero)."""
        lag = self.substrate_ms[end.remote.address]
        return replace(shape, delay_ms=max(0.0, shape.delay_ms - lag))

    def remove(self) -> None:
        """Delete the tunnel namespace: its bridge, VXLAN device and TAPs go with it."""
        if self.netns in netns.namespaces(self.netns):
            netns.delete([self.netns])

    def _bridge(self, lines: list[str]) -> None:
        """``bridge`` commands (ports' flags, forwarding entries) in one process."""
        netns.run(["bridge", "-n", self.netns, "-batch", "-"], "\n".join(lines) + "\n")


def _outer_mac(number: int) -> str:
    """A locally administered MAC for a tunnel-side TAP (never a node's: see addressing)."""
    return "0a:fe:" + ":".join(f"{(number >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def underlay_mtu(machine: Machine) -> int:
    """The MTU of the interface that holds the machine's address."""
    where = ["ip", "-n", machine.netns] if machine.netns else ["ip"]
    out = netns.run([*where, "-o", "address", "show", "to", f"{machine.address}/32"])
    device = out.split()[1] if out.split() else None
    if device is None:
        raise ShaperError(f"machine {machine.name}: no interface has address {machine.address}")
    link = netns.run([*where, "-o", "link", "show", "dev", device.split("@")[0]])
    return int(re.search(r"\bmtu (\d+)", link).group(1))


def substrate_one_way_ms(machine: Machine, address: str, count: int = SUBSTRATE_PINGS) -> float:
    """Half the median round trip from ``machine`` to ``address`` (ms), by ping."""
    where = ["ip", "netns", "exec", machine.netns] if machine.netns else []
    p = subprocess.run(
        [*where, "ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1", address],
        capture_output=True,
        text=True,
    )
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", p.stdout)]
    if len(rtts) < count // 2:
        raise ShaperError(
            f"machine {machine.name} cannot reach {address} on the machines' network "
            f"({len(rtts)} of {count} pings answered)"
        )
    return statistics.median(rtts) / 2
