"""Shortest-delay routing: next hops, unreachable nodes, and only-what-changed diffs."""

import numpy as np
import pytest

from netemu.routes.routing import (
    TIE_MS,
    UNREACHABLE,
    RouteHistory,
    ShortestDelayRouter,
    next_hops,
    path,
)


def graph(*edges):
    a, b, w = zip(*edges, strict=True)
    return np.array(a), np.array(b), np.array(w, dtype=float)


def test_next_hops_follow_the_least_delay():
    # 0-1-2 costs 2 ms, the direct 0-2 link 5 ms; 3 is isolated.
    hops = next_hops(4, *graph((0, 1, 1.0), (1, 2, 1.0), (0, 2, 5.0)))
    assert hops[0, 2] == 1 and hops[2, 0] == 1 and hops[1, 2] == 2
    assert path(hops, 0, 2) == [0, 1, 2]
    assert hops[0, 3] == UNREACHABLE and path(hops, 0, 3) is None
    assert hops[3, 3] == 3


def test_next_hops_are_consistent_paths_on_a_grid():
    """On a 6x6 grid with random delays every route is a true shortest path."""
    import itertools

    rng = np.random.default_rng(1)
    k = 6
    edges = [(r * k + c, r * k + c + 1) for r in range(k) for c in range(k - 1)]
    edges += [(r * k + c, (r + 1) * k + c) for r in range(k - 1) for c in range(k)]
    a, b = np.array(edges).T
    w = rng.uniform(1, 5, len(a))
    hops = next_hops(k * k, a, b, w)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    dist = dijkstra(csr_matrix((w, (a, b)), shape=(k * k,) * 2), directed=False)
    weight = {(x, y): v for x, y, v in zip(a, b, w, strict=True)}
    weight |= {(y, x): v for (x, y), v in list(weight.items())}
    for s, d in itertools.permutations(range(k * k), 2):
        p = path(hops, s, d)
        assert sum(weight[u, v] for u, v in itertools.pairwise(p)) == pytest.approx(dist[s, d])


def test_router_reports_only_changes():
    router = ShortestDelayRouter(3)
    first = router.update(*graph((0, 1, 1.0), (1, 2, 1.0)))
    assert len(first) == 6  # every pair became reachable
    assert len(router.update(*graph((0, 1, 1.2), (1, 2, 0.9)))) == 0  # same paths
    gone = router.update(*graph((0, 1, 1.0)))
    assert gone.as_tuples() == {(0, 2, None), (1, 2, None), (2, 0, None), (2, 1, None)}


def shell_grid(planes: int = 8, per_plane: int = 8, seed: int = 2):
    """A +Grid torus with random delays (an ISL shell's shape)."""
    rng = np.random.default_rng(seed)
    n = planes * per_plane
    idx = np.arange(n).reshape(planes, per_plane)
    edges = np.concatenate(
        [
            np.stack([idx.ravel(), np.roll(idx, -1, axis=1).ravel()], axis=1),
            np.stack([idx.ravel(), np.roll(idx, -1, axis=0).ravel()], axis=1),
        ]
    )
    a, b = edges.min(axis=1), edges.max(axis=1)
    return n, a, b, rng.uniform(2, 10, len(a))


def test_a_link_change_leaves_every_route_exact_at_once():
    """With a budget of one tree an update, the trees a link's loss or arrival
    affects are still all recomputed: the table equals a full computation."""
    n, a, b, w = shell_grid()
    router = ShortestDelayRouter(n, work_per_update=1)
    router.update(a, b, w)
    assert router.recomputed == n  # the first update builds every tree
    assert router.refresh_updates == n
    keep = np.ones(len(a), bool)
    keep[int(np.argmax(w))] = False  # the slowest link: in few trees
    changes = router.update(a[keep], b[keep], w[keep], refresh=False)
    assert np.array_equal(router.hops, next_hops(n, a[keep], b[keep], w[keep]))
    assert 0 < router.recomputed < n and len(changes) > 0
    router.update(a, b, w, refresh=False)  # they come back
    assert np.array_equal(router.hops, next_hops(n, a, b, w))


