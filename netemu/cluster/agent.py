"""A machine's agent: what one machine of a run spread over several makes and applies.

The controller plans and routes for the whole constellation; each machine's
agent owns what lives on that machine: its nodes' namespaces (routers, each with
its service address), its wire engine, the ends of its nodes' links (both ends
of a link within the machine, this end of one whose peer is elsewhere: a
VXLAN tunnel, :mod:`.tunnels`), the shapes of the directions its nodes send on
(each direction is delayed once, where it is sent), its nodes' routes, the
programs a driver starts in its nodes (:mod:`.processes`), the capture taps at
its nodes (their recordings go to the driver, which writes the pcapng files on one
timeline), and its stats.
Everything the agent is told names nodes and links by the topology's indices,
so a driver sends each machine only its slice. The agent is a plain
class: on a cluster it runs as a Ray actor pinned to its machine (:mod:`.agents`).

The shaper is the run's (:meth:`MachineAgent.start`): netem where every
machine's kernel has it, else the wire engine; the driver picks one for all
machines (:meth:`MachineAgent.kernel_has_netem`), since their tunnels' ends must match.

Not yet here (the single-machine run has them, :mod:`netemu.live`): aggregated
routes and their installer, Mininet hosts.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netemu.capture.taps import CapturePoint, Captures
from netemu.cluster.processes import NodeProcesses
from netemu.cluster.tunnels import CrossEnd, Tunnels
from netemu.cluster.underlay import Machine
from netemu.kernel import netns
from netemu.kernel.netlink.route import encode_replaces
from netemu.kernel.netlink.sockets import NamespaceSockets, send_all
from netemu.live.bringup import ROUTER_SYSCTLS, configure_node, link_nexthops
from netemu.live.machine import preflight, rss_mib
from netemu.routes import addressing
from netemu.shaping import Direction, Port, Shape, Shaper, choose
from netemu.shaping.netem import netem_available

#: Where an agent's taps record until the driver collects them (on disk: a capture
#: can outgrow memory), ``<run>@<machine>/`` each.
CAPTURE_SPOOL = Path("/var/lib/netemu/captures")


@dataclass(frozen=True)
class LinkEnd:
    """One end of a link, on the agent's machine (``peer_machine``: where the peer
    is, ``None`` when on this machine too; ``number``: the link's, unique in the run)."""

    number: int
    node: int
    peer: int
    peer_name: str
    rate_mbit: float
    peer_machine: Machine | None = None


