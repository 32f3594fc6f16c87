"""Links across machines: two simulated machines, a node on each, real packets through VXLAN.

Each machine runs its own wire engine (as two real machines would) and delays
what its node sends by the link's delay less the machines' network's, measured;
the receiving machine passes what its tunnel brings at once. All namespaces
share this host's clock, so the probe's one-way delays are exact.
"""

from __future__ import annotations

import contextlib
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from netemu.cluster.agents import (
    ClockError,
    ClockOffset,
    MachineLost,
    check_clocks,
    clock_offset,
)
from netemu.cluster.processes import RemoteHost
from netemu.cluster.tunnels import CrossEnd, Tunnels, link_vni, run_vni, tunnel_namespace
from netemu.cluster.underlay import SimulatedMachines
from netemu.kernel import netns
from netemu.kernel.netlink.sockets import NamespaceSockets, send_requests
from netemu.routes import addressing
from netemu.shaping import BLOCKED, Port, Shape, Shaper, tc_batches
from netemu.shaping.netem import NetemShaper, netem_available
from netemu.shaping.wire import WireShaper

from cluster_driver import DELAYS_MS, NAMES, agents_here
from helpers import leftovers, measured, needs_root, one_way_ms, run_netemu

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


def test_a_remote_program_whose_machine_stops_answering_says_so_on_its_stderr():
    """A program started on another machine whose agent is gone counts as killed, and
    its stderr says why (where a failing test shows a program's output)."""
    answers = iter([7, (b"partial\n", b"", None)])

    def ask(method: str, *args):
        if (got := next(answers, None)) is None:
            raise MachineLost("m2", "its agent died (ActorDiedError)")
        return got

    proc = RemoteHost(ask, 3).popen(["ping", "x"], text=True)
    assert proc.key == 7 and proc.poll() is None
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == -signal.SIGKILL and out == "partial\n"
    why = "machine m2 lost: its agent died (ActorDiedError)"
    assert err == f"netemu: no answer from the program's machine: {why}\n"
    assert isinstance(proc.gone, MachineLost)


@contextlib.contextmanager
def linked_across(shaper: type[Shaper]):
    """Nodes a (on m0) and b (on m1), linked across the machines, DELAY_MS each way,
    each machine's end shaped by its own ``shaper``."""
    nodes = [f"netemu-{RUN}-a", f"netemu-{RUN}-b"]
    sim = SimulatedMachines(MACHINES, 2)
    tunnels = [Tunnels(RUN, m) for m in sim.machines]
    shapers = [shaper(), shaper()]
    sockets = NamespaceSockets()
    try:
        sim.make()
        netns.ip_batch([f"netns add {ns}" for ns in nodes])
        ends = []
        for i, peer in ((0, 1), (1, 0)):
            tunnels[i].make()
            shapers[i].start([nodes[i]], sim.engine_env(i), sockets)
            local, there = (
                Port(
                    nodes[n], f"to-{'ab'[m]}", addressing.interface_index(m),
                    addressing.mac_address(n, m),
                )
                for n, m in ((i, peer), (peer, i))
            )  # fmt: skip
            end = CrossEnd(0, (0, 1), local, there, sim.machines[peer])
            tunnels[i].add(shapers[i], [end])
            ends.append(end)
            me, there = addressing.service_address(i), addressing.service_address(peer)
            netns.run(
                ["ip", "-n", nodes[i], "-batch", "-"],
                f"address add {me}/32 dev lo\nlink set lo up\nlink set {local.ifname} up\n"
                f"neighbour add {there} lladdr {end.peer.mac} dev {local.ifname}\n"
                f"route add {there}/32 dev {local.ifname} src {me}\n",
            )
        link = Shape(delay_ms=DELAY_MS, rate_mbit=1000)
        for t, s, e in zip(tunnels, shapers, ends, strict=True):
            toward = t.toward[e.number]
            # The node's rate limiter (and netem's qdisc behind it), as bring-up makes them.
            s.add_interfaces({(e.local.netns, e.local.ifname): e.local.ifindex})
            send_requests(sockets(e.local.netns), s.rate_limiters([(toward, link.rate_mbit)]))
            tc_batches({e.local.netns: s.tc_lines([(toward, link.rate_mbit)])})
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