def test_a_leaf_handing_over_recomputes_only_its_own_routes():
    """Ground stations with one terminal (leaves) hand over, lose their link and get
    a second one: routes stay exact at once (equal to a full computation), and a
    leaf's handover recomputes a few trees, not every tree it sends into."""
    sats, a, b, w = shell_grid()
    n = sats + 3  # three ground stations, on satellites 5, 20 and 40
    ga, gb, gw = [
        np.append(x, y)
        for x, y in zip((a, b, w), ([5, 20, 40], [64, 65, 66], [1.5, 2.0, 2.5]), strict=True)
    ]
    router = ShortestDelayRouter(n, work_per_update=1, hubs=[64, 65, 66])
    router.update(ga, gb, gw)

    def exact(a, b, w):
        assert np.array_equal(router.hops, next_hops(n, a, b, w))

    exact(ga, gb, gw)
    hand = gb != 64  # station 64 hands over from satellite 5 to 6 (acquiring first)
    router.update(ga[hand], gb[hand], gw[hand], refresh=False)
    exact(ga[hand], gb[hand], gw[hand])
    assert router.recomputed <= 2  # its own tree and its old satellite's
    ha, hb, hw = np.append(ga[hand], 6), np.append(gb[hand], 64), np.append(gw[hand], 1.7)
    changes = router.update(ha, hb, hw, refresh=False)
    exact(ha, hb, hw)
    assert router.recomputed <= 2 and len(changes) >= n - 1  # every route of 64, and toward it
    # A second terminal: station 65 is no leaf any more (it could carry others' paths).
    sa, sb, sw = np.append(ha, 33), np.append(hb, 65), np.append(hw, 1.0)
    router.update(sa, sb, sw, refresh=False)
    exact(sa, sb, sw)


