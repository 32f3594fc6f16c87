"""Route aggregation (ORTC): the fewest prefixes that still route every destination right."""

import itertools

import numpy as np
import pytest

from netemu.routes import aggregation
from netemu.routes.aggregation import MAX_NEIGHBOURS, PrefixRoutes
from netemu.routes.routing import UNREACHABLE, next_hops


def grid(k: int, seed: int, extra_isolated: int = 1):
    """A k x k grid with random delays, plus isolated nodes (unreachable from all)."""
    rng = np.random.default_rng(seed)
    edges = [(r * k + c, r * k + c + 1) for r in range(k) for c in range(k - 1)]
    edges += [(r * k + c, (r + 1) * k + c) for r in range(k - 1) for c in range(k)]
    a, b = np.array(edges).T
    return k * k + extra_isolated, a, b, rng.uniform(1, 5, len(a))


def assert_routes_like(routes: PrefixRoutes, hops: np.ndarray) -> None:
    for s, d in itertools.permutations(range(len(hops)), 2):
        assert routes.lookup(s, d) == hops[s, d], (s, d)


def test_prefixes_route_every_destination_as_the_table_says():
    n, a, b, w = grid(7, seed=3)
    hops = next_hops(n, a, b, w)
    routes = PrefixRoutes(n)
    changes = routes.update(hops, np.arange(n), a, b)
    assert_routes_like(routes, hops)
    # Aggregated: far fewer routes than one per destination, all of them new.
    assert len(routes) < n * (n - 1) / 3
    assert len(changes.replace[0]) == len(routes) and len(changes.delete[0]) == 0
    # The isolated node's every destination is unreachable, others' toward it too.
    assert all(routes.lookup(n - 1, d) == UNREACHABLE for d in range(n - 1))
    assert routes.lookup(0, n - 1) == UNREACHABLE


def test_changes_turn_the_old_routes_into_the_new_ones():
    """Replaying the reported replaces and deletes on the old routes gives exactly
    the routes computed from scratch for the new table."""
    n, a, b, w = grid(6, seed=5)
    routes = PrefixRoutes(n)
    first = routes.update(next_hops(n, a, b, w), np.arange(n), a, b)
    installed = {
        (int(s), int(d), int(length)): int(v)
        for s, d, length, v in zip(*first.replace, strict=True)
    }
    keep = np.arange(len(a)) != 7  # a link goes, delays drift
    a2, b2, w2 = a[keep], b[keep], w[keep] * np.random.default_rng(9).uniform(0.8, 1.2, keep.sum())
    hops2 = next_hops(n, a2, b2, w2)
    changed_rows = np.flatnonzero((hops2 != next_hops(n, a, b, w)).any(axis=1))
    changes = routes.update(hops2, changed_rows, a2, b2)
    for s, d, length in zip(*changes.delete, strict=True):
        del installed[int(s), int(d), int(length)]
    for s, d, length, v in zip(*changes.replace, strict=True):
        installed[int(s), int(d), int(length)] = int(v)
    fresh = PrefixRoutes(n)
    scratch = fresh.update(hops2, np.arange(n), a2, b2)
    assert installed == {
        (int(s), int(d), int(length)): int(v)
        for s, d, length, v in zip(*scratch.replace, strict=True)
    }
    assert_routes_like(routes, hops2)
    assert 0 < len(changes) < len(fresh)  # only what changed


def test_a_node_with_more_neighbours_than_mask_bits_keeps_one_route_per_destination():
    leaves = MAX_NEIGHBOURS + 5
    n = leaves + 1
    a, b = np.zeros(leaves, int), np.arange(1, n)
    hops = next_hops(n, a, b, np.ones(leaves))
    routes = PrefixRoutes(n)
    routes.update(hops, np.arange(n), a, b)
    assert_routes_like(routes, hops)
    hub = np.flatnonzero((routes.keys >> 32) == 0)
    assert len(hub) == leaves and ((routes.keys[hub] & 0x3F) == 32).all()
    # A leaf needs one route: everything goes to the hub.
    assert ((routes.keys >> 32) == 1).sum() == 1


