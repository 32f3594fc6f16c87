"""netemu plan: the JSON line format, delays, events and the human schedule."""

import itertools
import json
from collections import Counter
from datetime import datetime, timedelta

import pytest

from netemu.model.constants import SPEED_OF_LIGHT_KM_S
from netemu.model.topology import load_topology
from netemu.plan.planner import Planner

from helpers import REPO, run_netemu


def plan_json(*args):
    result = run_netemu("plan", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_kepler_plan_json_lines():
    epochs = plan_json("topologies/kepler.yaml", "--duration", "600", "--step", "10")
    assert len(epochs) == 61
    times = [parse_time(e["time"]) for e in epochs]
    assert times[0] == datetime.fromisoformat("2026-06-21T03:00:00+00:00")
    assert all(b - a == timedelta(seconds=10) for a, b in itertools.pairwise(times))
    for epoch in epochs:
        assert set(epoch) == {"netemu_version", "format", "time", "links", "events"}
        for link in epoch["links"]:
            assert set(link) == {
                "a",
                "b",
                "kind",
                "distance_km",
                "delay_ms",
                "up",
                "acquiring",
                "rx_power_dbm",
                "ber",
                "loss",
                "fade_probability",
                "jitter_ms",
                "state",
            }
            state = ("acquiring" if link["acquiring"] else "up") if link["up"] else "down"
            assert link["state"] == state
            assert link["kind"] in {"isl", "space-air", "space-ground"}
            want = link["distance_km"] / SPEED_OF_LIGHT_KM_S * 1000
            assert link["delay_ms"] == pytest.approx(want, abs=1e-6)  # 1 ns
        up = [link for link in epoch["links"] if link["up"]]
        # The ten-satellite ring is always closed, at ~4,300 km per hop.
        isl = [link for link in up if link["kind"] == "isl"]
        assert len(isl) == 10
        assert all(4250 < link["distance_km"] < 4350 for link in isl)
        # No satellite holds more links than its 4 terminals, no ground node more than 1.
        use = Counter(n for link in up for n in (link["a"], link["b"]))
        assert all(v <= (4 if k.startswith("kep") else 1) for k, v in use.items())
        # The patrol aircraft has priority and is covered throughout at 5 deg.
        assert any(link["b"] == "patrol1" for link in up)
    handovers = [e for epoch in epochs for e in epoch["events"] if e["type"] == "handover"]
    assert handovers and all(h["node"] in {"patrol1", "svalbard", "c2_bodo"} for h in handovers)


def test_events_and_down_links_agree():
    epochs = plan_json("topologies/train.yaml", "--duration", "900", "--step", "5")
    kinds = Counter(e["type"] for epoch in epochs for e in epoch["events"])
    assert kinds["handover"] >= 4 and kinds["link-down"] >= 4 and kinds["link-up"] >= 4
    previous = None
    for epoch in epochs:
        up = {(x["a"], x["b"]) for x in epoch["links"] if x["up"]}
        down = {(x["a"], x["b"]) for x in epoch["links"] if not x["up"]}
        gone = {(e["a"], e["b"]) for e in epoch["events"] if e["type"] == "link-down"}
        came = {(e["a"], e["b"]) for e in epoch["events"] if e["type"] == "link-up"}
        assert down == gone
        if previous is not None:
            assert gone == previous - up and came == up - previous
        for e in epoch["events"]:
            if e["type"] == "link-down":
                assert e["reason"] in {"below-elevation", "out-of-range", "earth-blocked"}
            if e["type"] == "handover":
                assert (e["from"], e["node"]) in gone
                assert e["mode"] == "break-before-make"  # one terminal per ground node
                assert (e["to"], e["node"]) in came
        previous = up


def test_start_option_overrides_the_file():
    epochs = plan_json(
        "topologies/kepler.yaml", "--start", "2026-06-22T12:00:00Z", "--duration", "2"
    )
    assert [e["time"] for e in epochs] == [
        "2026-06-22T12:00:00.000Z",
        "2026-06-22T12:00:01.000Z",
        "2026-06-22T12:00:02.000Z",
    ]


def test_human_schedule():
    result = run_netemu("plan", "topologies/kepler.yaml", "--duration", "600", "--step", "10")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Link schedule" in out and "kep0-kep1" in out and "Handovers" in out
    assert "patrol1: kep2 -> kep1" in out


def test_plan_in_chunks_matches_one_pass():
    """Epochs are computed in vectorised chunks; chunk edges must not change results."""
    topo = load_topology("topologies/train.yaml")
    a = [e.to_json(topo) for e in Planner(topo).run(duration_s=600, step_s=1)]
    from netemu.plan import planner as plan_module

    old = plan_module._CHUNK
    plan_module._CHUNK = 7
    try:
        b = [e.to_json(topo) for e in Planner(topo).run(duration_s=600, step_s=1)]
    finally:
        plan_module._CHUNK = old
    assert a == b


def test_aircraft_handover_sequence_and_interruptions():
    """jet1 flies under the train: t2, then the trailing t1, then t0 take over.

    Hand check: the train flies north-east with t3 leading, so satellites rise
    over the aircraft in the order t3, t2, t1, t0; at the start t2 is highest.
    Each handover happens when the held satellite sinks below the 15 deg mask
    (checked with Skyfield from the aircraft's position), and traffic stops
    for the new link's acquisition time (10 s, never held before).
    """
    from skyfield.api import EarthSatellite, wgs84

    from netemu.model.skydata import timescale

    epochs = plan_json("topologies/train.yaml", "--duration", "900", "--step", "5")
    handovers = [
        (parse_time(ep["time"]), e)
        for ep in epochs
        for e in ep["events"]
        if e["type"] == "handover" and e["node"] == "jet1"
    ]
    assert [(e["from"], e["to"]) for _, e in handovers] == [("t2", "t1"), ("t1", "t0")]
    assert all(
        e["reason"] == "below-elevation" and e["interruption_s"] == 10.0 for _, e in handovers
    )
    topo = load_topology("topologies/train.yaml")
    flight = topo.flights[0]
    ts = timescale()
    lines = (REPO / "topologies/train.tle").read_text().splitlines()
    sats = {f"t{i}": EarthSatellite(lines[3 * i + 1], lines[3 * i + 2], ts=ts) for i in range(4)}
    for when, e in handovers:
        lat, lon, alt = flight.position((when - flight.departure).total_seconds())
        here = wgs84.latlon(lat[0], lon[0], elevation_m=alt[0] * 1000)
        t = ts.from_datetime(when)
        old = (sats[e["from"]] - here).at(t).altaz()[0].degrees
        new = (sats[e["to"]] - here).at(t).altaz()[0].degrees
        before = (sats[e["from"]] - here).at(ts.from_datetime(when - timedelta(seconds=5)))
        assert old < 15 <= before.altaz()[0].degrees  # it just set
        assert new >= 15


def test_acquisition_window_in_the_plan():
    epochs = plan_json("topologies/train.yaml", "--duration", "900", "--step", "5")
    state = {parse_time(ep["time"]): {(x["a"], x["b"]): x for x in ep["links"]} for ep in epochs}
    up_at = next(t for t, links in sorted(state.items()) if ("t2", "gs_north") in links)
    for dt, acquiring in ((0, True), (5, True), (10, False)):
        assert state[up_at + timedelta(seconds=dt)][("t2", "gs_north")]["acquiring"] is acquiring


def test_make_before_break_with_two_terminals(write_topology):
    text = (
        (REPO / "topologies/train.yaml")
        .read_text()
        .replace("file: train.tle", f"file: {REPO / 'topologies/train.tle'}")
        .replace(
            "{name: gs_north, lat_deg: 12.1, lon_deg: 71.9, altitude_km: 0.0}",
            "{name: gs_north, lat_deg: 12.1, lon_deg: 71.9, altitude_km: 0.0,"
            " terminals: {count: 2}}",
        )
    )
    topo = load_topology(write_topology(text))
    events = [
        e
        for ep in Planner(topo).run(duration_s=900, step_s=5)
        for e in ep.events
        if e["type"] == "handover" and e["node"] == "gs_north"
    ]
    assert events and all(e["mode"] == "make-before-break" for e in events)
    assert all(e["interruption_s"] == 0.0 for e in events)
