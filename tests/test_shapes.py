"""Link shapes computed once (netemu.plan.shapes): the composition of loss, fades and
jitter, and the plan reporting what the live shapers apply (the run-log side of
that agreement is tests/test_live.py::test_the_run_log_reports_the_plans_shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from netemu.model.topology import LinkParams
from netemu.plan.geometry import delay_ms
from netemu.plan.planner import Planner
from netemu.plan.shapes import Applied, fault_arrays, link_shapes, total_loss

from helpers import train_topology

ISL = LinkParams(data_rate_gbps=2.5, max_range_km=5000, acquisition_s=2, reacquisition_s=1,
                 loss_percent=10, jitter_ms=0.5, mean_fade_ms=4)  # fmt: skip


def test_losses_compose_as_independent_causes_per_direction():
    budget = {"loss_ab": np.array([0.2]), "loss_ba": np.array([0.0]),
              "fade_ab": np.array([0.0]), "fade_ba": np.array([0.1])}  # fmt: skip
    s = link_shapes(np.array([4000.0]), [ISL], budget, np.array([0.5]), np.array([2.0]))
    assert s["loss"][0] == pytest.approx([1 - 0.9 * 0.8 * 0.5, 1 - 0.9 * 0.5])
    assert s["fade_probability"][0].tolist() == [0.0, 0.1]
    assert s["fade_ms"][0].tolist() == [0.0, 4.0]  # no fades a->b: no fade length either
    assert s["jitter_ms"][0].tolist() == [2.5, 2.5]
    assert s["delay_ms"][0] == pytest.approx([delay_ms(4000.0)] * 2)
    assert s["rate_mbit"][0].tolist() == [2500.0, 2500.0]
    assert s["blocked"].dtype == bool and not s["blocked"].any()
    # What a receiver counts: fades lose everything, the rest loses "loss".
    assert total_loss(s)[0] == pytest.approx([0.64, 0.1 + 0.9 * 0.55])


def test_faults_apply_to_their_links_only():
    loss, jitter = fault_arrays([(0, 1), (1, 2), (2, 3)], {(1, 2): (0.25, 3.0)})
    assert loss.tolist() == [0, 0.25, 0] and jitter.tolist() == [0, 3.0, 0]
    assert [x.tolist() for x in fault_arrays([(0, 1)], {})] == [[0.0], [0.0]]


def test_the_plan_reports_configured_and_fault_loss(tmp_path):
    """`netemu plan --json` says what a link loses as the shapers apply it: its
    loss_percent and a degrade fault's, not the link budget's alone."""
    topo = train_topology(tmp_path, """
link_defaults:
  isl: {loss_percent: 10, jitter_ms: 0.5}
faults:
  - {kind: degrade, target: t1-t2, at_s: 5, for_s: 10, loss_percent: 50, jitter_ms: 2}
""")  # fmt: skip
    names = [n.name for n in topo.nodes]
    for epoch in Planner(topo).run(duration_s=20, step_s=5):
        links = {(x["a"], x["b"]): x for x in epoch.to_json(topo)["links"] if x["up"]}
        isl = links[("t1", "t2")]
        degraded = 5 <= (epoch.time - topo.start).total_seconds() < 15
        i = epoch.up.keys().index((names.index("t1"), names.index("t2")))
        budget = max(epoch.budget["loss_ab"][i], epoch.budget["loss_ba"][i])
        expected = 1 - 0.9 * (1 - budget) * (0.5 if degraded else 1)
        assert isl["loss"] == pytest.approx(expected, rel=1e-3), epoch.time
        assert isl["jitter_ms"] == (2.5 if degraded else 0.5)
        assert links[("t0", "t1")]["loss"] == pytest.approx(0.1, abs=1e-3)


def _table(delay_ms: list[float], loss: float = 0.0, blocked: bool = False) -> dict:
    n = len(delay_ms)
    budget = {k: np.full(n, loss) for k in ("loss_ab", "loss_ba")} | {
        k: np.zeros(n) for k in ("fade_ab", "fade_ba")
    }
    distance = np.array(delay_ms) / delay_ms_per_km()
    return link_shapes(distance, [ISL] * n, budget, blocked=np.full(n, blocked))


def delay_ms_per_km() -> float:
    return float(delay_ms(1.0))


def test_only_directions_that_changed_are_applied_again():
    applied = Applied()
    i, _ = applied.update(_table([10.0]))
    assert i.tolist() == [0, 0]  # a new link: both directions
    assert applied.update(_table([10.0005]))[0].size == 0  # half a microsecond: no change
    assert applied.update(_table([10.002]))[0].tolist() == [0, 0]
    assert applied.update(_table([10.002], loss=0.01))[0].tolist() == [0, 0]
    assert applied.update(_table([10.002], loss=0.01, blocked=True))[0].tolist() == [0, 0]
    i, j = applied.update(_table([10.002, 5.0], loss=0.01, blocked=True))  # a second link
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(1, 0), (1, 1)]
    # What was applied is what the table holds (the run log reports it).
    assert applied.table["delay_ms"][0, 0] == pytest.approx(10.002)
    assert Applied().update(_table([]))[0].size == 0