def test_under_motion_every_tree_is_refreshed_in_turn():
    n, a, b, w = shell_grid()
    per_update = 10
    router = ShortestDelayRouter(n, work_per_update=per_update * 2 * len(a))
    router.update(a, b, w)
    assert router.refresh_updates == -(-n // per_update)
    moved = w * np.random.default_rng(4).uniform(0.7, 1.3, len(w))
    exact = next_hops(n, a, b, moved)
    router.update(a, b, moved)
    assert router.recomputed == per_update
    assert not np.array_equal(router.hops, exact)  # the drift needs more trees
    for _ in range(router.refresh_updates - 1):
        router.update(a, b, moved)
    assert_shortest(router.hops, a, b, moved)  # every tree refreshed


def assert_shortest(hops, a, b, w):
    """Every route is a shortest path (an equal one, within TIE_MS, may be kept)."""
    import itertools

    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    n = len(hops)
    best = dijkstra(csr_matrix((w, (a, b)), shape=(n, n)), directed=False)
    weight = {(x, y): v for x, y, v in zip(a.tolist(), b.tolist(), w.tolist(), strict=True)}
    weight |= {(y, x): v for (x, y), v in list(weight.items())}
    for s, d in itertools.permutations(range(n), 2):
        route = path(hops, s, d)
        got = sum(weight[u, v] for u, v in itertools.pairwise(route))
        assert got <= best[s, d] + TIE_MS, (s, d, got, best[s, d])


def test_equal_paths_keep_their_routes():
    """A +Grid with every link the same delay has many equal paths: new delays that
    change no path's length by more than TIE_MS change no route."""
    n, a, b, _ = shell_grid()
    router = ShortestDelayRouter(n)
    router.update(a, b, np.full(len(a), 5.0))
    before = router.hops.copy()
    wiggle = 5.0 + np.random.default_rng(3).uniform(-1e-5, 1e-5, len(a))
    assert len(router.update(a, b, wiggle)) == 0
    assert np.array_equal(router.hops, before)
    assert_shortest(router.hops, a, b, wiggle)


def test_a_small_graph_recomputes_every_tree_every_update():
    n, a, b, w = shell_grid(4, 4)
    router = ShortestDelayRouter(n)
    router.update(a, b, w)
    moved = w[::-1].copy()
    router.update(a, b, moved)
    assert router.recomputed == n and router.refresh_updates == 1
    assert np.array_equal(router.hops, next_hops(n, a, b, moved))


def test_route_history_gives_back_every_table_it_was_shown():
    n, a, b, w = shell_grid(4, 5)
    router = ShortestDelayRouter(n, work_per_update=2 * len(a) * 3)
    history = RouteHistory(checkpoint_every=4)
    rng = np.random.default_rng(8)
    tables = []
    for t in range(15):
        keep = rng.uniform(size=len(a)) > 0.1
        changes = router.update(a[keep], b[keep], w[keep] * rng.uniform(0.5, 1.5, keep.sum()))
        history.append(float(t), {"t": t}, router.hops, changes)
        tables.append(router.hops.copy())
    for i in [3, 0, 14, 9, 10, 13, 5, -1]:
        when, carrying, hops = history[i]
        assert np.array_equal(hops, tables[i]) and carrying["t"] == when == range(15)[i]
    assert len(history._checkpoints) == 4  # not a copy per entry
    # A checkpoint is the whole table: its changes (the first update's: every entry) are
    # not kept besides; the others' compactly.
    assert all(history._changes[i] is None for i in (0, 4, 8, 12))
    assert history._changes[1].node.dtype == np.int32


def shells_and_hubs(seed: int = 5):
    """Three +Grid shells (8x8, 4x6, 3x4) and four ground stations (hubs), two linked to
    satellites of several shells (they carry paths between shells), two with one link."""
    parts, base = [], 0
    for planes, per_plane, s in ((8, 8, seed), (4, 6, seed + 1), (3, 4, seed + 2)):
        n, a, b, w = shell_grid(planes, per_plane, s)
        parts.append((a + base, b + base, w))
        base += n
    hubs = np.arange(base, base + 4)
    ground = [(3, hubs[0]), (70, hubs[0]), (90, hubs[0]), (20, hubs[1]), (80, hubs[1]),
              (41, hubs[2]), (95, hubs[3])]  # fmt: skip
    rng = np.random.default_rng(seed)
    a, b, w = (np.concatenate(x) for x in zip(*parts, strict=True))
    ga, gb = np.array(ground).T
    return base + 4, hubs, np.r_[a, ga], np.r_[b, gb], np.r_[w, rng.uniform(1, 3, len(ga))]


def test_hubs_joining_shells_keep_every_route_exact_and_hand_over_without_shell_trees():
    """Routes composed from the shells' trees and the hubs' are those of a full
    computation after every kind of change, and a hub's handover (the expensive
    case at Starlink phase 1) recomputes no shell's tree at all."""
    n, hubs, a, b, w = shells_and_hubs()
    router = ShortestDelayRouter(n, work_per_update=1, hubs=hubs)
    trees = router._trees

    def step(keep=None, add=(), refresh=False):
        nonlocal a, b, w
        if keep is not None:
            a, b, w = a[keep], b[keep], w[keep]
        for x, y, d in add:
            a, b, w = np.append(a, x), np.append(b, y), np.append(w, d)
        router.update(a, b, w, refresh=refresh)
        assert np.array_equal(router.hops, next_hops(n, a, b, w))

    step()
    assert trees.recomputed == n - len(hubs)  # every shell tree, once
    step(keep=~((a == 70) & (b == hubs[0])))  # hub 0 loses its link into shell 2
    assert trees.recomputed == 0 and router.recomputed > 0
    step(add=[(75, hubs[0], 1.2)])  # and acquires another satellite of it
    assert trees.recomputed == 0
    step(add=[(64, hubs[3], 2.0)])  # a one-link hub gets a second: it joins shells 2 and 3
    assert trees.recomputed == 0
    isl = int(np.flatnonzero((a < 64) & (b < 64))[7])
    gone = a[isl], b[isl], w[isl]
    step(keep=np.arange(len(a)) != isl)  # an inter-satellite link is lost in shell 1
    assert 0 < trees.recomputed < 64
    step(add=[gone])  # and comes back
    cut = (a >= 64) & (a < 88) & (b >= 64) & (b < 88) & ((b - a) % 6 == 0)
    cut &= ((a - 64) // 6 == 1) | ((b - 64) // 6 == 1)
    step(keep=~cut)  # shell 2's plane 1 loses its links to planes 0 and 2: a domain of its own
    assert trees.recomputed == 24 and len(trees.domains) == 4
    moved = w * np.random.default_rng(9).uniform(0.7, 1.3, len(w))
    w = moved
    for _ in range(router.refresh_updates):
        router.update(a, b, w)
    assert_shortest(router.hops, a, b, w)


def test_the_compiled_composition_gives_the_numpy_table():
    """compose.c and its NumPy fallback choose the same next hops and distances, for
    every destination (composed in place) and for scattered ones (composed apart);
    a next hop is UNREACHABLE exactly where the distance is infinite."""
    from netemu.live.routes import build_kernels
    from netemu.routes.composition import ComposedTrees, compose_kernel

    build_kernels()
    assert compose_kernel() is not None  # gcc is part of the set-up
    n, hubs, a, b, w = shells_and_hubs(seed=11)
    n += 1  # and a satellite with no link at all
    scattered = np.r_[np.arange(0, n, 3), hubs[1:]]
    tables = []
    for compiled in (True, False):
        trees = ComposedTrees(n, hubs, compiled=compiled)
        trees.update(a, b, w, np.arange(n))
        tables.append((trees.columns(np.arange(n)), trees.columns(scattered)))
    for (hops, dist), (some_hops, some_dist) in tables:
        assert np.array_equal(hops == UNREACHABLE, ~np.isfinite(dist))
        assert (hops[:-1, -1] == UNREACHABLE).all() and (hops[-1, :-1] == UNREACHABLE).all()
        assert np.array_equal(some_hops, hops[:, scattered])
        assert np.array_equal(some_dist, dist[:, scattered])
    assert np.array_equal(tables[0][0][0], tables[1][0][0])
    assert np.array_equal(tables[0][0][1], tables[1][0][1])


def test_a_graph_of_hubs_only_routes_through_their_own_trees():
    """No satellite at all (every node a hub): the hubs' trees are the table."""
    a, b, w = graph((0, 1, 1.0), (1, 2, 1.0), (0, 2, 5.0))
    router = ShortestDelayRouter(4, hubs=[0, 1, 2, 3])
    router.update(a, b, w)
    assert np.array_equal(router.hops, next_hops(4, a, b, w))
