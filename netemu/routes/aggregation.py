"""Route aggregation: each node's next-hop table as the fewest longest-prefix routes.

Pure computation. Routing (:mod:`netemu.routes.routing`) gives every node a next hop
toward every other node's service address; installed one /32 each, Starlink
shell 1 needs 2.5 million kernel routes (~250 bytes each) and seconds to load.
Service addresses are consecutive (:mod:`netemu.routes.addressing`), so each node's
table is compressed with ORTC (Draves, King, Venkatachary, Zill: "Constructing
optimal IP routing tables", INFOCOM 1999), which gives the smallest set of
prefixes whose longest-prefix match sends every address exactly where the
table says. Unassigned addresses and the node's own (served by its local
table) are "don't care". Shell 1 compresses 5.5 times (2.5 M routes to ~0.46 M).

Each node's table is aggregated in *blocks* of :data:`BLOCK_ADDRESSES` consecutive
addresses (a /24 each), every block on its own: an epoch's changed next hops
re-aggregate only the blocks they fall in (Starlink phase 1: 18 blocks a node, a
few changed an epoch), at the cost of at most one route per block more than one
aggregation of the whole table would give (the block's root, which a whole-table
aggregation may have merged with its neighbour's). A topology of fewer addresses
is one block.

ORTC's three passes run for many nodes at once as numpy arrays over the binary
trie of the service addresses, level by level: a node's next hops are bits of
a mask of 8 to 64 bits, as the nodes' degrees need (bit = rank of the neighbour
among the node's neighbours, the top bit "unreachable", which becomes an
``unreachable`` route). A node with more than :data:`MAX_NEIGHBOURS` neighbours
keeps one /32 per destination.

:class:`PrefixRoutes` keeps every node's current prefixes and, given the rows
of the next-hop table that changed, reports only the prefixes to replace and
to delete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netemu.routes import addressing

UNREACHABLE = -1
#: Neighbours a node may have for its table to be aggregated (bit 63: unreachable).
MAX_NEIGHBOURS = 63
#: Addresses aggregated together: a change re-aggregates only its block.
BLOCK_BITS = 8
BLOCK_ADDRESSES = 1 << BLOCK_BITS
_UNREACHABLE_BIT = 63
# A route's key: node << 32 | address offset << 6 | prefix length.
_NODE_SHIFT, _OFFSET_SHIFT = 32, 6
#: (node, block) pairs aggregated in one pass (its temporaries: ~1 KiB each).
_PAIRS_AT_ONCE = 8192


@dataclass(frozen=True)
class PrefixChanges:
    """Routes to install (``replace``: node, dst, dst_len, via; via UNREACHABLE
    means an ``unreachable`` route) and to remove (``delete``: node, dst, dst_len),
    each sorted by node; ``dst`` as integer IPv4 addresses."""

    replace: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    delete: tuple[np.ndarray, np.ndarray, np.ndarray]

    def __len__(self) -> int:
        return len(self.replace[0]) + len(self.delete[0])


def _lowest_bit_mask(masks: np.ndarray) -> np.ndarray:
    """Each mask's lowest set bit, as a mask."""
    return masks & (~masks + masks.dtype.type(1))


