"""Links across machines: two simulated machines, a node on each, real packets through VXLAN.

Each machine runs its own wire engine (as two real machines would) and delays
what its node sends by the link's delay less the machines' network's, measured;
the receiving machine passes what its tunnel brings at once. All namespaces
share this host's clock, so the probe's one-way delays are exact.
"""

from __future__ import annotations

import re
import statistics
import subprocess

import pytest

from netemu.cluster.agents import ClockError, ClockOffset, check_clocks, clock_offset
from netemu.cluster.tunnels import CrossEnd, Tunnels, run_vni, tunnel_namespace
from netemu.cluster.underlay import SimulatedMachines
from netemu.kernel import netns
from netemu.kernel.netlink.sockets import NamespaceSockets, send_requests
from netemu.routes import addressing
from netemu.shaping import BLOCKED, Port, Shape
from netemu.shaping.wire import WireShaper

from helpers import needs_root, one_way_ms

RUN = "tcross"
MACHINES = "tcrossm"
DELAY_MS = 5.0


def test_run_vnis_are_24_bit_never_zero_and_differ_between_runs():
    vnis = {run_vni(f"run{i}") for i in range(1000)}
    assert all(0 < v < 1 << 24 for v in vnis)
    assert len(vnis) == 1000
    assert tunnel_namespace("r1", "m0") == "netemu-r1-tunnels.m0"


def test_a_clock_offset_is_read_from_the_shortest_round_trip():
    """Readings (sent, remote, received) in ns of a clock 2.5 ms ahead: the shortest
    round trip (0.2 ms) gives the offset exactly; longer ones, skewed, are not used."""
    ahead = 2_500_000
    readings = [
        (0, 900_000 + ahead, 1_000_000),  # 1 ms round trip, the reading late in it
        (5_000_000, 5_100_000 + ahead, 5_200_000),  # 0.2 ms, the reading halfway
        (9_000_000, 9_050_000 + ahead, 9_600_000),
    ]
    got = clock_offset(readings)
    assert got == ClockOffset(offset_ms=2.5, uncertainty_ms=0.1)
    assert got.within(2.6) and not got.within(2.55)


def test_clocks_not_surely_within_the_bound_stop_the_run_naming_the_machine():
    offsets = {"m0": ClockOffset(0.01, 0.02), "m1": ClockOffset(-0.04, 0.02)}
    check_clocks(offsets, bound_ms=0.07)
    with pytest.raises(ClockError, match=r"m1 -0\.040 ms") as caught:
        check_clocks(offsets, bound_ms=0.05)
    assert "m0" not in str(caught.value)


@pytest.fixture
def cross_link():
    """Nodes a (on m0) and b (on m1), linked across the machines, DELAY_MS each way."""
    nodes = [f"netemu-{RUN}-a", f"netemu-{RUN}-b"]
    sim = SimulatedMachines(MACHINES, 2)
    tunnels = [Tunnels(RUN, m) for m in sim.machines]
    shapers = [WireShaper(), WireShaper()]
    sockets = NamespaceSockets()
    try:
        sim.make()
        netns.ip_batch([f"netns add {ns}" for ns in nodes])
        ends = []
        for i, peer in ((0, 1), (1, 0)):
            tunnels[i].make()
            shapers[i].start([nodes[i]], sim.engine_env(i))
            local = Port(
                nodes[i], f"to-{'ab'[peer]}", addressing.interface_index(peer),
                addressing.mac_address(i, peer),
            )  # fmt: skip
            end = CrossEnd(0, (0, 1), local, addressing.mac_address(peer, i), sim.machines[peer])
            tunnels[i].add(shapers[i], [end])
            ends.append(end)
            me, there = addressing.service_address(i), addressing.service_address(peer)
            netns.run(
                ["ip", "-n", nodes[i], "-batch", "-"],
                f"address add {me}/32 dev lo\nlink set lo up\nlink set {local.ifname} up\n"
                f"neighbour add {there} lladdr {end.peer_mac} dev {local.ifname}\n"
                f"route add {there}/32 dev {local.ifname} src {me}\n",
            )
        link = Shape(delay_ms=DELAY_MS, rate_mbit=1000)
        for t, s, e in zip(tunnels, shapers, ends, strict=True):
            toward = t.directions[e.number][0]
            # The node's rate limiter, as bring-up makes it for every sending interface.
            s.add_interfaces({(e.local.netns, e.local.ifname): e.local.ifindex})
            send_requests(sockets(e.local.netns), s.rate_limiters([(toward, link.rate_mbit)]))
            s.apply({toward: t.shape_toward(e, link)})
        yield nodes, tunnels, shapers, ends
    finally:
        sockets.close()
        for s in shapers:
            s.stop()
        for t in tunnels:
            t.remove()
        netns.delete([ns for ns in nodes if ns in netns.namespaces(f"netemu-{RUN}-")])
        sim.remove()