@pytest.fixture
def cross_link():
    with linked_across(WireShaper) as made:
        yield made


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

    def missed(delays: list[float], _late: int) -> str | None:
        off = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - DELAY_MS) > 0.5]
        engines = [{k: s.stats().get(k) for k in ("late", "worst_late_ms")} for s in shapers]
        seen = (
            f"{len(delays)} arrived, min {min(delays, default=0):.3f}, median "
            f"{statistics.median(delays or [0]):.3f}; outside 0.5 ms (index, ms): {off}; "
            f"engines: {engines}"
        )
        if len(delays) != 300:
            return f"lost: {seen}"
        if min(delays) < DELAY_MS - 0.05:
            return f"faster than the link: {seen}"
        if statistics.median(delays) > DELAY_MS + 0.2 or len(off) > 0.05 * len(delays):
            return f"not within 0.2 ms (median) / 0.5 ms (95%) of {DELAY_MS} ms: {seen}"
        return None

    # Measured again (at most twice) when it misses while the engines counted releases
    # late: the host stalled them (up to 20 ms seen), as the plugin's assertions do.
    why, spoiled = measured(lambda: a_to_b_ms(nodes, count=300, interval=0.01), missed, late)
    assert why is None, f"{why}; spoiled before: {spoiled}"
    rtts, out = ping_ms(nodes[0])
    assert len(rtts) == 20, out
    assert min(rtts) >= 2 * DELAY_MS - 0.1 and statistics.median(rtts) <= 2 * DELAY_MS + 0.5, out


@needs_root
def test_a_cross_machine_link_blocked_on_the_sending_machine_carries_nothing(cross_link):
    """A fault (the direction blocked where it is sent from) stops the tunnel's
    traffic; opened again, it carries at its delay."""
    rtts, out = blocked_then_opened(*cross_link)
    assert len(rtts) == 10, out


def blocked_then_opened(nodes, tunnels, shapers, ends) -> tuple[list[float], str]:
    """a's direction toward b blocked where it is sent: no ping answered; opened
    again: the round trips of 10 pings (and ping's output)."""
    toward = tunnels[0].toward[ends[0].number]
    shapers[0].apply({toward: BLOCKED})
    rtts, out = ping_ms(nodes[0], count=10)
    assert rtts == [], out
    shapers[0].apply({toward: tunnels[0].shape_toward(ends[0], Shape(DELAY_MS, 1000))})
    return ping_ms(nodes[0], count=10)


@needs_root
def test_nothing_of_the_machines_or_their_tunnels_is_left():
    """Made and removed: no namespace of the run or of the simulated machines stays."""
    with linked_across(WireShaper) as (_, tunnels, _, _):
        made = netns.namespaces(f"netemu-{RUN}-")
        assert all(t.netns in made for t in tunnels), made
    assert netns.namespaces(f"netemu-{RUN}-") == []
    assert netns.namespaces(f"netemu-{MACHINES}-") == []


def one_way_from(nodes: list[str], src: int, count: int) -> list[float]:
    dst = 1 - src
    return one_way_ms(nodes[src], nodes[dst], addressing.service_address(dst), count, 0.02)


@needs_root
@pytest.mark.netem
@pytest.mark.skipif(
    not netem_available(),
    reason="this kernel has no sch_netem: scripts/test runs this in the QEMU lane",
)
def test_with_netem_a_node_sends_across_machines_on_its_own_vxlan_device_delayed_once():
    """With netem a cross-machine link end is the node's ``to-<peer>`` as a VXLAN device
    of the link's own (no engine, no bridge, the kernel decapsulates into the node),
    netem on its egress delaying by the link's delay less the machines' network's:
    each way never faster than the link, the smallest of 100 within QEMU's +1.0 ms
    (its timers only add: +0.28-0.57 ms seen on one netem hop, tests/test_netem.py);
    a fault (blocked) carries nothing; the stop leaves nothing."""
    with linked_across(NetemShaper) as (nodes, tunnels, shapers, ends):
        for i, (t, e) in enumerate(zip(tunnels, ends, strict=True)):
            device = netns.run(["ip", "-n", nodes[i], "-d", "link", "show", e.local.ifname])
            assert f"vxlan id {link_vni(RUN, e.number)} remote {e.remote.address} " in device
            qdisc = netns.run(["tc", "-n", nodes[i], "qdisc", "show", "dev", e.local.ifname])
            value, unit = re.search(r"netem .* delay ([\d.]+)(ms|us)", qdisc).groups()
            applied = float(value) / (1 if unit == "ms" else 1000)
            want = DELAY_MS - t.substrate_ms[e.remote.address]
            assert abs(applied - want) < 0.01, (qdisc, want)
        assert netns.namespaces(f"netemu-{RUN}-tunnels") == [], "no tunnel namespace needed"
        for src in (0, 1):
            delays = one_way_from(nodes, src, 100)
            seen = f"{'ab'[src]} -> {'ab'[1 - src]}: {sorted(round(d, 3) for d in delays)}"
            assert len(delays) == 100, seen
            assert DELAY_MS - 0.05 <= min(delays) <= DELAY_MS + 1.0, seen
            print(f"{seen[:6]} min {min(delays):.3f}, median {statistics.median(delays):.3f} ms")
        rtts, out = blocked_then_opened(nodes, tunnels, shapers, ends)
        assert len(rtts) == 10 and min(rtts) >= 2 * DELAY_MS - 0.1, out
    assert netns.namespaces(f"netemu-{RUN}-") == []
    assert netns.namespaces(f"netemu-{MACHINES}-") == []


