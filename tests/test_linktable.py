"""The live link table (netemu.live.linktable), without root: rows as links are made,
an epoch's geometry and budgets, carrying states, shape changes only where something
changed, and what routes and the run log read from it."""

from __future__ import annotations

import numpy as np
import pytest

from netemu.live.linktable import LinkTable
from netemu.model.topology import LinkParams
from netemu.plan.geometry import delay_ms
from netemu.plan.links import LinkSet
from netemu.shaping import Direction

ISL = LinkParams(data_rate_gbps=2.5, max_range_km=5000, acquisition_s=2, reacquisition_s=1,
                 loss_percent=10)  # fmt: skip
NAMES = ["a", "b", "c"]


def directions(a: int, b: int) -> tuple[Direction, Direction]:
    return (Direction((a, b), f"ns{a}", f"to{b}", f"ns{b}", f"to{a}"),
            Direction((a, b), f"ns{b}", f"to{a}", f"ns{a}", f"to{b}"))  # fmt: skip


def up(*links: tuple[int, int, float]) -> LinkSet:
    a, b, d = (np.array(x) for x in zip(*links, strict=True)) if links else ([], [], [])
    n = len(links)
    return LinkSet(np.array(a, int), np.array(b, int), np.zeros(n, int), np.array(d, float),
                   np.full(n, np.nan))  # fmt: skip


def budget(n: int, loss_ab: float = 0.0) -> dict[str, np.ndarray]:
    return {"loss_ab": np.full(n, loss_ab), "loss_ba": np.zeros(n),
            "fade_ab": np.zeros(n), "fade_ba": np.zeros(n)}  # fmt: skip


def table() -> LinkTable:
    t = LinkTable()
    t.add([((0, 1), 0, ISL, directions(0, 1)), ((1, 2), 0, ISL, directions(1, 2))])
    return t


def test_links_made_start_down_and_missing_ones_are_named():
    t = table()
    assert len(t) == 2 and (0, 1) in t and (0, 2) not in t
    assert t.state_of((0, 1)) == "down" and t.state_of((0, 2)) == "down"
    assert t.missing(up((0, 1, 1000.0), (0, 2, 2000.0))) == [((0, 2), 0)]


def test_an_epoch_shapes_what_carries_and_blocks_what_acquires():
    t = table()
    t.update(up((0, 1, 1000.0), (1, 2, 3000.0)), budget(2, loss_ab=0.5))
    t.set_carrying({(0, 1)})
    changes = t.changes({})
    assert len(changes) == 4  # everything is new
    fwd, bwd = directions(0, 1)
    assert changes[fwd].delay_ms == pytest.approx(delay_ms(1000.0))
    assert changes[fwd].loss == pytest.approx(1 - 0.9 * 0.5)
    assert changes[bwd].loss == pytest.approx(0.1)
    assert not changes[fwd].blocked and changes[directions(1, 2)[0]].blocked
    assert [t.state_of(k) for k in [(0, 1), (1, 2)]] == ["up", "acquiring"]
    a, b, d = t.carrying()
    assert a.tolist() == [0] and b.tolist() == [1] and d == pytest.approx([delay_ms(1000.0)])


def test_only_changed_directions_are_shaped_again():
    t = table()
    t.update(up((0, 1, 1000.0), (1, 2, 3000.0)), budget(2))
    t.set_carrying({(0, 1), (1, 2)})
    t.changes({})
    assert t.changes({}) == {}  # nothing moved
    t.update(up((0, 1, 1000.0001), (1, 2, 3300.0)), budget(2))  # 0.3 ns, and 1 ms
    t.set_carrying({(0, 1), (1, 2)})
    assert set(t.changes({})) == set(directions(1, 2))
    t.update(up((0, 1, 1000.0)), budget(1))  # 1-2 went down
    t.set_carrying({(0, 1)})
    changed = t.changes({(0, 1): (0.25, 2.0)})  # and a fault degrades 0-1
    assert set(changed) == {*directions(0, 1), *directions(1, 2)}
    assert changed[directions(1, 2)[0]].blocked
    assert changed[directions(0, 1)[0]].jitter_ms == 2.0
    assert t.state_of((1, 2)) == "down" and t.delay_ms((1, 2)) == 0.0


def test_views_and_log_columns_report_what_the_shapers_were_given():
    t = table()
    t.update(up((0, 1, 1000.0)), budget(1, loss_ab=0.5))
    t.set_carrying({(0, 1)})
    t.changes({})
    view = t.view((0, 1), NAMES)
    assert (view.a, view.b, view.kind, view.state) == ("a", "b", "isl", "up")
    assert view.delay_ms == pytest.approx(delay_ms(1000.0)) and view.distance_km == 1000.0
    assert view.shapes[0].loss == pytest.approx(0.55) and view.shapes[1].loss == pytest.approx(0.1)
    assert view.forward == directions(0, 1)[0]
    log = t.log_columns()
    assert log["state"] == ["up", "down"] and log["kind"] == ["isl", "isl"]
    assert log["loss"] == pytest.approx([0.55, 0.1])