def neighbour_ranks(
    n: int, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each node's neighbours on links ``a[i]-b[i]``, numbered: ``rank[s, v]`` is
    v's number among s's neighbours (-1: not one), ``neighbour[s, r]`` the inverse
    (UNREACHABLE where unused; numbers from MAX_NEIGHBOURS on are left out), and
    each node's degree."""
    src = np.concatenate([a, b]).astype(np.int64)
    dst = np.concatenate([b, a]).astype(np.int64)
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    first = np.searchsorted(src, src)  # each arc's node's first arc
    r = np.arange(len(src)) - first
    rank = np.full((n, n), -1, dtype=np.int8)
    neighbour = np.full((n, 64), UNREACHABLE, dtype=np.int64)
    fits = r < MAX_NEIGHBOURS
    rank[src[fits], dst[fits]] = r[fits]
    neighbour[src[fits], r[fits]] = dst[fits]
    return rank, neighbour, np.bincount(src, minlength=n)


def block_bits(n: int) -> int:
    """Address bits a block spans for ``n`` nodes (offsets 1..n; 0 unused)."""
    return min(max(1, int(np.ceil(np.log2(n + 1)))), BLOCK_BITS)


def block_count(n: int) -> int:
    """Blocks of addresses a node's table has for ``n`` nodes."""
    return (n + (1 << block_bits(n))) >> block_bits(n)


def ortc(
    hops: np.ndarray,
    rows: np.ndarray,
    blocks: np.ndarray,
    rank: np.ndarray,
    neighbour: np.ndarray,
    max_degree: int = MAX_NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray]:
    """The fewest prefixes routing like ``hops[rows]`` in each block: (keys, via),
    sorted by key.

    ``hops`` is the (n, n) next-hop table (``hops[s, d]``: neighbour of s toward
    d, s itself for d == s, UNREACHABLE); ``rank``/``neighbour`` number each
    node's neighbours (:func:`neighbour_ranks`); ``max_degree``, the most
    neighbours any of the rows has, picks the narrowest masks that hold them
    (8 bits for a satellite with five terminals: less memory to sweep).
    ``blocks[i]``: the block of addresses row ``i`` is aggregated for (rows may
    repeat, one per block).
    """
    n = hops.shape[0]
    depth = block_bits(n)
    width = next(w for w in (8, 16, 32, 64) if max_degree < w)
    kind = np.dtype(f"uint{width}")
    every = np.iinfo(kind).max
    unreachable_bit = width - 1
    # The block's destinations: address offset o is node o - 1; outside 1..n, don't care.
    dest = (blocks[:, None].astype(np.int32) << depth) + np.arange(1 << depth, dtype=np.int32) - 1
    assigned = (dest >= 0) & (dest < n)
    sub = hops[rows[:, None], np.clip(dest, 0, n - 1)]
    r = np.where(sub == UNREACHABLE, -1, rank[rows[:, None], np.maximum(sub, 0)])
    bits = np.where(sub == UNREACHABLE, unreachable_bit, r).astype(kind)
    care = assigned & (sub != rows[:, None])
    if (r[care & (sub != UNREACHABLE)] < 0).any():
        raise ValueError("a next hop is not a neighbour on the given links")
    masks = np.where(care, np.left_shift(kind.type(1), bits), every).astype(kind)
    # Pass 2, bottom-up: a parent's set is its children's intersection, else their union.
    levels = [masks]
    for _ in range(depth):
        left, right = levels[-1][:, 0::2], levels[-1][:, 1::2]
        both = left & right
        np.copyto(both, left | right, where=both == 0)
        levels.append(both)
    levels.reverse()
    # Pass 3, top-down: a prefix wherever the inherited hop is not in the node's set,
    # to the set's lowest hop. Hops travel as one-bit masks; only emitted ones are
    # turned into bit numbers.
    chosen = _lowest_bit_mask(levels[0])
    zeros = np.zeros(len(rows), np.int64)
    found = [(np.arange(len(rows)), zeros, zeros, chosen[:, 0])]
    for level in range(1, depth + 1):
        sets = levels[level]
        chosen = np.repeat(chosen, 2, axis=1)
        i, pos = np.nonzero((sets & chosen) == 0)
        chosen[i, pos] = _lowest_bit_mask(sets[i, pos])
        found.append((i, np.full(len(i), level), pos, chosen[i, pos]))
    i, level, pos, mask = (np.concatenate(x) for x in zip(*found, strict=True))
    bit = np.log2(mask.astype(np.float64)).astype(np.int64)  # exact for powers of two
    bit[bit == unreachable_bit] = _UNREACHABLE_BIT
    node = rows[i]
    via = neighbour[node, bit]
    offset = (blocks[i].astype(np.int64) << depth) | (pos << (depth - level))
    keys = (node.astype(np.int64) << _NODE_SHIFT) | (offset << _OFFSET_SHIFT) | (32 - depth + level)
    order = np.argsort(keys)
    return keys[order], via[order]


def per_destination(hops: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One /32 per destination (for nodes with too many neighbours to aggregate)."""
    i, d = np.nonzero(np.arange(hops.shape[0]) != rows[:, None])
    node = rows[i]
    keys = (node.astype(np.int64) << _NODE_SHIFT) | ((d + 1) << _OFFSET_SHIFT) | 32
    return keys, hops[node, d].astype(np.int64)


class PrefixRoutes:
    """Every node's aggregated routes, and what changes when next hops change."""

    def __init__(self, n_nodes: int):
        self.n = n_nodes
        self.keys = np.zeros(0, np.int64)
        self.via = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def update(
        self,
        hops: np.ndarray,
        rows: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        dests: np.ndarray | None = None,
    ) -> PrefixChanges:
        """Recompute the prefixes of nodes ``rows`` from ``hops`` (whose next hops
        are neighbours on links ``a[i]-b[i]``) and report what to change; with
        ``dests`` (aligned with ``rows``: in node ``rows[i]`` the next hop toward
        ``dests[i]`` changed), only the blocks those destinations fall in."""
        rows = np.asarray(rows, dtype=np.int64)
        rank, neighbour, degree = neighbour_ranks(self.n, a, b)
        depth, count = block_bits(self.n), block_count(self.n)
        if dests is None:
            rows = np.unique(rows)
            pairs = (rows[:, None] * count + np.arange(count)).ravel()
        else:
            pairs = np.unique(rows * count + ((np.asarray(dests, np.int64) + 1) >> depth))
        wide_nodes = np.unique(pairs // count)
        wide_nodes = wide_nodes[degree[wide_nodes] > MAX_NEIGHBOURS]
        if len(wide_nodes):  # one /32 per destination, every block re-done
            pairs = np.union1d(pairs, (wide_nodes[:, None] * count + np.arange(count)).ravel())
        node, block = np.divmod(pairs, count)
        wide = degree[node] > MAX_NEIGHBOURS
        parts = []
        narrow = np.flatnonzero(~wide)
        for lo in range(0, len(narrow), _PAIRS_AT_ONCE):  # temporaries of bounded size
            at = narrow[lo : lo + _PAIRS_AT_ONCE]
            most = degree[node[at]].max()
            parts.append(ortc(hops, node[at], block[at], rank, neighbour, most))
        if wide.any():
            parts.append(per_destination(hops, wide_nodes))
        if parts:
            new_keys = np.concatenate([p[0] for p in parts])
            new_via = np.concatenate([p[1] for p in parts])
            order = np.argsort(new_keys, kind="stable")
            new_keys, new_via = new_keys[order], new_via[order]
        else:
            new_keys, new_via = np.zeros(0, np.int64), np.zeros(0, np.int64)
        # The pairs' old routes: contiguous runs of the sorted keys (node, then offset).
        first = (node << _NODE_SHIFT) | ((block << depth) << _OFFSET_SHIFT)
        after = (node << _NODE_SHIFT) | (((block + 1) << depth) << _OFFSET_SHIFT)
        lo = np.searchsorted(self.keys, first)
        hi = np.searchsorted(self.keys, after)
        inside = np.zeros(len(self.keys) + 1, np.int64)
        np.add.at(inside, lo, 1)
        np.add.at(inside, hi, -1)
        old = np.cumsum(inside[:-1]) > 0
        old_keys, old_via = self.keys[old], self.via[old]
        unchanged = np.zeros(len(new_keys), bool)
        if len(old_keys):
            at = np.minimum(np.searchsorted(old_keys, new_keys), len(old_keys) - 1)
            unchanged = (old_keys[at] == new_keys) & (old_via[at] == new_via)
        gone = ~np.isin(old_keys, new_keys, assume_unique=True)
        kept_keys, kept_via = self.keys[~old], self.via[~old]
        at = np.searchsorted(kept_keys, new_keys)  # both sorted: a merge, not a sort
        self.keys, self.via = np.insert(kept_keys, at, new_keys), np.insert(kept_via, at, new_via)
        return PrefixChanges(
            replace=(*self._split(new_keys[~unchanged]), new_via[~unchanged]),
            delete=self._split(old_keys[gone]),
        )

    def _split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node, destination address as an integer, prefix length) of route keys."""
        node = keys >> _NODE_SHIFT
        offset = (keys >> _OFFSET_SHIFT) & ((1 << (_NODE_SHIFT - _OFFSET_SHIFT)) - 1)
        return node, addressing.SERVICE_BASE + offset, keys & 0x3F

    def lookup(self, node: int, dest: int) -> int:
        """Where ``node``'s routes send traffic for node ``dest`` (longest prefix
        match; UNREACHABLE: an unreachable route or none)."""
        address = dest + 1
        lo = np.searchsorted(self.keys, node << _NODE_SHIFT)
        hi = np.searchsorted(self.keys, (node + 1) << _NODE_SHIFT)
        best, via = -1, UNREACHABLE
        for key, hop in zip(self.keys[lo:hi].tolist(), self.via[lo:hi].tolist(), strict=True):
            offset = (key >> _OFFSET_SHIFT) & ((1 << (_NODE_SHIFT - _OFFSET_SHIFT)) - 1)
            length = key & 0x3F
            span = 32 - length
            if (address >> span) == (offset >> span) and length > best:
                best, via = length, hop
        return via