@needs_root
@pytest.mark.netem
@pytest.mark.skipif(
    not netem_available(),
    reason="this kernel has no sch_netem: scripts/test runs this in the QEMU lane",
)
def test_with_netem_machines_agents_route_a_chain_across_three_machines():
    """Three machines' agents (as Ray runs them, here without Ray: QEMU's software CPU)
    with the netem shaper make a - b - c, one node per machine (tests/cluster_driver.py):
    a -> c takes both links' 7 ms, never less, the smallest of 100 within QEMU's
    +2 ms (two netem passes); each agent's check answers with no engine; the stop
    leaves nothing on any machine."""
    run = f"{RUN}g"
    with SimulatedMachines(MACHINES, 3) as sim:
        agents = agents_here(run, sim.machines, "netem")
        try:
            assert [agent.shaper.name for agent in agents] == ["netem"] * 3
            a, c = (addressing.netns_name(run, n) for n in ("a", "c"))
            delays = one_way_ms(a, c, addressing.service_address(2), 100, 0.02)
            want = sum(DELAYS_MS.values())
            seen = sorted(round(d, 3) for d in delays)
            assert len(delays) == 100, seen
            assert want - 0.05 <= min(delays) <= want + 2.0, seen
            print(f"a -> c: min {min(delays):.3f}, median {statistics.median(delays):.3f} ms")
            stats = [agent.check() for agent in agents]
            assert [s["late"] for s in stats] == [None] * 3, stats  # the kernel shapes
        finally:
            for agent in agents:
                agent.stop()
        assert netns.namespaces(f"netemu-{run}-") == []
    assert netns.namespaces(f"netemu-{MACHINES}-") == []


@needs_root
@pytest.mark.netem
@pytest.mark.skipif(
    not netem_available(),
    reason="this kernel has no sch_netem: scripts/test runs this in the QEMU lane",
)
def test_with_netem_agents_killed_leave_what_netemu_clean_removes():
    """The chain's three agents with netem ends (tests/cluster_driver.py ``here``: one
    process, as Ray's actors die with their driver) killed with ``kill -9``: the nodes
    and their VXLAN ends stay, and ``netemu clean --run`` removes them; the
    machines themselves are not the run's and stay."""
    run = f"{RUN}k"
    driver = Path(__file__).with_name("cluster_driver.py")
    with SimulatedMachines(MACHINES, 3) as sim:
        proc = subprocess.Popen(
            [sys.executable, str(driver), run, MACHINES, "here"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", line + proc.stderr.read()
        finally:
            proc.kill()
            proc.wait(timeout=10)
        left = leftovers(run)
        assert sorted(n for n in left if n.startswith("netemu-")) == [
            addressing.netns_name(run, n) for n in NAMES
        ], left
        a = addressing.netns_name(run, "a")
        to_b = addressing.interface_name("b")
        assert " vxlan id " in netns.run(["ip", "-n", a, "-d", "link", "show", to_b])
        p = run_netemu("clean", "--run", run)
        assert p.returncode == 0, p.stdout + p.stderr
        assert leftovers(run) == [], p.stdout
        assert sorted(netns.namespaces(f"netemu-{MACHINES}-")) == sorted(sim.namespaces)
    assert netns.namespaces(f"netemu-{MACHINES}-") == []
