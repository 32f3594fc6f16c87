"""Faults on purpose: the schedule (pure), what the plan makes of it, and each kind on a live
run with real packets (wire shaper): traffic moves to another path, or stops and resumes."""

from __future__ import annotations

import os

import pytest

from netemu.errors import InputError
from netemu.live.emulation import Emulation
from netemu.model.faults import Fault, FaultPlan, parse_cli, random_faults
from netemu.model.schema import RandomFaults
from netemu.plan.planner import Planner
from netemu.testing.network import Network

from helpers import TOPOLOGIES, leftovers, needs_root, run_netemu, train_topology

NAMES = ["t0", "t1", "t2", "gs"]
#: Links acquire in 1 s (not the SDA terminal's 10 s): the tests watch recovery, not waiting.
QUICK = """
link_defaults:
  isl: {acquisition_s: 1, reacquisition_s: 0.5}
  space_ground: {acquisition_s: 1, reacquisition_s: 0.5}
  space_air: {acquisition_s: 1, reacquisition_s: 0.5}
"""


def test_what_a_fault_plan_breaks_and_when():
    plan = FaultPlan(
        [
            Fault("cut", ("t0", "t1"), 10, 5),
            Fault("terminal", ("t2", "t1"), 0, None),
            Fault("lose", ("gs",), 20),
            Fault("degrade", ("t1", "t2"), 0, 30, loss_percent=50, jitter_ms=1),
            Fault("degrade", ("t2", "t1"), 0, 30, loss_percent=50),
        ],
        NAMES,
    )
    at0 = plan.broken(0)
    assert at0.cut == {(1, 2)} and at0.terminals_lost == {2: 1} and not at0.dead
    assert at0.degraded == {(1, 2): (0.75, 1.0)}  # two independent 50% losses
    assert plan.broken(12).cut == {(0, 1), (1, 2)} and plan.broken(15).cut == {(1, 2)}
    assert plan.broken(25).dead == {3}
    assert [e["type"] for e in plan.events(0)] == ["fault"] * 3
    assert plan.events(1) == []
    began = plan.events(12)
    assert began == [{"type": "fault", "fault": "cut", "target": "t0-t1", "for_s": 5}]
    assert plan.events(16) == [{**began[0], "type": "fault-cleared"}]
    plan.add(Fault("cut", ("t1", "t2"), 17.0, 0.5))  # shorter than the epochs: both events
    assert [e["type"] for e in plan.events(18)] == ["fault", "fault-cleared"]
    with pytest.raises(InputError, match="no node named 'nope'"):
        plan.add(Fault("lose", ("nope",), 0))


def test_faults_from_the_command_line():
    assert parse_cli("cut:kep3-kep4@+60/30") == Fault("cut", ("kep3", "kep4"), 60, 30)
    assert parse_cli("lose:kep5@120s") == Fault("lose", ("kep5",), 120, None)
    assert parse_cli("degrade:a-b/10,loss=20,jitter=2") == Fault(
        "degrade", ("a", "b"), 0, 10, loss_percent=20, jitter_ms=2
    )
    for bad, problem in [
        ("cut:a", "names a link as NODE-NODE"),
        ("reboot:a-b", "names one node"),
        ("melt:a", "unknown fault kind 'melt'"),
        ("cut:a-b@later", "write KIND:TARGET"),
        ("degrade:a-b,color=3", "unknown parameter 'color'"),
    ]:
        with pytest.raises(InputError, match=problem):
            parse_cli(bad)


def test_random_faults_are_reproducible():
    spec = RandomFaults(seed=7, count=20, within_s=3600, for_s=(10, 20))
    links = [("t0", "t1"), ("t1", "t2")]
    one, two = random_faults(spec, NAMES[:3], links), random_faults(spec, NAMES[:3], links)
    assert one == two and len(one) == 20
    assert one != random_faults(spec.model_copy(update={"seed": 8}), NAMES[:3], links)
    assert all(0 <= f.at_s <= 3600 and 10 <= f.for_s <= 20 for f in one)
    assert {f.kind for f in one} <= {"cut", "terminal", "reboot", "degrade"}


