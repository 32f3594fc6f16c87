"""Partitioning over machines: by orbital plane, shells kept whole where the balance
allows, ground and air nodes with their links, and `netemu plan --machines`."""

import json

import numpy as np

from netemu.model.topology import LinkKind, load_topology
from netemu.plan.links import KINDS
from netemu.plan.partition import _spectral_order, partition, summary
from netemu.plan.planner import Planner

from helpers import REPO, run_netemu


def planned(topo, duration=120, step=10):
    link_epochs, isl = {}, {}
    for epoch in Planner(topo).run(topo.start, duration, step):
        for key, kind in zip(epoch.up.keys(), epoch.up.kind.tolist(), strict=True):
            link_epochs[key] = link_epochs.get(key, 0) + 1
            isl[key] = KINDS[kind] is LinkKind.ISL
    return link_epochs, isl


def test_shell_1_on_four_machines_is_cut_between_planes():
    topo = load_topology(REPO / "topologies/starlink-shell1.yaml")
    link_epochs, isl = planned(topo)
    part = partition(topo, 4, link_epochs)
    result = summary(topo, part, link_epochs, isl)
    shell = topo.shells[0]
    planes = part.machine[: shell.planes * shell.per_plane].reshape(shell.planes, shell.per_plane)
    assert (planes == planes[:, :1]).all()  # no plane is split
    assert [r["satellites"] for r in result["machines"]] == [396] * 4  # 18 planes each
    assert result["isls_across"] == 4 * 22  # the cross-plane links at the 4 arcs' ends
    # Every ground station and aircraft is where its links spend the most epochs.
    for node in [*topo.ground_stations, *topo.aircraft]:
        per_machine = np.zeros(4)
        for (a, b), epochs in link_epochs.items():
            if node.index in (a, b):
                per_machine[part.machine[b if a == node.index else a]] += epochs
        assert per_machine[part.machine[node.index]] == per_machine.max()


def test_two_shells_on_two_machines_are_cut_at_the_shell_edge(write_topology):
    topo = load_topology(
        write_topology(
            """
            name: two_shells
            start: 2026-06-21T03:00:00Z
            satellites:
              - walker: {altitude_km: 550, inclination_deg: 53, planes: 6, per_plane: 3,
                         phasing: 1}
                names: "a{plane}_{slot}"
                terminals: {count: 4}
              - walker: {altitude_km: 1100, inclination_deg: 70, planes: 5, per_plane: 3,
                         phasing: 1}
                names: "b{plane}_{slot}"
                terminals: {count: 4}
            link_defaults:
              isl: {data_rate_gbps: 1, max_range_km: 9000}
            isl: {policy: plus-grid}
            """
        )
    )
    link_epochs, isl = planned(topo, 60, 10)
    part = partition(topo, 2, link_epochs)
    # 18 and 15 satellites: the shells' edge is 1.5 from an equal share, within 10%.
    assert part.machine[:18].tolist() == [0] * 18 and part.machine[18:33].tolist() == [1] * 15
    assert summary(topo, part, link_epochs, isl)["isls_across"] == 0


def test_one_plane_on_three_machines_is_cut_into_three_arcs():
    topo = load_topology(REPO / "topologies/kepler.yaml")
    link_epochs, isl = planned(topo)
    part = partition(topo, 3, link_epochs)
    result = summary(topo, part, link_epochs, isl)
    assert sorted(r["satellites"] for r in result["machines"]) == [3, 3, 4]
    assert result["isls"] == 10 and result["isls_across"] == 3  # a ring cut three times


def test_other_satellites_are_ordered_so_that_linked_ones_are_near():
    """A ring of 12 satellites numbered at random: cut in two halves of the spectral
    order, only the two links where the halves meet cross."""
    rng = np.random.default_rng(3)
    ids = rng.permutation(np.arange(100, 112))
    ring = {(int(min(x, y)), int(max(x, y))): 5 for x, y in zip(ids, np.roll(ids, 1), strict=True)}
    order = _spectral_order(np.sort(ids), ring).tolist()
    half = set(order[:6])
    assert sum((a in half) != (b in half) for a, b in ring) == 2


def test_netemu_plan_machines_prints_the_partition_and_refuses_bad_counts():
    result = run_netemu("plan", "topologies/kepler.yaml", "--machines", "3", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["format"] == "netemu-partition/1"
    assert len(out["machines"]) == 3 and set(out["nodes"].values()) == {0, 1, 2}
    assert len(out["nodes"]) == 13 and out["isls_across"] == 3
    human = run_netemu("plan", "topologies/kepler.yaml", "--machines", "2")
    assert human.returncode == 0 and "ISLs between machines: 2 of 10" in human.stdout
    for bad in ("0", "14"):
        refused = run_netemu("plan", "topologies/kepler.yaml", "--machines", bad)
        assert refused.returncode == 2
        assert "--machines must be between 1 and the topology's 13 nodes" in refused.stderr
        assert "Traceback" not in refused.stderr