class MachineAgent:
    """One machine's part of a run (see the module's docstring)."""

    def __init__(self, run_name: str, machine: Machine, nodes: dict[int, str]) -> None:
        self.run_name = run_name
        self.machine = machine
        self.names = dict(nodes)
        self.netns = {i: addressing.netns_name(run_name, n) for i, n in nodes.items()}
        self.tunnels = Tunnels(run_name, machine)
        self.shaper: Shaper | None = None  # the run's, made at start
        self.sockets = NamespaceSockets()
        #: The direction each of this machine's nodes sends on toward a peer.
        self.sending: dict[tuple[int, int], Direction] = {}
        self._cross: dict[tuple[int, int], CrossEnd] = {}
        self.env = {**os.environ, netns.RUN_ENV: run_name}
        #: Programs a driver started in this machine's nodes (probes, pings, iperf3).
        self.processes = NodeProcesses(self.netns, self.env)
        #: The taps of this machine's nodes, once a driver asks for captures.
        self.captures: Captures | None = None
        self._ends_made: list[tuple[str, str, dict]] = []

    @staticmethod
    def kernel_has_netem() -> bool:
        """Whether this machine's kernel has sch_netem."""
        return netem_available()

    def start(self, shaper: str = "wire") -> dict:
        """The nodes' namespaces (routers with their service addresses), the check of
        the machines' network, the shaper (``netem`` or ``wire``). Returns where the
        agent runs (for the driver's log)."""
        self.shaper = choose(shaper)
        spaces = list(self.netns.values())
        netns.ip_batch([f"netns add {ns}" for ns in spaces])
        netns.write_sysctls(spaces, ROUTER_SYSCTLS)
        for i, ns in self.netns.items():
            configure_node(self.sockets(ns), i, True, [], [])
        self.tunnels.make()
        self.shaper.start(spaces, self.env, self.sockets)
        return {
            "machine": self.machine.name, "pid": os.getpid(), "nodes": len(spaces),
            "shaper": self.shaper.name,
        }  # fmt: skip

    def make_links(self, ends: list[LinkEnd]) -> None:
        """Links' ends on this machine (a link within it appears with both its ends),
        carrying nothing until shaped."""
        pairs, cross = [], []
        for e in ends:
            name = self.names[e.node]
            port = self._port(e.node, name, e.peer, e.peer_name)
            peer = self._port(e.peer, e.peer_name, e.node, name)  # maybe on another machine
            if e.peer_machine is not None:
                cross.append((e, CrossEnd(e.number, _key(e), port, peer, e.peer_machine)))
            elif e.node < e.peer:  # a link within the machine: made once, from its lower end
                pairs.append((e, port, peer))
        if pairs:
            self.shaper.make_links([(a, b) for _, a, b in pairs])
        for e, a, b in pairs:
            k = _key(e)
            self.sending[(e.node, e.peer)] = Direction(k, a.netns, a.ifname, b.netns, b.ifname)
            self.sending[(e.peer, e.node)] = Direction(k, b.netns, b.ifname, a.netns, a.ifname)
        if cross:
            self.tunnels.add(self.shaper, [c for _, c in cross])
        for e, c in cross:
            self._cross[(e.node, e.peer)] = c
            self.sending[(e.node, e.peer)] = self.tunnels.toward[c.number]
        self._configure(ends)
        made = self._capture_links(ends)
        self._ends_made += made
        if self.captures is not None:
            self.captures.add_links(made)

    def _capture_links(self, ends: list[LinkEnd]) -> list[tuple[str, str, dict]]:
        """(a, b, {node here: (namespace, interface toward the other)}) per link, as
        :meth:`netemu.capture.taps.Captures.add_links` takes them."""
        links: dict[int, tuple[str, str, dict]] = {}
        for e in ends:
            node, peer = self.names[e.node], e.peer_name
            where = links.setdefault(e.number, (*sorted((node, peer)), {}))[2]
            where[node] = (self.netns[e.node], addressing.interface_name(peer))
        return list(links.values())

    # -- captures (netemu.capture.taps: the taps of this machine's nodes) ---------------
    def capture(self, points: list[CapturePoint]) -> None:
        """Record these points' taps at this machine's nodes from now on, on the links
        made so far and on those made later, spooled here until :meth:`stop_captures`;
        after a kill -9, ``netemu clean`` here salvages them."""
        if self.captures is None:
            preflight(("tcpdump",))
            spool = CAPTURE_SPOOL / f"{self.run_name}@{self.machine.name}"
            self.captures = Captures([], spool, env=self.env)
            netns.write_state(self.run_name, {"captures": str(spool)}, self.machine.name)
        for point in points:
            self.captures.add_point(point, self._ends_made)

    def stop_captures(self) -> list[dict]:
        """Every tap's recording, its recorder stopped (:meth:`Captures.recordings`)."""
        if self.captures is None:
            return []
        self.captures.stop_recorders()
        recordings = self.captures.recordings()
        self._drop_captures()
        return recordings

    def _drop_captures(self) -> None:
        if self.captures is not None:
            self.captures.stop_recorders()
            for r in self.captures.recorders.values():
                r.raw.unlink(missing_ok=True)
            for path in (self.captures.directory / ".raw", self.captures.directory):
                with contextlib.suppress(OSError):
                    path.rmdir()
            netns.forget_state(self.run_name, self.machine.name)
            self.captures = None

    def _port(self, node: int, name: str, peer: int, peer_name: str) -> Port:
        """Node ``node``'s (``name``'s) interface toward ``peer``, wherever it is."""
        return Port(
            addressing.netns_name(self.run_name, name), addressing.interface_name(peer_name),
            addressing.interface_index(peer), addressing.mac_address(node, peer),
        )  # fmt: skip

    def _configure(self, ends: list[LinkEnd]) -> None:
        """Each end up, its peer as a static neighbour, the sender's rate limiter (as on
        one machine, :func:`netemu.live.bringup.configure_node`), the shaper's qdiscs
        behind it (netem), then the nexthop objects routes name."""
        by_node: dict[int, list[LinkEnd]] = {}
        tc_lines: dict[str, list[str]] = {}
        for e in ends:
            by_node.setdefault(e.node, []).append(e)
        for node, mine in by_node.items():
            ns = self.netns[node]
            links = [(addressing.interface_index(e.peer), e.peer) for e in mine]
            self.shaper.add_interfaces(
                {(ns, addressing.interface_name(e.peer_name)): addressing.interface_index(e.peer)
                 for e in mine}
            )  # fmt: skip
            directions = [(self.sending[(node, e.peer)], e.rate_mbit) for e in mine]
            limiters = self.shaper.rate_limiters(directions)
            configure_node(self.sockets(ns), node, False, links, limiters)
            tc_lines[ns] = self.shaper.tc_lines(directions)
        netns.run_all(netns.tc_jobs(tc_lines))
        for node, mine in by_node.items():
            links = [(addressing.interface_index(e.peer), e.peer) for e in mine]
            send_all(self.sockets(self.netns[node]), [link_nexthops(links)])

    def shape(self, changes: dict[tuple[int, int], Shape]) -> None:
        """New shapes of directions this machine's nodes send on, by (node, peer);
        across machines, less the machines' network's latency."""
        out = {}
        for (node, peer), shape in changes.items():
            cross = self._cross.get((node, peer))
            if cross is not None:
                shape = self.tunnels.shape_toward(cross, shape)
            out[self.sending[(node, peer)]] = shape
        self.shaper.apply(out)

    def routes(self, routes: dict[int, list[tuple[int, int]]]) -> None:
        """Each node's routes: (destination node, next hop peer), replacing what was,
        through the nexthop objects toward the peers (one netlink batch a node)."""
        for node, pairs in routes.items():
            dst, via = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
            src = np.full(len(dst), addressing.service_address_u32(node))
            msgs = encode_replaces(
                addressing.service_address_u32(dst), addressing.nexthop_id(via), src
            )
            send_all(self.sockets(self.netns[node]), [msgs])

    def apply(
        self, shapes: dict[tuple[int, int], Shape], routes: dict[int, list[np.ndarray]]
    ) -> None:
        """One update's slice for this machine: the new shapes (as :meth:`shape`),
        then each node's encoded netlink route messages (one batch a node)."""
        if shapes:
            self.shape(shapes)
        for node, messages in routes.items():
            # Ray hands numpy arrays over read-only; sending stamps sequence numbers.
            send_all(self.sockets(self.netns[node]), [m.copy() for m in messages])

    # -- programs in the nodes (netemu.cluster.processes) -------------------------------
    def spawn(self, node: int, argv: list[str]) -> int:
        return self.processes.spawn(node, argv)

    def output(self, key: int, out_from: int, err_from: int) -> tuple[bytes, bytes, int | None]:
        return self.processes.output(key, out_from, err_from)

    def signal(self, key: int, signum: int) -> None:
        self.processes.signal(key, signum)

    def forget(self, key: int) -> None:
        self.processes.forget(key)

    def clock_ns(self) -> int:
        """This machine's wall clock (the clock one-way delays and captures are stamped by)."""
        return time.time_ns()

    def check(self) -> dict:
        """Raise if the engine died or a namespace went; the engine's counters."""
        self.shaper.check()
        netns.check_present(list(self.netns.values()))
        stats = self.shaper.stats()  # {} with netem: the kernel counts nothing of the kind
        keys = ("late", "worst_late_ms", "overload", "release_error_us", "lead_us", "busy",
                "busy_max", "spin_outs", "rests", "cpu_s")  # fmt: skip
        return {
            "machine": self.machine.name,
            "notes": getattr(self.shaper, "notes", []),
            "rss_mib": {
                "agent": round(rss_mib()),
                "engine": round(sum(map(rss_mib, self.shaper.pids))),
            },
            **{k: stats.get(k) for k in keys},
        }

    def stop(self) -> None:
        """Everything this agent made, removed (safe to call twice; each step is tried
        even if one before it failed)."""
        try:
            self.processes.stop()
            self._drop_captures()  # what the driver did not collect (a failed run)
            if self.shaper is not None:
                self.shaper.stop()
            self.sockets.close()
        finally:
            try:
                self.tunnels.remove()
            finally:
                present = set(netns.namespaces(f"{addressing.NETNS_PREFIX}{self.run_name}-"))
                netns.delete([ns for ns in self.netns.values() if ns in present])


def _key(e: LinkEnd) -> tuple[int, int]:
    return (min(e.node, e.peer), max(e.node, e.peer))
