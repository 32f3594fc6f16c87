"""Shortest-path trees composed from per-domain trees and the hubs' trees.

Pure computation. A constellation's satellites form domains (its shells: the
satellites joined by inter-satellite links) that meet only through *hubs*,
ground stations and aircraft, each linked to a few satellites of any shell. Every
path between two satellites either stays in one domain or passes a hub, so with
``D`` the distances in the whole graph and ``d_C`` those inside a domain:

    D(s, t) = min(d_C(s, t) when s and t share a domain,  min over hubs x of D(s, x) + D(x, t))

which holds for any choice of hubs (it is exact, not an approximation), and only
hubs linked to ``t``'s domain can be the last one on a path into it. A hub's links
come and go every few seconds (handovers) but they never change a domain's own
trees: :class:`ComposedTrees` keeps every domain's trees and recomputes one only
when that domain's links change or its turn comes, runs one Dijkstra per hub on
the whole graph, and composes a destination's tree with a few vector minima
instead of a Dijkstra over every node. At Starlink phase 1 (5 shells, 12 hubs)
a ground station's handover used to cost 4,420 Dijkstras over 4,420 nodes.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from netemu import native

UNREACHABLE = -1
#: Two paths whose delays differ by less than this (ms) are equally short.
TIE_MS = 1e-3
#: Destinations composed at once (bounds the temporaries: chunk x nodes floats).
_CHUNK = 256
SOURCE = Path(__file__).with_name("compose.c")


#: How compose.c is built (by the live layer, netemu.live.routes, or scripts/provision).
NAME, FLAGS = "netemu-compose", ["-O3", "-shared", "-fPIC"]


@functools.cache
def compose_kernel():
    """The compiled inner loop (``compose.c``) where it was built, else None: then
    NumPy does the same (~4x slower: 0.35 s instead of 0.08 s at a phase-1 handover)."""
    lib = native.loaded(SOURCE, NAME, FLAGS)
    if lib is None:
        return None
    i64, f32, i32 = (np.ctypeslib.ndpointer(t, flags="C") for t in (np.int64, np.float32, np.int32))
    lib.compose.restype = None
    lib.compose.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, i64, f32, f32, i32,
                            f32, i32]  # fmt: skip
    return lib.compose


@dataclass
class Domain:
    """One domain's trees: ``dist[s, t]`` and ``hop[s, t]`` (a node index) for its
    ``members`` (sorted node indices; ``s`` and ``t`` index into them)."""

    members: np.ndarray
    dist: np.ndarray  # float32 (m, m)
    hop: np.ndarray  # int32 (m, m), node indices

    def local(self, nodes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.members, nodes)


class ComposedTrees:
    """Every node's next hop and distance toward chosen destinations, composed from
    the domains' trees and the hubs' (see the module's docstring)."""

    def __init__(self, n_nodes: int, hubs: np.ndarray | list[int] = (), compiled: bool = True):
        """``compiled``: compose with the compiled loop where it was built."""
        self.n = n_nodes
        self.compiled = compiled
        self.is_hub = np.zeros(n_nodes, bool)
        self.is_hub[np.asarray(hubs, dtype=np.int64)] = True
        self.hubs = np.flatnonzero(self.is_hub)
        self.domains: dict[int, Domain] = {}  # keyed by the smallest member
        self.domain_of = np.full(n_nodes, -1, np.int64)  # that key, per node (-1: hub)
        self._core_links = np.zeros(0, np.int64)  # a * n + b of the last links between non-hubs
        self._graph = csr_matrix((n_nodes, n_nodes))
        self._hub_trees: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._degree = np.zeros(n_nodes, np.int64)
        #: Domain trees recomputed by the last update.
        self.recomputed = 0

    def update(
        self, a: np.ndarray, b: np.ndarray, w: np.ndarray, refresh: np.ndarray
    ) -> np.ndarray:
        """Links ``a[i] < b[i]`` with delays ``w[i]`` (no zeros) are the graph now;
        bring the domains' trees up to date: those of a domain whose members changed,
        those its changed links affect, and those of the ``refresh`` destinations.
        Returns the destinations whose domain tree was recomputed (to compose again)."""
        n = self.n
        self._graph = csr_matrix((w, (a, b)), shape=(n, n))
        self._degree = np.bincount(np.concatenate([a, b]), minlength=n)
        self._hub_trees = None
        core = ~self.is_hub[a] & ~self.is_hub[b]
        ca, cb, cw = a[core], b[core], w[core]
        keys = ca * n + cb
        gone = np.setdiff1d(self._core_links, keys)
        new = ~np.isin(keys, self._core_links)
        self._core_links = np.sort(keys)
        recomputed = np.zeros(n, bool)
        if len(gone) or new.any() or not self.domains:
            recomputed[self._regroup(ca, cb)] = True
            recomputed |= self._affected(gone, ca[new], cb[new], cw[new], skip=recomputed)
        recomputed[refresh[~self.is_hub[refresh]]] = True
        recomputed[self.is_hub] = False
        todo = np.flatnonzero(recomputed)
        self.recomputed = len(todo)
        if len(todo):
            self._recompute(todo, ca, cb, cw)
        return todo

    def _regroup(self, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        """Domains as the links between non-hubs join them now; a domain whose
        members changed gets empty trees (all recomputed). Returns its members."""
        n = self.n
        _, label = connected_components(
            csr_matrix((np.ones(len(ca)), (ca, cb)), shape=(n, n)), directed=False
        )
        label[self.is_hub] = -1
        order = np.argsort(label, kind="stable")  # members sorted within each label
        order = order[label[order] >= 0]
        bounds = np.flatnonzero(np.diff(label[order])) + 1
        kept, rebuilt = {}, []
        for members in np.split(order, bounds) if len(order) else []:  # none: hubs only
            key = int(members[0])
            old = self.domains.get(key)
            if old is not None and np.array_equal(old.members, members):
                kept[key] = old
                continue
            m = len(members)
            dist = np.full((m, m), np.inf, np.float32)
            hop = np.full((m, m), UNREACHABLE, np.int32)
            kept[key] = Domain(members, dist, hop)
            self.domain_of[members] = key
            rebuilt.append(members)
        self.domains = kept
        return np.concatenate(rebuilt) if rebuilt else np.zeros(0, np.int64)

    def _affected(self, gone, u, v, wv, skip: np.ndarray) -> np.ndarray:
        """Destinations whose domain tree used a link now gone, or that a new link
        between two of its members would shorten (none in the rebuilt domains: ``skip``)."""
        n = self.n
        out = np.zeros(n, bool)
        gu, gv = np.divmod(gone, n)
        for x, y, w in ((gu, gv, None), (u, v, wv)):
            for i in range(len(x)):
                key = self.domain_of[x[i]]
                dom = self.domains.get(int(key))
                if dom is None or self.domain_of[y[i]] != key or skip[x[i]]:
                    continue
                lx, ly = dom.local(np.array([x[i], y[i]]))
                if w is None:  # trees where one end's next hop was the other
                    hit = (dom.hop[lx] == y[i]) | (dom.hop[ly] == x[i])
                else:
                    dx, dy = dom.dist[lx], dom.dist[ly]
                    hit = (dx > dy + w[i] + TIE_MS) | (dy > dx + w[i] + TIE_MS)
                out[dom.members[hit]] = True
        return out

    def _recompute(self, todo: np.ndarray, ca, cb, cw) -> None:
        """One Dijkstra per destination in ``todo``, inside its own domain."""
        keys = self.domain_of[todo]
        link_key = self.domain_of[ca]
        for key in np.unique(keys).tolist():
            dom = self.domains[key]
            mine = link_key == key
            la, lb = dom.local(ca[mine]), dom.local(cb[mine])
            m = len(dom.members)
            graph = csr_matrix((cw[mine], (la, lb)), shape=(m, m))
            dest = dom.local(todo[keys == key])
            dist, pred = dijkstra(graph, directed=False, indices=dest, return_predecessors=True)
            hop = np.where(pred >= 0, dom.members[np.maximum(pred, 0)], UNREACHABLE)
            hop[np.arange(len(dest)), dest] = dom.members[dest]
            set_columns(dom.dist, dest, dist.T)
            set_columns(dom.hop, dest, hop.T)

    def hub_trees(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per hub (rows, in :attr:`hubs` order): distance from it to every node, every
        node's next hop toward it, and its own first hop toward every node."""
        if self._hub_trees is None:
            n, h = self.n, len(self.hubs)
            if not h:
                empty = np.zeros((0, n), np.float32)
                self._hub_trees = (empty, empty.astype(np.int32), empty.astype(np.int32))
                return self._hub_trees
            dist, pred = dijkstra(
                self._graph, directed=False, indices=self.hubs, return_predecessors=True
            )
            dist = dist.astype(np.float32)
            toward = np.where(pred >= 0, pred, UNREACHABLE).astype(np.int32)
            toward[np.arange(h), self.hubs] = self.hubs
            self._hub_trees = (dist, toward, _first_hops(pred, self.hubs))
        return self._hub_trees

    def columns(self, dests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For destinations ``dests``: every node's next hop toward each (the node itself
        at the destination, UNREACHABLE where none) and its distance, both ``(n, k)``
        like the router's table (whose columns they replace)."""
        n, k = self.n, len(dests)
        # Every column is written below (a hub's, or a domain's chunk).
        hops = np.empty((n, k), np.int32)
        dist = np.empty((n, k), np.float32)  # float32: 8 ns at 100 ms, half the bytes
        hub_dist, toward, first = self.hub_trees()
        kernel = compose_kernel() if self.compiled else None  # built since, perhaps
        hub_row = np.full(n, -1, np.int64)
        hub_row[self.hubs] = np.arange(len(self.hubs))
        transit = self._degree[self.hubs] >= 2  # a one-link hub carries no one's paths
        is_hub_dest = np.flatnonzero(self.is_hub[dests])
        hr = hub_row[dests[is_hub_dest]]
        hops[:, is_hub_dest], dist[:, is_hub_dest] = toward[hr].T, hub_dist[hr].T
        core = np.flatnonzero(~self.is_hub[dests])
        keys = self.domain_of[dests[core]]
        for key in np.unique(keys).tolist():
            dom = self.domains[key]
            cols = core[keys == key]
            local = dom.local(dests[cols])
            # Hubs into this domain: only they can be the last hub of a path to it.
            linked = np.flatnonzero(transit & self._linked_to(dom))
            for lo in range(0, len(cols), _CHUNK):
                c, loc = cols[lo : lo + _CHUNK], local[lo : lo + _CHUNK]
                best = np.full((n, len(c)), np.inf, np.float32)
                via = np.full((n, len(c)), UNREACHABLE, np.int32)
                best[dom.members] = np.take(dom.dist, loc, axis=1)
                via[dom.members] = np.take(dom.hop, loc, axis=1)
                to_dest = np.ascontiguousarray(hub_dist[np.ix_(linked, dests[c])])
                _through_hubs(linked, to_dest, hub_dist, toward, best, via, kernel)
                at = _as_slice(c)
                dist[:, at], hops[:, at] = best, via
        # Hubs' own rows: the first hop of their own trees.
        dist[self.hubs] = hub_dist[:, dests]
        hops[self.hubs] = first[:, dests]
        hops[dests, np.arange(k)] = dests
        dist[dests, np.arange(k)] = 0.0
        # No pass to mark unreachable entries: every source above (a domain's trees, a
        # hub's) gives UNREACHABLE exactly where its distance is infinite (tested).
        return hops, dist

    def _linked_to(self, dom: Domain) -> np.ndarray:
        """Per hub: whether it has a link into ``dom`` now."""
        g = self._graph
        sym = g[self.hubs][:, dom.members].getnnz(axis=1) + g[dom.members][:, self.hubs].getnnz(
            axis=0
        )
        return np.asarray(sym).ravel() > 0


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """Consecutive indices as a slice (assigning columns through one is ~6x faster)."""
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def set_columns(table: np.ndarray, columns: np.ndarray, values: np.ndarray) -> None:
    """``table[:, columns] = values``, row by row where ``columns`` are not consecutive
    (NumPy's own column scatter is ~6x slower at 4,420 nodes)."""
    at = _as_slice(columns)
    if isinstance(at, slice):
        table[:, at] = values
        return
    for row in range(len(table)):
        table[row, at] = values[row]


def _through_hubs(hubs, to_dest, hub_dist, toward, best, via, kernel) -> None:
    """Where a path through one of ``hubs`` (rows of ``hub_dist``/``toward``; their
    distances to the destinations in ``to_dest``) is strictly shorter than ``best``
    (nodes x destinations), take it, in place."""
    n, k = best.shape
    if kernel is not None:
        kernel(n, k, len(hubs), np.ascontiguousarray(hubs, np.int64), to_dest, hub_dist,
               toward, best, via)  # fmt: skip
        return
    for i, x in enumerate(hubs.tolist()):
        cand = hub_dist[x][:, None] + to_dest[i][None, :]
        better = cand < best
        np.copyto(best, cand, where=better)
        np.copyto(via, np.broadcast_to(toward[x][:, None], via.shape), where=better)


def _first_hops(pred: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """From Dijkstra's predecessors of trees rooted at ``roots``: each root's first hop
    toward every node (the root's child above it), UNREACHABLE where none."""
    h, n = pred.shape
    up = pred.astype(np.int64)
    rows = np.arange(h)[:, None]
    reach = up >= 0
    child = up == roots[:, None]
    # A node whose parent is the root is its own first hop; others take their parent's.
    first = np.where(child | ~reach, np.arange(n)[None, :], up)
    while True:
        nxt = first[rows, first]
        if np.array_equal(nxt, first):
            break
        first = nxt
    first = np.where(reach, first, UNREACHABLE)
    first[np.arange(h), roots] = roots
    return first.astype(np.int32)
