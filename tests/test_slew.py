"""Terminal slew-rate limits: links that turn faster than a terminal can follow."""

import math

import numpy as np
import pytest

from netemu.model.topology import load_topology
from netemu.plan.geometry import angular_rate_deg_s
from netemu.plan.planner import Planner

from helpers import train_access_yaml


def test_zenith_pass_rate_is_v_over_h():
    """Notes: a zenith pass at 550 km needs 0.79 deg/s from the ground."""
    r = 6378.137
    v = math.sqrt(398_600.8 / (r + 550))  # circular orbital speed, km/s
    ground = np.array([r, 0.0, 0.0])
    sat = np.array([r + 550, 0.0, 0.0])
    rate = angular_rate_deg_s(ground, sat, np.zeros(3), np.array([0.0, v, 0.0]))
    assert rate == pytest.approx(math.degrees(v / 550))
    assert rate == pytest.approx(0.79, abs=0.01)


TRAIN = train_access_yaml("2026-06-21T03:05:00Z")


def reasons(write_topology, limit: float) -> list[str]:
    topo = load_topology(
        write_topology(TRAIN + f"link_defaults:\n  space_ground: {{max_slew_deg_s: {limit}}}\n")
    )
    return [
        e["reason"]
        for ep in Planner(topo).run(duration_s=900, step_s=5)
        for e in ep.events
        if e["type"] == "link-down"
    ]


def test_a_slow_ground_terminal_loses_satellites_near_culmination(write_topology):
    slow = reasons(write_topology, 0.3)
    assert "slew-rate" in slow
    fast = reasons(write_topology, 5.0)
    assert "slew-rate" not in fast and fast  # links still end, by setting
