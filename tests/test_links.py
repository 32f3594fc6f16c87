"""Link policies: +Grid, nearest-k, terminal budgets, cut-off latitude, access selection."""

import numpy as np
import pytest

from netemu.model.topology import load_topology
from netemu.plan.geometry import Geometry, epochs
from netemu.plan.links import ISL, SPACE_GROUND, LinkModel, plus_grid_pairs
from netemu.plan.planner import Planner

from helpers import TOPOLOGIES


def walker(write_topology, planes=12, per_plane=10, terminals=4, extra=""):
    return load_topology(
        write_topology(
            f"""
            name: w
            start: 2026-06-21T00:00:00Z
            satellites:
              - walker: {{altitude_km: 1000, inclination_deg: 60, planes: {planes},
                          per_plane: {per_plane}, phasing: 1}}
                terminals: {{count: {terminals}}}
            {extra}
            """
        )
    )


def links_at(topo, seconds=0.0):
    pos = Geometry(topo).positions_km(epochs(topo.start, seconds, max(seconds, 1)))[-1]
    return LinkModel(topo).evaluate(pos), pos


def test_plus_grid_pairs_every_satellite_four_times(write_topology):
    topo = walker(write_topology)
    a, b, cross = plus_grid_pairs(topo)
    degree = np.bincount(np.concatenate([a, b]), minlength=120)
    assert (degree == 4).all()
    assert len(a) == 240 and cross.sum() == 120
    # The seam joins the last plane to the first, F slots ahead.
    last_plane_slot0 = 11 * 10
    assert (min(last_plane_slot0, 1), max(last_plane_slot0, 1)) in set(zip(a, b, strict=True))


def test_plus_grid_all_up_when_in_range(write_topology):
    topo = walker(write_topology)
    up, _ = links_at(topo)
    assert len(up) == 240 and (up.kind == ISL).all()


def test_terminal_count_is_a_hard_limit(write_topology):
    topo = walker(write_topology, terminals=2)
    up, _ = links_at(topo)
    degree = np.bincount(np.concatenate([up.a, up.b]), minlength=120)
    assert degree.max() == 2
    # In-plane links come first: every ring is complete.
    same_plane = up.a // 10 == up.b // 10
    assert same_plane.all() and len(up) == 120


def test_cross_plane_cutoff_latitude(write_topology):
    topo = walker(write_topology, extra="isl: {cross_plane_cutoff_lat_deg: 30}")
    planner = Planner(topo)
    pos = Geometry(topo).positions_km(epochs(topo.start, 0, 1))[0]
    up = planner.links.evaluate(pos)
    lat = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    cross = up.a // 10 != up.b // 10
    assert cross.any()
    assert (np.abs(lat[up.a[cross]]) <= 30).all() and (np.abs(lat[up.b[cross]]) <= 30).all()
    assert (~cross).sum() == 120  # in-plane links are unaffected
    high = np.flatnonzero(np.abs(lat[:120]) > 30)
    assert len(high)  # some satellites are above the cut-off at this epoch


@pytest.mark.parametrize(
    ("per_plane", "reason"),
    [
        (7, "out-of-range"),  # 51 deg apart at 1000 km: 6,400 km chord, clear of the Earth
        (5, "earth-blocked"),  # 72 deg apart: the chord dips to 5,969 km from the centre
    ],
)
def test_infeasible_in_plane_isls_are_down_with_a_reason(write_topology, per_plane, reason):
    topo = walker(write_topology, planes=3, per_plane=per_plane)
    up, pos = links_at(topo)
    assert not (up.a // per_plane == up.b // per_plane).any()
    assert LinkModel(topo).diagnose(pos, 0, 1, ISL) == reason


def test_nearest_k_links_each_satellite_to_its_nearest(write_topology):
    topo = walker(write_topology, extra="isl: {policy: nearest-k, k: 2}")
    up, pos = links_at(topo)
    degree = np.bincount(np.concatenate([up.a, up.b]), minlength=120)
    assert degree.max() <= 2 and len(up) >= 100
    d = np.linalg.norm(pos[:120, None] - pos[None, :120], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)
    keys = set(up.keys())
    # Each satellite's nearest partner is linked unless that partner is full.
    missing = [i for i in range(120) if (min(i, nearest[i]), max(i, nearest[i])) not in keys]
    assert all(degree[i] == 2 or degree[nearest[i]] == 2 for i in missing)


ACCESS = """
name: acc
start: 2026-06-21T03:05:00Z
satellites:
  - tle: {{file: {tle}}}
    names: "t{{n}}"
    terminals: {{count: {count}}}
ground_stations:
  - {{name: gs, lat_deg: 12.1, lon_deg: 71.9, altitude_km: 0.0}}
isl: {{policy: none}}
access: {{selection: {rule}}}
"""


@pytest.mark.parametrize("rule", ["highest-elevation", "nearest"])
def test_access_selection_rule(write_topology, rule):
    topo = load_topology(
        write_topology(ACCESS.format(tle=TOPOLOGIES / "train.tle", count=4, rule=rule))
    )
    model = LinkModel(topo)
    choices = 0
    for pos in Geometry(topo).positions_km(epochs(topo.start, 900, 10)):
        up = model.evaluate(pos)  # a fresh choice at every epoch
        elev, rng, ok = model._access_geometry(pos)
        visible = np.flatnonzero(ok[0])
        assert len(up) == min(len(visible), 1) and (up.kind == SPACE_GROUND).all()
        if len(visible) >= 2:  # a real choice
            choices += 1
            score = -elev[0, visible] if rule == "highest-elevation" else rng[0, visible]
            assert up.a[0] == visible[np.argmin(score)]
    assert choices >= 3


def test_access_link_held_until_it_drops_below_the_mask(write_topology):
    """Without a better-satellite switch rule, a held satellite is kept while feasible."""
    topo = load_topology(
        write_topology(ACCESS.format(tle=TOPOLOGIES / "train.tle", count=1, rule="nearest"))
    )
    geometry, model = Geometry(topo), LinkModel(topo)
    pos = geometry.positions_km(epochs(topo.start, 900, 5))
    held, handovers = None, 0
    for p in pos:
        up = model.evaluate(p, held)
        _elev, _rng, ok = model._access_geometry(p)
        if held is not None and len(held):
            before = held.a[0]
            if ok[0, before]:
                assert up.a.tolist() == [before]  # kept although others may be nearer
            elif len(up):
                handovers += 1
                assert model.diagnose(p, before, up.b[0], SPACE_GROUND) == "below-elevation"
        held = up
    assert handovers >= 2
