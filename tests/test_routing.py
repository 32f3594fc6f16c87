"""Shortest-delay routing: next hops, unreachable nodes, and only-what-changed diffs."""

import numpy as np

from netemu.routing import UNREACHABLE, ShortestDelayRouter, next_hops, path


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


def test_ties_go_to_the_lowest_numbered_neighbour():
    hops = next_hops(4, *graph((0, 2, 1.0), (2, 3, 1.0), (0, 1, 1.0), (1, 3, 1.0)))
    assert hops[0, 3] == 1


def test_router_reports_only_changes():
    router = ShortestDelayRouter(3)
    first = router.update(*graph((0, 1, 1.0), (1, 2, 1.0)))
    assert len(first) == 6  # every pair became reachable
    assert len(router.update(*graph((0, 1, 1.2), (1, 2, 0.9)))) == 0  # same paths
    gone = router.update(*graph((0, 1, 1.0)))
    assert gone.as_tuples() == {(0, 2, None), (1, 2, None), (2, 0, None), (2, 1, None)}
