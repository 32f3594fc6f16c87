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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from netemu.routes.composition import TIE_MS, UNREACHABLE, ComposedTrees, set_columns


@dataclass(frozen=True)
class RouteChanges:
    """Changed routes as parallel arrays: in ``node[i]``, traffic to ``dest[i]`` now
    goes to neighbour ``via[i]`` (UNREACHABLE: no route any more)."""

    node: np.ndarray
    dest: np.ndarray
    via: np.ndarray

    @classmethod
    def none(cls) -> RouteChanges:
        return cls(*(np.zeros(0, np.int64),) * 3)

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


#: Arc relaxations a second of epochs may spend refreshing trees under motion alone
#: (~25 ms of scipy's Dijkstra on the development machine): an update gets its
#: step's share, so 100 ms epochs refresh a tenth as many trees each and every tree
#: is as many seconds old at most as with 1 s epochs.
WORK_PER_SECOND = 1_000_000
WORK_PER_UPDATE = WORK_PER_SECOND  # 1 s epochs


class ShortestDelayRouter:
    """Keeps the next-hop table of every node pair and reports what changed.

    The table is a set of shortest-path trees, one per destination (links are
    symmetric, so a tree from ``d`` gives every node's next hop toward ``d``),
    each composed from its domain's tree and the hubs' (:mod:`.composition`: a
    hub's link changing recomputes no domain tree). An update recomputes:

    - every tree a change of the link set can affect, so routes are exact after
      any link comes, goes or a fault strikes: a tree that used a link now gone,
      or one a new link would shorten;
    - under motion alone (same links, delays drifting by microseconds a second),
      the next trees in turn, as many as ``work_per_update`` arc relaxations allow,
      so every tree is at most :attr:`refresh_updates` updates old. A small
      constellation recomputes every tree every time; Starlink shell 1 (1,590
      nodes) refreshes 157 trees an update, each every 11 updates, instead of
      all of them. What a stale tree costs (a
      path a few microseconds longer than the best, rarely more) is measured by
      benchmarks/live_scale.py.
    """

    def __init__(
        self, n_nodes: int, work_per_update: int = WORK_PER_UPDATE, hubs: Sequence[int] = ()
    ):
        """``hubs``: the nodes that join domains (ground stations and aircraft, which
        link to satellites of any shell; see :mod:`netemu.routes.composition`)."""
        self.n = n_nodes
        self._trees = ComposedTrees(n_nodes, hubs)
        self.work_per_update = work_per_update
        self.hops = np.full((n_nodes, n_nodes), UNREACHABLE, dtype=np.int32)
        np.fill_diagonal(self.hops, np.arange(n_nodes))
        #: delay_ms[s, d]: length of s's path toward d when d's tree was computed
        #: (float32: 10 ns at 100 ms is plenty to tell which trees a new link shortens).
        self.delay_ms = np.full((n_nodes, n_nodes), np.inf, dtype=np.float32)
        np.fill_diagonal(self.delay_ms, 0.0)
        self._links = np.zeros(0, np.int64)  # a * n + b of the links last seen
        self._degree = np.zeros(n_nodes, np.int64)  # each node's links last seen
        self._next = 0  # the next tree to refresh under motion
        #: Trees recomputed by the last update.
        self.recomputed = 0

    @property
    def trees_per_update(self) -> int:
        """Trees an update refreshes in turn, under motion alone, at today's link count."""
        return self._per_update(len(self._links))

    @property
    def refresh_updates(self) -> int:
        """Updates within which every tree is recomputed, under motion alone."""
        return -(-self.n // self.trees_per_update)

    def _per_update(self, n_links: int) -> int:
        return max(1, min(self.n, self.work_per_update // max(2 * n_links, 1)))

    def update(
        self, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray, refresh: bool = True
    ) -> RouteChanges:
        """Links ``a[i]-b[i]`` carry traffic with one-way ``delay_ms[i]``; bring the
        table up to date. ``refresh``: also refresh the next trees in turn (once
        per epoch; not when only a link came up between epochs)."""
        n = self.n
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        a, b = np.minimum(a, b), np.maximum(a, b)
        w = np.maximum(np.asarray(delay_ms, dtype=float), 1e-9)  # zero would vanish
        links = a * n + b
        stale = np.zeros(n, bool)
        degree = np.bincount(np.concatenate([a, b]), minlength=n)
        # A node with one link before and after (a ground station or aircraft with one
        # terminal handing over) carries no one else's paths: its link changing moves
        # only its own routes and the tree toward it, not every tree it sends into.
        leaf = (degree <= 1) & (self._degree <= 1)
        gone = np.setdiff1d(self._links, links)
        if len(gone):  # trees that used a link now gone
            u, v = np.divmod(gone, n)
            ends = leaf[u] | leaf[v]
            stale[np.concatenate([u[ends], v[ends]])] = True
            u, v = u[~ends], v[~ends]
            stale |= (self.hops[u] == v[:, None]).any(axis=0)
            stale |= (self.hops[v] == u[:, None]).any(axis=0)
        new = ~np.isin(links, self._links)
        if not len(self._links):  # the first links: every tree
            stale[:] = True
        elif new.any():  # trees a new link shortens
            u, v = a[new], b[new]
            ends = leaf[u] | leaf[v]
            stale[np.concatenate([u[ends], v[ends]])] = True
            u, v, wn = u[~ends], v[~ends], w[new][~ends][:, None]
            du, dv = self.delay_ms[u], self.delay_ms[v]
            stale |= ((du > dv + wn + TIE_MS) | (dv > du + wn + TIE_MS)).any(axis=0)
        moved = np.zeros(n, bool)  # leaves whose one link changed: their rows follow
        for changed in (np.divmod(gone, n), (a[new], b[new])):
            for end in changed:
                moved[end[leaf[end]]] = True
        self._links = np.sort(links)
        self._degree = degree
        turn = np.zeros(0, np.int64)
        if refresh:
            turn = (self._next + np.arange(self._per_update(len(links)))) % n
            stale[turn] = True
            self._next = int(turn[-1] + 1) % n
        stale[self._trees.update(a, b, w, turn)] = True
        trees = np.flatnonzero(stale)
        self.recomputed = len(trees)
        if not len(trees):
            return RouteChanges.none()
        # The table's columns are gathered once (np.take: fancy column indexing is ~10x
        # slower at 4,420 nodes) and written back row by row.
        columns, dist = self._trees.columns(trees)
        old = np.take(self.hops, trees, axis=1)
        node, j = np.nonzero(columns != old)  # sorted by node
        keep = self._equal_paths(columns, old, node, j, dist, a, b, w)
        node, j = node[~keep], j[~keep]
        self.hops[node, trees[j]] = columns[node, j]  # only what changed (~5% at a handover)
        set_columns(self.delay_ms, trees, dist)
        if not moved.any():
            return RouteChanges(node, trees[j], columns[node, j])
        more = self._follow_leaves(np.flatnonzero(moved), stale, a, b, w)
        node, dest, via = (
            np.concatenate(x) for x in zip((node, trees[j], columns[node, j]), more, strict=True)
        )
        order = np.argsort(node, kind="stable")
        return RouteChanges(node[order], dest[order], via[order])

    def _follow_leaves(self, leaves, stale, a, b, w) -> tuple[np.ndarray, ...]:
        """Rows of leaves whose link changed, in the trees not recomputed: through their
        one neighbour (what it reaches, one link further), or nowhere. Returns the
        changed entries (node, dest, via)."""
        out = []
        other = np.flatnonzero(~stale)
        for g in leaves.tolist():
            at = np.flatnonzero((a == g) | (b == g))
            hops, dist = np.full(len(other), UNREACHABLE, np.int32), np.full(len(other), np.inf)
            if len(at):
                y = int(a[at[0]] + b[at[0]] - g)
                if self._degree[y] > 1:  # through y: where y goes (never back through g)
                    reach = self.hops[y, other] != UNREACHABLE
                    hops[reach], dist[reach] = y, w[at[0]] + self.delay_ms[y, other][reach]
                hops[other == y], dist[other == y] = y, w[at[0]]
            mine = other != g
            old = self.hops[g, other]
            changed = np.flatnonzero((old != hops) & mine)
            self.hops[g, other[mine]] = hops[mine]
            self.delay_ms[g, other[mine]] = dist[mine]
            out.append((np.full(len(changed), g, np.int64), other[changed], hops[changed]))
        node, dest, via = (np.concatenate(x) for x in zip(*out, strict=True))
        return node, dest, via.astype(np.int32)

    def _equal_paths(self, columns, old, s, j, dist, a, b, w) -> np.ndarray:
        """Of the changed entries (node ``s``, destination ``j``), those whose old next
        hop is still on a shortest path (within TIE_MS): kept, since equal-delay paths
        abound in a +Grid, and following whichever Dijkstra found first would flap
        thousands of routes an epoch for nothing. Loop-free: every hop kept still
        brings the packet strictly closer (a link's delay is far above TIE_MS)."""
        o = old[s, j]
        ok = (o != UNREACHABLE) & (o != s) & (columns[s, j] != UNREACHABLE)
        keep = np.zeros(len(s), bool)
        if not ok.any():
            return keep
        at = np.flatnonzero(ok)
        links = csr_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(self.n, self.n))
        via_old = np.asarray(links[s[at], o[at]]).ravel()
        jj, oo, ss = j[at], o[at], s[at]
        keep[at] = (via_old > 0) & (via_old + dist[oo, jj] <= dist[ss, jj] + TIE_MS)
        return keep


class RouteHistory:
    """Next-hop tables over time, kept compactly: a full copy of the table every
    ``checkpoint_every`` entries and only the changed entries in between (Starlink
    shell 1's table is 10 MB; an epoch changes a few thousand entries of it).

    ``history[i]`` is ``(unix time, {link: delay_ms} carrying, next hops)``, the
    time being when the update was complete (:attr:`times`); :attr:`starts` says
    when it began changing the network. The table is rebuilt on demand, and the
    last few are cached (queries in time order, each over the updates during one
    packet's flight, mostly hit them).
    """

    #: Tables kept rebuilt: a packet's flight spans a few updates with 0.1 s epochs.
    CACHED = 4

    def __init__(self, checkpoint_every: int = 64):
        self.checkpoint_every = checkpoint_every
        #: Unix time each entry was fully in force, and when its changes began.
        self.times: list[float] = []
        self.starts: list[float] = []
        self._carrying: list[dict] = []
        self._checkpoints: dict[int, np.ndarray] = {}
        self._changes: list[RouteChanges | None] = []  # None at checkpoints
        self._cached: dict[int, np.ndarray] = {}  # index -> table, oldest first

    def append(
        self,
        time_s: float,
        carrying: dict,
        hops: np.ndarray,
        changes: RouteChanges,
        start_s: float | None = None,
    ) -> int:
        """Returns the entry's index (for :meth:`complete`)."""
        i = len(self.times)
        if i % self.checkpoint_every == 0:
            self._checkpoints[i] = hops.copy()
            changes = None  # a checkpoint is the whole table (the first: 15 M changes at phase 1)
        else:  # node and destination fit 32 bits (MAX_NODES): 12 bytes a change, not 20
            changes = RouteChanges(
                *(np.asarray(x, np.int32) for x in (changes.node, changes.dest, changes.via))
            )
        self.times.append(time_s)
        self.starts.append(time_s if start_s is None else start_s)
        self._carrying.append(carrying)
        self._changes.append(changes)
        return i

    def complete(self, i: int, time_s: float) -> None:
        """Entry ``i`` (appended as not yet in force, at infinity) is in force from ``time_s``."""
        self.times[i] = time_s

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i: int) -> tuple[float, dict, np.ndarray]:
        i = range(len(self))[i]  # negative indices, bounds
        return self.times[i], self._carrying[i], self.hops_at(i)

    def hops_at(self, i: int) -> np.ndarray:
        if i in self._cached:
            return self._cached[i]
        base = i - i % self.checkpoint_every
        nearer = [k for k in self._cached if base < k < i]
        if nearer:
            base = max(nearer)
            hops = self._cached[base].copy()
        else:
            hops = self._checkpoints[base].copy()
        for c in self._changes[base + 1 : i + 1]:
            hops[c.node, c.dest] = c.via
        self._cached[i] = hops
        if len(self._cached) > self.CACHED:
            del self._cached[next(iter(self._cached))]
        return hops
