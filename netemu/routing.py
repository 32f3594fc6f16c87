"""Routing: shortest-delay paths on each epoch's graph, and what changed.

Pure computation. :class:`ShortestDelayRouter` turns the links that carry
traffic (with their one-way delays) into a next-hop table for every node and
reports only the entries that changed since the last call, which the
emulation installs as /32 routes to each node's service address.

A routing daemon (FRR or BIRD running OSPF in every node) would replace this
class: the emulation only needs something that, given the current links,
says which routes to install or remove, or (for a daemon) does nothing and
lets the daemon react to the links itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

UNREACHABLE = -1


@dataclass(frozen=True)
class RouteChanges:
    """Changed routes as parallel arrays: in ``node[i]``, traffic to ``dest[i]`` now
    goes to neighbour ``via[i]`` (UNREACHABLE: no route any more)."""

    node: np.ndarray
    dest: np.ndarray
    via: np.ndarray

    def __len__(self) -> int:
        return len(self.node)

    def as_tuples(self) -> set[tuple[int, int, int | None]]:
        return {
            (int(n), int(d), None if v == UNREACHABLE else int(v))
            for n, d, v in zip(self.node, self.dest, self.via, strict=True)
        }


def next_hops(n: int, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray) -> np.ndarray:
    """Next hop from every node to every other along a shortest-delay path.

    Returns an (n, n) int array: ``hops[s, d]`` is the neighbour of ``s`` on a
    shortest path to ``d``, ``s`` itself when ``s == d``, UNREACHABLE when
    there is no path. Among equal-delay paths the choice is deterministic.
    """
    hops = np.full((n, n), UNREACHABLE, dtype=int)
    np.fill_diagonal(hops, np.arange(n))
    if n == 0 or len(a) == 0:
        return hops
    # Zero weights would vanish from a sparse matrix: keep a tiny floor.
    w = np.maximum(np.asarray(delay_ms, dtype=float), 1e-9)
    graph = csr_matrix((w, (a, b)), shape=(n, n))
    # Links are symmetric, so the next hop from s toward d is s's predecessor
    # in d's shortest-path tree: one Dijkstra from every node, transposed.
    _, pred = dijkstra(graph, directed=False, return_predecessors=True)
    hops = pred.T.astype(int)
    hops[hops < 0] = UNREACHABLE  # scipy marks "no path" with -9999
    np.fill_diagonal(hops, np.arange(n))
    return hops


def path(hops: np.ndarray, src: int, dst: int) -> list[int] | None:
    """The node sequence from ``src`` to ``dst`` following ``hops``, or None."""
    route = [src]
    while route[-1] != dst:
        nxt = int(hops[route[-1], dst])
        if nxt == UNREACHABLE or len(route) > len(hops):
            return None
        route.append(nxt)
    return route


class ShortestDelayRouter:
    """Keeps the current next-hop table and reports changes."""

    def __init__(self, n_nodes: int):
        self.n = n_nodes
        self.hops = np.full((n_nodes, n_nodes), UNREACHABLE, dtype=int)
        np.fill_diagonal(self.hops, np.arange(n_nodes))

    def update(self, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray) -> RouteChanges:
        new = next_hops(self.n, a, b, delay_ms)
        node, dest = np.nonzero(new != self.hops)  # sorted by node
        self.hops = new
        return RouteChanges(node, dest, new[node, dest])