def test_the_plan_routes_around_faults_from_the_file(tmp_path):
    topo = train_topology(tmp_path, """
faults:
  - {kind: cut, target: t1-t2, at_s: 10, for_s: 20}
  - {kind: lose, target: t3, at_s: 40}
""")  # fmt: skip
    epochs = list(Planner(topo).run(duration_s=60, step_s=5))
    names = [n.name for n in topo.nodes]
    up = [{(names[a], names[b]) for a, b in zip(e.up.a, e.up.b, strict=True)} for e in epochs]
    assert ("t1", "t2") in up[0] and all(("t1", "t2") not in u for u in up[2:6])
    assert ("t0", "t2") in up[2] and ("t1", "t3") in up[2]  # freed terminals link up anew
    assert all(not {"t3"} & {n for pair in u for n in pair} for u in up[8:])
    events = [(i, e) for i, ep in enumerate(epochs) for e in ep.events]
    cut = {"fault": "cut", "target": "t1-t2", "for_s": 20}
    assert (2, {"type": "fault", **cut}) in events and (
        6,
        {"type": "fault-cleared", **cut},
    ) in events
    handover = next(e for _, e in events if e["type"] == "handover")
    assert handover["node"] == "gs_north" and handover["reason"] == "fault: node down"


def test_bad_fault_entries_in_a_file(tmp_path):
    text = (
        (TOPOLOGIES / "train.yaml")
        .read_text()
        .replace("file: train.tle", f"file: {TOPOLOGIES}/train.tle")
    )
    for fault, problem in [
        ("{kind: cut, target: t1-t7}", "faults[0].target: unknown node 't7'"),
        ("{kind: reboot, target: t1-t2}", "faults[0].target: a reboot fault names one node"),
        ("{kind: melt, target: t1}", "faults[0].kind:"),
        ("{kind: cut, target: t1-t2, for_s: -1}", "faults[0].for_s:"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(text + f"\nfaults:\n  - {fault}\n")
        result = run_netemu("plan", path, "--duration", "10")
        assert result.returncode == 2 and problem in result.stderr, (fault, result.stderr)
        assert len(result.stderr.splitlines()) == 1


# -- live ------------------------------------------------------------------------------


def live(tmp_path, run: str, **options) -> Emulation:
    topo = train_topology(tmp_path, QUICK)
    emu = Emulation(topo, shaper="wire", step_s=0.2, run_name=run, **options)
    emu.start()
    emu.start_controller()
    return emu


@needs_root
def test_a_cut_link_moves_traffic_to_another_path(tmp_path):
    emu = live(tmp_path, "fcut")
    try:
        net = Network(emu)
        before = net.route("gs_south", "gs_north")
        assert before[2:4] == ["t1", "t2"]
        emu.inject("cut", "t1-t2", for_s=30)

        def moved() -> bool:
            r = net.route("gs_south", "gs_north")
            return r is not None and "t1-t2" not in "-".join(r)

        stream = net.stream_until("gs_south", "gs_north", moved, timeout_s=10)
        after = net.route("gs_south", "gs_north")
        assert emu.link_state("t1", "t2") == "down"
        assert stream.received > 0 and stream.longest_gap_s < 1.5  # acquisition 1 s
        got = net.one_way_delay("gs_south", "gs_north", count=50)
        assert got.received == 50
        cut = [e for e in emu.events if e["type"] == "fault"]
        assert cut and cut[0]["target"] == "t1-t2"
    finally:
        emu.stop()
    assert after != before and leftovers("fcut") == []


@needs_root
def test_a_failed_terminal_drops_its_link_and_the_node_links_up_with_another(tmp_path):
    emu = live(tmp_path, "fterm")
    try:
        held = {b for (a, b) in [("t1", p) for p in ("t0", "t2", "t3")]
                if emu.link_state("t1", b) == "up"}  # fmt: skip
        assert "t2" in held and "t3" not in held
        emu.inject("terminal", "t1-t2", for_s=30)
        assert emu.wait_until(lambda: emu.link_state("t1", "t3") == "up", timeout=5)
        assert emu.link_state("t1", "t2") == "down"
        Network(emu).assert_reachable("gs_south", "gs_north")
    finally:
        emu.stop()


@needs_root
def test_a_lost_satellite_is_routed_around_for_good(tmp_path):
    emu = live(tmp_path, "flose")
    try:
        net = Network(emu)
        emu.inject("lose", "t2")

        def around() -> bool:
            r = net.route("gs_south", "gs_north")
            return r is not None and "t2" not in r

        stream = net.stream_until("gs_south", "gs_north", around, timeout_s=10)
        assert stream.received > 0
        assert all(emu.link_state("t2", x) == "down" for x in ("t0", "t1", "t3", "jet1"))
        assert net.one_way_delay("gs_south", "gs_north", count=30).received == 30
        assert net.one_way_delay("gs_south", "t2", count=10).received == 0
        net.advance(3)
        assert all(emu.link_state("t2", x) == "down" for x in ("t0", "t1", "t3"))
    finally:
        emu.stop()


@needs_root
def test_a_rebooted_satellite_goes_silent_then_answers_again(tmp_path):
    emu = live(tmp_path, "fboot")
    try:
        net = Network(emu)
        assert net.one_way_delay("t1", "t2", count=10).received == 10
        emu.inject("reboot", "t2", for_s=2.0)

        def back() -> bool:
            cleared = any(e["type"] == "fault-cleared" for e in emu.events)
            return cleared and emu.link_state("t1", "t2") == "up"

        stream = net.stream_until("t1", "t2", back, timeout_s=10)
        # Down for the reboot (2 s), then the links acquire again (1 s).
        assert 2.0 <= stream.longest_gap_s <= 4.0, stream.longest_gap_s
        assert net.one_way_delay("t1", "t2", count=20).received == 20
        kinds = [e["type"] for e in emu.events if e.get("target") == "t2"]
        assert kinds == ["fault", "fault-cleared"]
    finally:
        emu.stop()


@needs_root
def test_a_degraded_link_loses_packets_for_a_while(tmp_path):
    emu = live(tmp_path, "fdeg", faults=[Fault("degrade", ("t0", "t1"), 0.0, 600, 30.0, 0.0)])
    try:
        net = Network(emu)
        degraded = net.loss("t0", "t1", count=1500, interval_s=0.002)
        emu.inject("degrade", "t0-t1", for_s=0.5)  # another, brief: shows the clearing path
        assert emu.wait_until(lambda: any(e["type"] == "fault-cleared" for e in emu.events), 5)
        assert 0.30 - 0.055 <= degraded.loss <= 0.30 + 0.055, degraded.loss
        types = [e["type"] for e in emu.events if e.get("fault") == "degrade"]
        assert types == ["fault", "fault", "fault-cleared"]  # the first from the first epoch
    finally:
        emu.stop()
    assert leftovers("fdeg") == []


@needs_root
def test_a_rebooted_node_takes_its_services_down_and_back_up(tmp_path):
    from netemu.services.deploy import Deployment

    emu = live(tmp_path, "fsvc")
    try:
        with Deployment(emu, tmp_path / "res", "process") as dep:
            consumer = dep.consumer("t2")
            pid = int(dep.state(consumer)["pid"])
            emu.inject("reboot", "t2", for_s=2.0)

            def stopped() -> bool:
                return dep.state(consumer)["state"] == "stopped" and not os.path.exists(
                    f"/proc/{pid}"
                )

            assert emu.wait_until(stopped, timeout=5)

            def restarted() -> bool:
                st = dep.state(consumer)
                return st["state"] == "running" and st["pid"] != pid

            assert emu.wait_until(restarted, timeout=8)
            said = [e["what"] for e in emu.events if e["type"] == "container"]
            assert said[-3:] == ["started", "stopped", "started"], said
    finally:
        emu.stop()
    assert leftovers("fsvc") == []
