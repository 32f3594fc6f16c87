"""Bring-up: a run's namespaces and links, made in batches, not a program per node.

:func:`links_ahead` plans the first minutes of the run (no namespaces touched) to
know which links it will need; :meth:`Builder.namespaces` makes one named
namespace per node in one ``ip -batch``; :meth:`Builder.links` makes links (the
shaper makes their interfaces: veth pairs or the wire engine's TAPs), then
neighbours, links up and rate limiters by netlink messages sent in
one batch per namespace, the routers' sysctls written directly, and the shaper's
``tc`` lines in one ``tc -batch`` per namespace. Links a later epoch needs are
made the same way when they first appear (they acquire anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np

from netemu.kernel import netns
from netemu.kernel.netlink.interface import encode_addresses, encode_links_up, encode_neighbours
from netemu.kernel.netlink.route import encode_nexthops
from netemu.kernel.netlink.sockets import NamespaceSockets, send_all, send_requests
from netemu.live.linktable import LinkTable
from netemu.model.topology import Topology
from netemu.plan.links import KINDS
from netemu.plan.planner import Planner
from netemu.routes import addressing
from netemu.shaping import Direction, Port, Shaper

#: Orbital time planned ahead at bring-up (sampled every PLAN_AHEAD_STEP_S at
#: least) to create the links a run will need; links the sampling misses or
#: that come later are created when they first appear (they acquire anyway).
PLAN_AHEAD_S = 600.0
PLAN_AHEAD_STEP_S = 10.0
#: Every node is a router without IPv6. Writing ip_forward sets every interface's
#: forwarding and the default, all/disable_ipv6 the default too (measured): interfaces
#: made later inherit both.
ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": 1,
    "net/ipv4/conf/all/rp_filter": 0,  # paths need not be symmetric
    "net/ipv4/conf/default/rp_filter": 0,
    "net/ipv6/conf/all/disable_ipv6": 1,  # no IPv6 chatter on the links
    # TCP buffers up to 64 MiB, as a host tuned for a long fat link has: one stream can
    # fill 2.5 Gbit/s over 100 ms of round trip (Linux's defaults stop at 4-6 MiB).
    "net/ipv4/tcp_rmem": "4096 131072 67108864",
    "net/ipv4/tcp_wmem": "4096 16384 67108864",
}


def links_ahead(
    planner: Planner, start: datetime, duration_s: float | None, orbital_step_s: float
) -> list[tuple[tuple[int, int], int]]:
    """(key, kind) of the links up in the run's first PLAN_AHEAD_S of orbital time."""
    ahead = min(duration_s if duration_s is not None else PLAN_AHEAD_S, PLAN_AHEAD_S)
    found = set()
    for epoch in planner.run(start, ahead, max(orbital_step_s, PLAN_AHEAD_STEP_S)):
        found.update(zip(epoch.up.keys(), epoch.up.kind.tolist(), strict=True))
    return sorted(found)


