"""Partitioning: which machine runs which node when one emulation spans several.

Pure computation over the topology and a plan of its links (how many epochs each
link is up). Links between machines become tunnels over the machines' own
network, so a partition should cut few of them, and cut the same ones as the
constellation moves:

- **Walker shells by orbital plane.** A +Grid links a satellite to its two
  neighbours in its plane and one in each adjacent plane, so each machine takes a
  contiguous arc of planes and only the cross-plane links at the arcs' ends are cut
  (a shell on one machine: none; shell 1 on four machines: 4 x 22 of 3,168). Arcs
  end at a shell's edge where the balance allows (shells are not linked to each
  other). With fewer planes than machines, the arcs are of satellites in slot order
  (one plane of 10 on three machines: 3 of its 10 links cut).
- **Other satellites** (TLE sets) by a spectral ordering of their planned ISL graph
  (the Fiedler vector: neighbours get near values), cut into balanced runs.
- **Ground stations and aircraft** go with the machine whose satellites they link
  to for the most epochs of the plan (their links hand over; this keeps most of
  their link-epochs inside one machine).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csgraph, csr_matrix
from scipy.sparse.linalg import eigsh

from netemu.model.topology import LinkKind, NodeKind, Topology
from netemu.plan.links import KINDS
from netemu.plan.planner import EpochPlan

#: How far (as a share of a machine's fair load) a cut may move to fall on a shell's edge.
EDGE_SLACK = 0.1
#: Satellites up to which the ISL graph's Laplacian is solved densely (exact, fast).
_DENSE_UP_TO = 3000


@dataclass(frozen=True)
class Partition:
    """``machine[i]``: the machine (0..machines-1) that runs node ``i``."""

    machine: np.ndarray
    machines: int

    def nodes_of(self, m: int) -> np.ndarray:
        return np.flatnonzero(self.machine == m)


def count_link_epochs(
    epochs: Iterable[EpochPlan], each: Callable[[], object] = lambda: None
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], bool]]:
    """From a plan's epochs: how many epochs each link was up, and whether it is an
    ISL (``each`` is called after every epoch: a progress bar)."""
    link_epochs: dict[tuple[int, int], int] = {}
    isl: dict[tuple[int, int], bool] = {}
    for epoch in epochs:
        for key, kind in zip(epoch.up.keys(), epoch.up.kind.tolist(), strict=True):
            link_epochs[key] = link_epochs.get(key, 0) + 1
            isl[key] = KINDS[kind] is LinkKind.ISL
        each()
    return link_epochs, isl


def partition(
    topology: Topology, machines: int, link_epochs: Mapping[tuple[int, int], int]
) -> Partition:
    """Nodes onto ``machines`` machines, from the plan's ``link_epochs`` ((a, b) key:
    epochs it was up)."""
    n = len(topology.nodes)
    if not 1 <= machines <= n:
        raise ValueError(f"machines must be between 1 and the {n} nodes, got {machines}")
    machine = np.full(n, -1, np.int64)
    groups, edges = _satellite_groups(topology, link_epochs)
    if len(groups) < machines:  # fewer planes than machines: arcs of a plane, then
        groups = [np.array([i]) for g in groups for i in g.tolist()]
        edges = {0, len(groups)}
    sizes = np.array([len(g) for g in groups])
    for m, (lo, hi) in enumerate(_balanced_cuts(sizes, edges, machines)):
        for g in groups[lo:hi]:
            machine[g] = m
    _place_access_nodes(topology, machine, machines, link_epochs)
    return Partition(machine, machines)


def _satellite_groups(
    topology: Topology, link_epochs: Mapping[tuple[int, int], int]
) -> tuple[list[np.ndarray], set[int]]:
    """Satellites in the order machines take them, in groups never split (a Walker
    plane; a single TLE satellite), and the group indices where a shell begins."""
    groups: list[np.ndarray] = []
    edges: set[int] = set()
    in_shell = np.zeros(len(topology.nodes), bool)
    for shell in topology.shells:
        edges.add(len(groups))
        for plane in range(shell.planes):
            first = shell.index(plane, 0)
            groups.append(np.arange(first, first + shell.per_plane))
        in_shell[shell.first : shell.first + shell.planes * shell.per_plane] = True
    others = np.array(
        [s.index for s in topology.satellites if not in_shell[s.index]], dtype=np.int64
    )
    if len(others):
        edges.add(len(groups))
        groups += [np.array([i]) for i in _spectral_order(others, link_epochs)]
    edges.add(len(groups))
    return groups, edges


def _spectral_order(nodes: np.ndarray, link_epochs: Mapping[tuple[int, int], int]) -> np.ndarray:
    """``nodes`` ordered so that linked ones are near: each connected part of their
    ISL graph in turn, within a part by its Fiedler vector."""
    local = {int(x): i for i, x in enumerate(nodes.tolist())}
    pairs = [
        (local[a], local[b], w) for (a, b), w in link_epochs.items() if a in local and b in local
    ]
    m = len(nodes)
    if not pairs:
        return nodes
    a, b, w = (np.array(x) for x in zip(*pairs, strict=True))
    graph = csr_matrix((w.astype(float), (a, b)), shape=(m, m))
    graph = graph + graph.T
    _, label = csgraph.connected_components(graph, directed=False)
    order = []
    for part in np.unique(label).tolist():
        members = np.flatnonzero(label == part)
        if len(members) <= 2:
            order += members.tolist()
            continue
        lap = csgraph.laplacian(graph[members][:, members]).astype(float)
        if len(members) <= _DENSE_UP_TO:
            _, vectors = np.linalg.eigh(lap.toarray())
        else:
            _, vectors = eigsh(lap, k=2, which="SM")
        order += members[np.argsort(vectors[:, 1], kind="stable")].tolist()
    return nodes[np.array(order)]


def _balanced_cuts(sizes: np.ndarray, edges: set[int], machines: int) -> list[tuple[int, int]]:
    """Group ranges [lo, hi) per machine, each near an equal share of the satellites,
    a cut moved onto a shell's edge when one is within EDGE_SLACK of a share."""
    before = np.concatenate([[0], np.cumsum(sizes)])  # satellites before group i
    share = before[-1] / machines
    edge_list = sorted(edges)
    cuts = [0]
    for m in range(1, machines):
        # Every machine still to come keeps at least one group, where there are enough.
        lo = min(cuts[-1] + 1, len(sizes))
        hi = max(lo, len(sizes) - (machines - m))
        c = np.arange(lo, hi + 1)
        off = np.abs(before[c] - share * m)
        at_edge = np.isin(c, edge_list) & (off <= EDGE_SLACK * share)
        pick = c[at_edge][np.argmin(off[at_edge])] if at_edge.any() else c[np.argmin(off)]
        cuts.append(int(pick))
    cuts.append(len(sizes))
    return list(itertools.pairwise(cuts))