def test_changed_next_hops_re_aggregate_only_their_blocks(monkeypatch):
    """577 nodes: three blocks of 256 addresses a node. Changes given as (node,
    destination) re-aggregate only the blocks they fall in and give exactly the
    routes an aggregation from scratch gives; blocks cost at most one route each
    more than one aggregation of the whole table."""
    n, a, b, w = grid(24, seed=11)
    hops = next_hops(n, a, b, w)
    routes = PrefixRoutes(n)
    routes.update(hops, np.arange(n), a, b)
    keep = np.arange(len(a)) != 40  # a link goes, delays drift a little
    a2, b2 = a[keep], b[keep]
    w2 = w[keep] * np.random.default_rng(2).uniform(0.97, 1.03, keep.sum())
    hops2 = next_hops(n, a2, b2, w2)
    node, dest = np.nonzero(hops2 != hops)
    assert 0 < len(np.unique(node * 3 + (dest + 1) // 256)) < 3 * len(np.unique(node))
    routes.update(hops2, node, a2, b2, dests=dest)
    fresh = PrefixRoutes(n)
    fresh.update(hops2, np.arange(n), a2, b2)
    assert np.array_equal(routes.keys, fresh.keys) and np.array_equal(routes.via, fresh.via)
    rng = np.random.default_rng(4)
    for s, d in rng.integers(0, n, (3000, 2)).tolist():
        if s != d:
            assert routes.lookup(s, d) == hops2[s, d], (s, d)
    monkeypatch.setattr(aggregation, "BLOCK_BITS", 16)  # one block: the whole table
    whole = PrefixRoutes(n)
    whole.update(hops2, np.arange(n), a2, b2)
    assert len(whole) <= len(fresh) <= len(whole) + n * 2


def test_the_compiled_aggregation_gives_the_numpy_prefixes():
    """ortc.c and its NumPy fallback give the same prefixes, unreachable ones included,
    and both refuse a next hop that is not a neighbour."""
    from netemu.live.routes import build_kernels

    build_kernels()
    assert aggregation.ortc_kernel() is not None  # gcc is part of the set-up
    n, a, b, w = grid(24, seed=7, extra_isolated=3)
    hops = next_hops(n, a, b, w)
    rank, neighbour, degree = aggregation.neighbour_ranks(n, a, b)
    count = aggregation.block_count(n)
    rows, blocks = np.repeat(np.arange(n), count), np.tile(np.arange(count), n)
    compiled = aggregation.ortc(hops, rows, blocks, rank, neighbour)
    numpy = aggregation.ortc_numpy(hops, rows, blocks, rank, neighbour, int(degree.max()))
    assert np.array_equal(compiled[0], numpy[0]) and np.array_equal(compiled[1], numpy[1])
    assert (compiled[1] == UNREACHABLE).any()
    hops[0, 100] = 300  # not a neighbour of node 0
    for ortc in (aggregation.ortc, aggregation.ortc_numpy):
        with pytest.raises(ValueError, match="not a neighbour"):
            ortc(hops, rows[:count], blocks[:count], rank, neighbour)


def test_updates_after_updates_keep_the_routes_from_scratch_in_bounded_memory():
    """Forty updates in a row (links going and coming back, delays drifting): after
    each, the routes are those aggregated from scratch, and the pool that keeps them
    keeps them stays within four times the most routes there were (it is compacted:
    without, it would hold every update's, ~40 times as many)."""
    n, a, b, w = grid(24, seed=13)
    rng = np.random.default_rng(1)
    routes = PrefixRoutes(n)
    hops = next_hops(n, a, b, w)
    routes.update(hops, np.arange(n), a, b)
    most = len(routes)
    for step in range(40):
        keep = rng.random(len(a)) > 0.05
        a2, b2, w2 = a[keep], b[keep], w[keep] * rng.uniform(0.9, 1.1, keep.sum())
        new = next_hops(n, a2, b2, w2)
        node, dest = np.nonzero(new != hops)
        routes.update(new, node, a2, b2, dests=dest)
        most = max(most, len(routes))
        hops = new
        if step % 8 == 7:
            fresh = PrefixRoutes(n)
            fresh.update(hops, np.arange(n), a2, b2)
            assert np.array_equal(routes.keys, fresh.keys)
            assert np.array_equal(routes.via, fresh.via)
        assert routes.pool_entries <= 4 * most + 1024


def test_the_compiled_aggregation_grows_its_buffers_for_blocks_that_barely_aggregate():
    """Nodes whose next hops are scattered over ten neighbours need ~230 prefixes a
    block, more than the compiled path first makes room for (64 a block): it grows its
    buffers, goes on where it stopped and still gives NumPy's prefixes."""
    from netemu.live.routes import build_kernels

    build_kernels()
    assert aggregation.ortc_kernel() is not None
    n, senders, hubs = 300, np.arange(20), np.arange(280, 290)  # each sender: ten links
    a, b = np.repeat(senders, len(hubs)), np.tile(hubs, len(senders))
    hops = np.full((n, n), UNREACHABLE, np.int32)
    np.fill_diagonal(hops, np.arange(n))
    scattered = np.random.default_rng(3).integers(0, len(hubs), (len(senders), n))
    hops[senders] = np.where(np.eye(n, dtype=bool)[senders], senders[:, None], hubs[scattered])
    rank, neighbour, _ = aggregation.neighbour_ranks(n, a, b)
    rows, blocks = np.repeat(senders, 2), np.tile([0, 1], len(senders))
    compiled = aggregation.ortc(hops, rows, blocks, rank, neighbour)
    numpy = aggregation.ortc_numpy(hops, rows, blocks, rank, neighbour, 10)
    assert len(compiled[0]) > 64 * len(rows)  # more than the first buffers held
    assert np.array_equal(compiled[0], numpy[0]) and np.array_equal(compiled[1], numpy[1])
