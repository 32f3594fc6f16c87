"""Events have one form per kind (netemu.model.events): every event a plan makes, on a
constellation with handovers and faults, carries exactly its kind's fields."""

from __future__ import annotations

from netemu.model import events
from netemu.model.topology import load_topology
from netemu.plan.planner import Planner

from helpers import TOPOLOGIES, train_topology


def _check(event: dict) -> str:
    declared = events.BY_TYPE[event["type"]]
    required, optional = declared.__required_keys__, declared.__optional_keys__
    assert required <= set(event) <= required | optional, event
    return event["type"]


def test_every_event_of_a_plan_has_its_kinds_fields(tmp_path):
    seen = set()
    kepler = load_topology(TOPOLOGIES / "kepler.yaml")
    for epoch in Planner(kepler).run(duration_s=1800, step_s=10):
        seen |= {_check(e) for e in epoch.events}
    train = train_topology(tmp_path, """
faults:
  - {kind: degrade, target: t1-t2, at_s: 10, for_s: 20, loss_percent: 5}
  - {kind: lose, target: t3, at_s: 40}
""")  # fmt: skip
    for epoch in Planner(train).run(duration_s=60, step_s=5):
        seen |= {_check(e) for e in epoch.events}
    assert {"link-up", "link-down", "link-ready", "handover", "fault", "fault-cleared"} <= seen


def test_a_handover_names_both_satellites_and_its_mode():
    e = events.handover("jet1", "t1", "t2", "below-elevation", "break-before-make", 2.0)
    assert e == {"type": "handover", "node": "jet1", "from": "t1", "reason": "below-elevation",
                 "to": "t2", "mode": "break-before-make", "interruption_s": 2.0}  # fmt: skip
    assert _check(events.late(0.61234)) == "late" and events.late(0.61234)["late_s"] == 0.612