def a_to_b_ms(nodes: list[str], count: int, interval: float) -> list[float]:
    return one_way_ms(nodes[0], nodes[1], addressing.service_address(1), count, interval)


def ping_ms(node: str, count: int = 20) -> tuple[list[float], str]:
    out = subprocess.run(
        ["ip", "netns", "exec", node, "ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1",
         addressing.service_address(1)],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)], out


@needs_root
def test_a_packet_crossing_machines_takes_its_links_delay_once(cross_link):
    """Every probe datagram a -> b arrives, none faster than light, the median within
    0.2 ms of the link's delay and 95% within 0.5 ms of it (a fresh 2-core VM holds
    an engine's wake-up for a packet now and then, 1-9 ms, uncounted by the engine:
    97.7-100% within 0.5 ms in 7 runs, 2026-12-03; a sample the engines counted late
    releases in is measured again); round trips (ping) are twice it."""
    nodes, tunnels, shapers, _ = cross_link
    substrate = tunnels[0].substrate_ms[tunnels[1].machine.address]
    assert 0 < substrate < 0.5, f"the simulated machines' network: {substrate} ms one way"

    def late() -> int:
        return sum(s.stats().get("late", 0) for s in shapers)

    def good(delays: list[float]) -> bool:
        return sum(abs(d - DELAY_MS) <= 0.5 for d in delays) >= 0.95 * len(delays)

    # Measured again (at most twice) when it misses while the engines counted releases
    # late: the host stalled them (up to 20 ms seen), as the plugin's assertions do.
    for _ in range(3):
        before = late()
        delays = a_to_b_ms(nodes, count=300, interval=0.01)
        if good(delays) or late() == before:
            break
    assert len(delays) == 300
    late = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - DELAY_MS) > 0.5]
    engines = [{k: s.stats().get(k) for k in ("late", "worst_late_ms")} for s in shapers]
    seen = (
        f"min {min(delays):.3f}, median {statistics.median(delays):.3f}; late (index, ms): "
        f"{late}; engines: {engines}"
    )
    assert min(delays) >= DELAY_MS - 0.05, f"faster than the link: {seen}"
    within = sum(abs(d - DELAY_MS) <= 0.5 for d in delays) / len(delays)
    assert statistics.median(delays) <= DELAY_MS + 0.2, seen
    assert within >= 0.95, f"{within:.1%} within 0.5 ms of {DELAY_MS} ms: {seen}"
    rtts, out = ping_ms(nodes[0])
    assert len(rtts) == 20, out
    assert min(rtts) >= 2 * DELAY_MS - 0.1 and statistics.median(rtts) <= 2 * DELAY_MS + 0.5, out


@needs_root
def test_a_cross_machine_link_blocked_on_the_sending_machine_carries_nothing(cross_link):
    """A fault (the direction blocked where it is sent from) stops the tunnel's
    traffic; opened again, it carries at its delay."""
    nodes, tunnels, shapers, ends = cross_link
    toward = tunnels[0].directions[ends[0].number][0]
    shapers[0].apply({toward: BLOCKED})
    rtts, out = ping_ms(nodes[0], count=10)
    assert rtts == [], out
    shapers[0].apply({toward: tunnels[0].shape_toward(ends[0], Shape(DELAY_MS, 1000))})
    rtts, out = ping_ms(nodes[0], count=10)
    assert len(rtts) == 10, out


@needs_root
def test_nothing_of_the_machines_or_their_tunnels_is_left():
    """Made and removed: no namespace of the run or of the simulated machines stays."""
    with SimulatedMachines(MACHINES, 3) as sim:
        t = Tunnels(RUN, sim.machines[2])
        t.make()
        assert t.netns in netns.namespaces(f"netemu-{RUN}-")
        t.remove()
    assert netns.namespaces(f"netemu-{RUN}-") == []
    assert netns.namespaces(f"netemu-{MACHINES}-") == []
