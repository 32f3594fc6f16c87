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

ORTC's three passes run over the binary trie of a block's addresses, a node's
next hops as bits of a mask (bit = rank of the neighbour among the node's
neighbours, the top bit "unreachable", which becomes an ``unreachable`` route):
compiled (``ortc.c``, one pair after another) where it was built, else in NumPy
for many pairs at once, level by level; both give the same prefixes. A node with
more than :data:`MAX_NEIGHBOURS` neighbours keeps one /32 per destination.

:class:`PrefixRoutes` keeps every node's current prefixes and, given the rows
of the next-hop table that changed, reports only the prefixes to replace and
to delete.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netemu import native
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
_OFFSET_MASK = (1 << (_NODE_SHIFT - _OFFSET_SHIFT)) - 1
#: (node, block) pairs aggregated in one pass (its temporaries: ~1 KiB each).
_PAIRS_AT_ONCE = 8192
#: ORTC compiled (``ortc.c``), built by the live layer or scripts/provision.
SOURCE = Path(__file__).with_name("ortc.c")
NAME, FLAGS = "netemu-ortc", ["-O3", "-shared", "-fPIC"]
_COMPILED_MAX_BITS = 8  # ortc.c's trie holds 256 leaves


@functools.cache
def ortc_kernel():
    """ORTC compiled where it was built, else None: then NumPy does the same (~4x
    slower: 0.45 s instead of 0.11 s for 67,846 blocks of Starlink phase 1)."""
    lib = native.loaded(SOURCE, NAME, FLAGS)
    if lib is None:
        return None
    i64, i32, i8 = (np.ctypeslib.ndpointer(t, flags="C") for t in (np.int64, np.int32, np.int8))
    lib.ortc.restype = ctypes.c_int64
    lib.ortc.argtypes = [ctypes.c_int64, ctypes.c_int64, i32, i8, i64, ctypes.c_int64, i64, i64,
                         ctypes.c_int64, i64, i64, i64]  # fmt: skip
    return lib.ortc


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
    sorted by key (``rows`` and ``blocks`` sorted by row, then block), computed by
    ``ortc.c`` where it was built, else by :func:`ortc_numpy` (which says what the
    arguments are)."""
    kernel = ortc_kernel()
    n, depth = hops.shape[0], block_bits(hops.shape[0])
    if kernel is None or depth > _COMPILED_MAX_BITS:
        return ortc_numpy(hops, rows, blocks, rank, neighbour, max_degree)
    hops = np.ascontiguousarray(hops, np.int32)
    rows = np.ascontiguousarray(rows, np.int64)
    blocks = np.ascontiguousarray(blocks, np.int64)
    rank, neighbour = np.ascontiguousarray(rank), np.ascontiguousarray(neighbour)
    capacity = max(1024, 64 * len(rows))
    keys, via = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
    written, done = np.zeros(1, np.int64), 0
    while done < len(rows):
        more = kernel(n, depth, hops, rank, neighbour, len(rows) - done, rows[done:],
                      blocks[done:], capacity, keys, via, written)  # fmt: skip
        if more < 0:
            raise ValueError("a next hop is not a neighbour on the given links")
        done += more
        if done < len(rows):  # full: room for the rest at this rate, at least
            capacity = 2 * capacity + (2 << depth)
            keys, via = np.resize(keys, capacity), np.resize(via, capacity)
    return keys[: written[0]].copy(), via[: written[0]].copy()


def ortc_numpy(
    hops: np.ndarray,
    rows: np.ndarray,
    blocks: np.ndarray,
    rank: np.ndarray,
    neighbour: np.ndarray,
    max_degree: int = MAX_NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ortc` in NumPy: many pairs at once, level by level of the trie.

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
    """Every node's aggregated routes, and what changes when next hops change.

    Routes are kept per (node, block) *pair*: a pair's routes are one sorted run
    of a pool, each as its offset in the block and its length (16 bits: the pair
    says the rest) and its next hop (32 bits). An update writes the pairs it
    re-aggregated at the pool's end and forgets their old runs, so its cost
    follows the pairs that changed, not every route (Starlink phase 1 keeps 2.2
    million: 13 MB, at most about twice that with the pool's spare room); the pool
    is compacted when it is full.
    """

    def __init__(self, n_nodes: int):
        self.n = n_nodes
        self._depth, self._count = block_bits(n_nodes), block_count(n_nodes)
        pairs = n_nodes * self._count
        self._start = np.zeros(pairs, np.int64)  # each pair's run in the pool
        self._length = np.zeros(pairs, np.int64)
        self._local = np.zeros(0, np.uint16)  # offset in the block << 6 | prefix length
        self._via = np.zeros(0, np.int32)
        self._used = 0  # pool entries written (live and forgotten)
        self._live = 0

    def __len__(self) -> int:
        return self._live

    @property
    def pool_entries(self) -> int:
        """Routes the pool has room for (6 bytes each), live or forgotten."""
        return len(self._local)

    @property
    def keys(self) -> np.ndarray:
        """Every route's key (node << 32 | address offset << 6 | length), sorted."""
        return self._gather(np.arange(len(self._start)))[0]

    @property
    def via(self) -> np.ndarray:
        """Every route's next hop, in the order of :attr:`keys`."""
        return self._gather(np.arange(len(self._start)))[1]

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
        depth, count = self._depth, self._count
        touched = np.zeros(self.n * count, bool)  # a mask, not np.unique: no sort
        if dests is None:
            touched.reshape(self.n, count)[rows] = True
        else:
            touched[rows * count + ((np.asarray(dests, np.int64) + 1) >> depth)] = True
        pairs = np.flatnonzero(touched)
        wide_nodes = np.flatnonzero(
            touched.reshape(self.n, count).any(axis=1) & (degree > MAX_NEIGHBOURS)
        )
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
        old_keys, old_via = self._gather(pairs)
        # Old and new side by side: two sorted runs, one merge (not a search per key).
        both = np.concatenate([old_keys, new_keys])
        order = np.argsort(both, kind="stable")
        same = np.flatnonzero(both[order[1:]] == both[order[:-1]])
        was, now = order[same], order[same + 1] - len(old_keys)  # the old one first
        gone = np.ones(len(old_keys), bool)
        gone[was] = False
        unchanged = np.zeros(len(new_keys), bool)
        unchanged[now] = old_via[was] == new_via[now]
        self._store(pairs, new_keys, new_via)
        return PrefixChanges(
            replace=(*self._split(new_keys[~unchanged]), new_via[~unchanged]),
            delete=self._split(old_keys[gone]),
        )

    def _pair_base(self, pairs: np.ndarray) -> np.ndarray:
        """The key a pair's local keys are added to: its node and its block's first offset."""
        node, block = np.divmod(pairs, self._count)
        return (node << _NODE_SHIFT) | ((block << self._depth) << _OFFSET_SHIFT)

    def _runs(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pool positions of ``pairs``' routes in order, and each route's pair."""
        lengths = self._length[pairs]
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)
        return np.repeat(self._start[pairs], lengths) + within, np.repeat(pairs, lengths)

    def _gather(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, via) of ``pairs``' routes (sorted pairs: sorted keys)."""
        at, owner = self._runs(pairs)
        keys = self._pair_base(owner) + self._local[at]
        return keys, self._via[at].astype(np.int64)

    def _store(self, pairs: np.ndarray, keys: np.ndarray, via: np.ndarray) -> None:
        """``pairs``' routes are now ``keys`` (sorted, each of one of them) and ``via``."""
        owner = (keys >> _NODE_SHIFT) * self._count + (
            ((keys >> _OFFSET_SHIFT) & _OFFSET_MASK) >> self._depth
        )
        lengths = np.searchsorted(owner, pairs, "right") - np.searchsorted(owner, pairs)
        if self._used + len(keys) > len(self._local):
            self._compact(len(keys))
        self._live += len(keys) - int(self._length[pairs].sum())
        end = self._used + len(keys)
        self._local[self._used : end] = keys - self._pair_base(owner)
        self._via[self._used : end] = via
        self._start[pairs] = self._used + np.cumsum(lengths) - lengths
        self._length[pairs] = lengths
        self._used = end

    def _compact(self, room: int) -> None:
        """Copy the live runs to a new pool with ``room`` more entries, and as many spare
        (a phase-1 handover re-aggregates up to half its ~80,000 blocks)."""
        at, _ = self._runs(np.arange(len(self._start)))
        size = (self._live + room) * 2 + 1024
        local, via = np.zeros(size, np.uint16), np.zeros(size, np.int32)
        local[: len(at)], via[: len(at)] = self._local[at], self._via[at]
        self._local, self._via, self._used = local, via, len(at)
        self._start = np.cumsum(self._length) - self._length

    def _split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node, destination address as an integer, prefix length) of route keys."""
        node = keys >> _NODE_SHIFT
        offset = (keys >> _OFFSET_SHIFT) & _OFFSET_MASK
        return node, addressing.SERVICE_BASE + offset, keys & 0x3F

    def lookup(self, node: int, dest: int) -> int:
        """Where ``node``'s routes send traffic for node ``dest`` (longest prefix
        match; UNREACHABLE: an unreachable route or none)."""
        address = dest + 1
        keys, hops = self._gather(node * self._count + np.arange(self._count))
        best, via = -1, UNREACHABLE
        for key, hop in zip(keys.tolist(), hops.tolist(), strict=True):
            offset = (key >> _OFFSET_SHIFT) & _OFFSET_MASK
            length = key & 0x3F
            span = 32 - length
            if (address >> span) == (offset >> span) and length > best:
                best, via = length, hop
        return via