def _place_access_nodes(
    topology: Topology,
    machine: np.ndarray,
    machines: int,
    link_epochs: Mapping[tuple[int, int], int],
) -> None:
    """Each ground station and aircraft onto the machine its links spend the most
    epochs on (the least loaded where it has none), in place."""
    access = [x.index for x in topology.nodes if x.kind is not NodeKind.SATELLITE]
    weight = {g: np.zeros(machines) for g in access}
    for (a, b), epochs in link_epochs.items():
        for g, other in ((a, b), (b, a)):
            if g in weight and machine[other] >= 0:
                weight[g][machine[other]] += epochs
    for g in access:
        load = np.bincount(machine[machine >= 0], minlength=machines)
        w = weight[g]
        best = np.flatnonzero(w == w.max())
        machine[g] = int(best[np.argmin(load[best])])


def summary(
    topology: Topology,
    part: Partition,
    link_epochs: Mapping[tuple[int, int], int],
    isl: Mapping[tuple[int, int], bool],
) -> dict:
    """What each machine runs and which planned links cross machines: per machine its
    nodes by kind and the ISLs it holds or shares; in all, the ISLs that cross
    (distinct links) and the share of access link-epochs (ground, air) that do."""
    kinds = np.array([x.kind.value for x in topology.nodes])
    rows = []
    for m in range(part.machines):
        mine = part.machine == m
        rows.append(
            {
                "machine": m,
                "satellites": int((mine & (kinds == NodeKind.SATELLITE.value)).sum()),
                "ground_stations": int((mine & (kinds == NodeKind.GROUND.value)).sum()),
                "aircraft": int((mine & (kinds == NodeKind.AIRCRAFT.value)).sum()),
                "isls_inside": 0,
                "isls_across": 0,
            }
        )
    isls = [k for k in link_epochs if isl[k]]
    crossing_isls = 0
    for a, b in isls:
        ma, mb = int(part.machine[a]), int(part.machine[b])
        if ma == mb:
            rows[ma]["isls_inside"] += 1
        else:
            crossing_isls += 1
            rows[ma]["isls_across"] += 1
            rows[mb]["isls_across"] += 1
    access = [(k, e) for k, e in link_epochs.items() if not isl[k]]
    across = sum(e for (a, b), e in access if part.machine[a] != part.machine[b])
    total = sum(e for _, e in access)
    return {
        "machines": rows,
        "isls": len(isls),
        "isls_across": crossing_isls,
        "access_link_epochs": total,
        "access_link_epochs_across": across,
    }