class Builder:
    """Makes a run's namespaces and links, each link into the ``table``."""

    def __init__(
        self,
        topology: Topology,
        namespaces: list[str],
        shaper: Shaper,
        sockets: NamespaceSockets,
        table: LinkTable,
        made: Callable[[list[tuple[int, int]]], None],
    ):
        """``made(keys)`` is told of the links each call made (hosts, captures)."""
        self.topology = topology
        self.names = [n.name for n in topology.nodes]
        self.namespaces = namespaces
        self.shaper = shaper
        self.sockets = sockets
        self.table = table
        self.made = made

    def make_namespaces(self) -> None:
        """A named network namespace per node, all in one batch."""
        netns.ip_batch([f"netns add {ns}" for ns in self.namespaces])

    def links(
        self, keys_kinds: list[tuple[tuple[int, int], int]], new_namespaces: list[str] = ()
    ) -> None:
        """Links straight into both namespaces, addressed, up, with rate limiters.

        Namespaces in ``new_namespaces`` get their own set-up (a router's sysctls,
        its service address on its loopback, the shaper's commands) in the same
        batches, so each namespace costs one round of programs.
        """
        new = [(k, kind) for k, kind in keys_kinds if k not in self.table]
        if not new and not new_namespaces:
            return
        ns = self.namespaces
        pairs, per_ns, sends, found, rows = [], {}, {}, {}, []
        for (a, b), kind in new:
            ia = addressing.interface_name(self.names[b])
            ib = addressing.interface_name(self.names[a])
            index_a, index_b = addressing.interface_index(b), addressing.interface_index(a)
            pairs.append(
                (
                    Port(ns[a], ia, index_a, addressing.mac_address(a, b)),
                    Port(ns[b], ib, index_b, addressing.mac_address(b, a)),
                )
            )
            per_ns.setdefault(a, []).append((index_a, b))
            per_ns.setdefault(b, []).append((index_b, a))
            fwd = Direction((a, b), ns[a], ia, ns[b], ib)
            bwd = Direction((a, b), ns[b], ib, ns[a], ia)
            nodes = self.topology.nodes
            params = self.topology.link_params(KINDS[kind], nodes[a], nodes[b])
            rate = params.data_rate_gbps * 1000
            sends.setdefault(ns[a], []).append((fwd, rate))
            sends.setdefault(ns[b], []).append((bwd, rate))
            rows.append(((a, b), kind, params, (fwd, bwd)))
            found[(ns[a], ia)] = index_a
            found[(ns[b], ib)] = index_b
        self.shaper.make_links(pairs)
        self.table.add(rows)
        position = {name: i for i, name in enumerate(ns)}
        fresh = {position[name] for name in new_namespaces}
        netns.write_sysctls([ns[i] for i in sorted(fresh)], ROUTER_SYSCTLS)
        self.shaper.add_interfaces(found)
        for node in sorted(fresh | set(per_ns)):
            limiters = self.shaper.rate_limiters(sends.get(ns[node], []))
            self._configure(node, node in fresh, per_ns.get(node, []), limiters)
        # Once both ends are up: the kernel makes a nexthop object only on a carrier.
        for node, links in sorted(per_ns.items()):
            send_all(self.sockets(self.namespaces[node]), [link_nexthops(links)])
        netns.run_all(
            [
                *netns.tc_jobs(
                    {name: self.shaper.tc_lines(directions) for name, directions in sends.items()}
                ),
                *netns.shell_jobs(
                    {name: self.shaper.namespace_commands() for name in new_namespaces}
                ),
            ]
        )
        self.made([k for k, _ in new])

    def _configure(
        self, node: int, fresh: bool, links: list[tuple[int, int]], limiters: list
    ) -> None:
        configure_node(self.sockets(self.namespaces[node]), node, fresh, links, limiters)


def configure_node(
    sock, node: int, fresh: bool, links: list[tuple[int, int]], limiters: list
) -> None:
    """A node's link ends up, static neighbours and the shaper's rate limiters through
    netlink on its namespace's socket (no program per namespace). ``links``: (interface
    index, peer); ``fresh``: also the loopback with the node's service address. The
    links are unnumbered (:mod:`netemu.routes.addressing`): each interface knows its
    peer's service address and MAC, so no ARP crosses a link and a flow's first packet
    waits for no address resolution."""
    index, peer = np.array(links, dtype=np.int64).reshape(-1, 2).T
    batches = []
    if fresh:
        service = addressing.service_address_u32([node])
        batches += [encode_addresses([1], service, 32), encode_links_up([1], [False])]
    batches += [
        encode_links_up(index, np.ones(len(index), bool)),
        encode_neighbours(
            index, addressing.service_address_u32(peer), addressing.mac_bytes(peer, node)
        ),
    ]
    send_all(sock, batches)
    send_requests(sock, limiters)


def link_nexthops(links: list[tuple[int, int]]) -> np.ndarray:
    """The nexthop object toward each peer of ``links`` ((interface index, peer)),
    which routes name; made once the link's end is up (the kernel wants a carrier)."""
    index, peer = np.array(links, dtype=np.int64).reshape(-1, 2).T
    return encode_nexthops(addressing.nexthop_id(peer), addressing.service_address_u32(peer), index)
