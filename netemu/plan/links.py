"""Links: which node pairs hold an optical link at one instant.

Pure computation over one epoch's node positions (:mod:`netemu.plan.geometry`):

1. **Inter-satellite links** come from the topology's ISL policy: ``plus-grid``
   (in-plane neighbours plus one satellite in each adjacent plane of a Walker
   shell or a TLE file's planes, optionally off above a cut-off latitude),
   ``list`` (the pairs given), or ``nearest-k`` (the k nearest partners in line
   of sight). A candidate is *feasible* when its line
   of sight clears the Earth plus the grazing altitude and its length is within
   the terminals' range.
2. **Terminals** are a hard budget: no node holds more links than it has
   optical terminals. Links already held keep their terminals (re-pointing costs
   an acquisition); new ones take what is free, ISLs before access links.
3. **Access links** (space-to-ground, space-to-air): each ground station and
   aircraft keeps the satellites it holds while they stay above its elevation
   mask and in range, and picks new ones by the access policy's rule
   (highest elevation or nearest) when it has a free terminal.

The result for one epoch is a :class:`LinkSet`; :func:`diagnose` says why a link
is not up (Earth in the way, out of range, below the mask, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netemu.model.faults import Broken
from netemu.model.topology import LinkKind, NodeKind, Topology
from netemu.model.weather import CloudSeries
from netemu.plan.geometry import (
    angular_rate_deg_s,
    delay_ms,
    elevation_deg,
    ellipsoid_normal,
    geocentric_lat_deg,
    line_of_sight,
)

#: Link kinds in the order of the integer codes used in arrays.
KINDS: tuple[LinkKind, ...] = (LinkKind.ISL, LinkKind.SPACE_AIR, LinkKind.SPACE_GROUND)
ISL, SPACE_AIR, SPACE_GROUND = range(3)


@dataclass
class LinkSet:
    """The links up at one epoch: parallel arrays, one entry per link, ``a < b``."""

    a: np.ndarray  # node index (int)
    b: np.ndarray
    kind: np.ndarray  # index into KINDS
    distance_km: np.ndarray
    elevation_deg: np.ndarray  # at the ground station or aircraft; NaN for ISLs

    @classmethod
    def empty(cls) -> LinkSet:
        z = np.zeros(0, dtype=int)
        return cls(z, z.copy(), z.copy(), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.a)

    @property
    def delay_ms(self) -> np.ndarray:
        return delay_ms(self.distance_km)

    def keys(self) -> list[tuple[int, int]]:
        return list(zip(self.a.tolist(), self.b.tolist(), strict=True))


def _concat(parts: list[tuple]) -> LinkSet:
    """(a, b, kind, distance[, elevation]) parts -> one LinkSet."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return LinkSet.empty()
    a = np.concatenate([np.minimum(p[0], p[1]) for p in parts])
    b = np.concatenate([np.maximum(p[0], p[1]) for p in parts])
    kind = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    dist = np.concatenate([p[3] for p in parts])
    elev = np.concatenate([p[4] if len(p) > 4 else np.full(len(p[0]), np.nan) for p in parts])
    return LinkSet(a.astype(int), b.astype(int), kind.astype(int), dist, elev)


def isl_candidates(topology: Topology) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed ISL candidates (a, b, is_cross_plane): +Grid's, or policy list's."""
    if topology.isl.policy == "list":
        pairs = np.array(topology.isl_pairs, dtype=int).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1], np.zeros(len(pairs), bool)
    return plus_grid_pairs(topology)


def plus_grid_pairs(topology: Topology) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """+Grid candidate pairs of every Walker shell and TLE grid: (a, b, is_cross_plane)."""
    a_all, b_all, cross_all = [], [], []
    for grid in topology.grids:
        if pairs := grid.pairs(topology.isl.cross_plane):
            a, b, cross = (np.array(x) for x in zip(*pairs, strict=True))
            a_all.append(a)
            b_all.append(b)
            cross_all.append(cross.astype(bool))
    for shell in topology.shells:
        P, S = shell.planes, shell.per_plane
        plane, slot = np.divmod(np.arange(P * S), S)
        if S > 1:  # ring within each plane (a single pair when S == 2)
            nxt = (slot + 1) % S
            keep = (slot < nxt) | (S > 2)
            a_all.append(shell.first + (plane * S + slot)[keep])
            b_all.append(shell.first + (plane * S + nxt)[keep])
            cross_all.append(np.zeros(keep.sum(), bool))
        if topology.isl.cross_plane and P > 1:
            inner = plane < P - 1  # plane p -> p + 1, same slot
            a_all.append(shell.first + (plane * S + slot)[inner])
            b_all.append(shell.first + ((plane + 1) * S + slot)[inner])
            cross_all.append(np.ones(inner.sum(), bool))
            # The seam of a Walker delta: the last plane meets the first, whose
            # slots are F positions ahead (the phasing accumulated round the
            # equator). A star pattern's seam is counter-rotating: no links.
            if shell.raan_spread_deg >= 360 and P > 2:
                last = plane == P - 1
                a_all.append(shell.first + (plane * S + slot)[last])
                b_all.append(shell.first + (slot[last] + shell.phasing) % S)
                cross_all.append(np.ones(last.sum(), bool))
    if not a_all:
        z = np.zeros(0, int)
        return z, z, np.zeros(0, bool)
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, first = np.unique(np.stack([lo, hi], 1), axis=0, return_index=True)
    first.sort()
    return lo[first], hi[first], np.concatenate(cross_all)[first]


class LinkModel:
    """Decides, epoch by epoch, which links are up (see the module docstring)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        nodes = topology.nodes
        self.n_sat = len(topology.satrecs)
        self.terminals = np.array([n.terminals.count for n in nodes], dtype=int)
        self.grazing_km = topology.isl.grazing_altitude_km
        # Per-node terminal limits (inf/0 where the node sets none), combined
        # with each link kind's defaults as in Topology.link_params.
        self._range_limit = np.array(
            [n.terminals.max_range_km or np.inf for n in nodes], dtype=float
        )
        self._slew_limit = np.array(
            [n.terminals.max_slew_deg_s or np.inf for n in nodes], dtype=float
        )
        self._velocities: np.ndarray | None = None
        # Access nodes in service order: the policy's priority list, then file order.
        first = [topology.by_name[name].index for name in topology.access.priority]
        rest = [n.index for n in nodes if n.kind is not NodeKind.SATELLITE and n.index not in first]
        self.access_nodes = np.array(first + rest, dtype=int)
        self.access_kind = np.array(
            [
                SPACE_AIR if nodes[i].kind is NodeKind.AIRCRAFT else SPACE_GROUND
                for i in self.access_nodes
            ],
            dtype=int,
        )
        self.access_mask_deg = np.array(
            [topology.link_defaults[KINDS[k]].min_elevation_deg or 0.0 for k in self.access_kind]
        )
        self.isl_policy = topology.isl.policy
        self.clouds = cloud_series(topology, self.access_nodes)
        self._since: dict[tuple[int, int], float] = {}  # when each held link formed
        self._cut: set[tuple[int, int]] = set()  # pairs a fault forbids this epoch
        #: For the longest-visibility rule: (access node, satellites, positions)
        #: -> seconds each satellite stays visible. Set by the planner.
        self.visibility = None
        self.grid_a, self.grid_b, self.grid_cross = isl_candidates(topology)

    # -- limits ---------------------------------------------------------------
    def max_range_km(self, kind: int | np.ndarray, a, b) -> np.ndarray:
        """Range limit of links of ``kind`` between nodes a and b (vectorised)."""
        defaults = np.array([self.topology.link_defaults[k].max_range_km for k in KINDS])
        return np.minimum(defaults[kind], np.minimum(self._range_limit[a], self._range_limit[b]))

    # -- one epoch --------------------------------------------------------------
    def evaluate(
        self,
        positions_km: np.ndarray,
        held: LinkSet | None = None,
        time_s: float = 0.0,
        velocities_km_s: np.ndarray | None = None,
        broken: Broken | None = None,
    ) -> LinkSet:
        """Links up at an epoch with node ``positions_km`` (N, 3), given those ``held`` before.

        ``time_s`` (seconds on any monotonic scale) only matters for the access
        policy's minimum dwell time. ``broken`` (:mod:`netemu.model.faults`): dead
        nodes hold no links, cut pairs none, failed terminals are not free.
        """
        broken = broken or Broken()
        self._cut = broken.cut
        held_keys = set(held.keys()) if held is not None else set()
        held_keys -= broken.cut
        self._since = {k: t for k, t in self._since.items() if k in held_keys}
        self._velocities = velocities_km_s
        free = self.terminals.copy()
        free[list(broken.dead)] = 0
        for node, lost in broken.terminals_lost.items():
            free[node] = max(0, free[node] - lost)
        access = self._access_geometry(positions_km)
        if access is not None and self.clouds:
            clouded = self.clouded(time_s)
            access[2][clouded] = False  # no optical link through clouds
        if access is not None and broken.cut:
            for m, node in enumerate(self.access_nodes.tolist()):
                for a, b in broken.cut:
                    if b == node and a < self.n_sat:
                        access[2][m, a] = False
        kept = self._keep_access(access, held_keys, free, time_s)
        isl = self._isl(positions_km, held_keys, free)
        up = _concat([isl, *self._fill_access(access, kept, free, positions_km)])
        for key in up.keys():  # noqa: SIM118  (LinkSet.keys() lists node pairs)
            self._since.setdefault(key, time_s)
        return up

    def _isl(self, pos, held_keys, free):
        if self.isl_policy in ("plus-grid", "list"):
            a, b, cross = self.grid_a, self.grid_b, self.grid_cross
            dist, ok = self._isl_feasible(pos, a, b)
            if self._cut:
                ok &= np.array([(x, y) not in self._cut for x, y in zip(a, b, strict=True)], bool)
            cutoff = self.topology.isl.cross_plane_cutoff_lat_deg
            if cutoff is not None and len(a):
                lat = np.abs(geocentric_lat_deg(pos[: self.n_sat]))
                ok &= ~cross | ((lat[a] <= cutoff) & (lat[b] <= cutoff))
            a, b, dist = a[ok], b[ok], dist[ok]
            # Held links first, then in-plane before cross-plane, in index order.
            held = np.array([(x, y) in held_keys for x, y in zip(a, b, strict=True)], bool)
            order = np.lexsort((cross[ok], ~held))
            keep = _take_terminals(a[order], b[order], free, limit=None)
            sel = order[keep]
            return a[sel], b[sel], ISL, dist[sel]
        if self.isl_policy == "nearest-k":
            return self._nearest_k(pos, held_keys, free)
        z = np.zeros(0, int)
        return z, z, ISL, np.zeros(0)

    def _isl_feasible(self, pos, a, b):
        pa, pb = pos[a], pos[b]
        dist = np.linalg.norm(pb - pa, axis=-1)
        with np.errstate(invalid="ignore"):
            ok = line_of_sight(pa, pb, self.grazing_km) & (dist <= self.max_range_km(ISL, a, b))
            ok &= self._slew_ok(ISL, pos, a, b)
        return dist, ok

    def _slew_ok(self, kind, pos, a, b) -> np.ndarray:
        """Links whose line of sight turns no faster than their terminals can follow."""
        limit = self.max_slew_deg_s(kind, a, b)
        if self._velocities is None or not np.isfinite(limit).any():
            return np.ones(np.broadcast(a, b).shape, dtype=bool)
        v = self._velocities
        rate = angular_rate_deg_s(pos[a], pos[b], v[a], v[b])
        with np.errstate(invalid="ignore"):
            return ~(rate > limit)

    def max_slew_deg_s(self, kind, a, b) -> np.ndarray:
        """Slew limit of links of ``kind`` between a and b (inf: none), vectorised."""
        defaults = np.array(
            [self.topology.link_defaults[k].max_slew_deg_s or np.inf for k in KINDS]
        )
        return np.minimum(defaults[kind], np.minimum(self._slew_limit[a], self._slew_limit[b]))

    def _nearest_k(self, pos, held_keys, free):
        k = self.topology.isl.k
        S = self.n_sat
        sat = pos[:S]
        d = np.linalg.norm(sat[:, None, :] - sat[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        d[np.isnan(d)] = np.inf
        # Candidates: each satellite's k nearest, plus what it holds now.
        kk = min(k, max(S - 1, 0))
        near = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk else np.zeros((S, 0), int)
        rows = np.repeat(np.arange(S), near.shape[1])
        cand = {(min(i, j), max(i, j)) for i, j in zip(rows, near.ravel(), strict=True)}
        cand |= {key for key in held_keys if key[1] < S}
        cand -= self._cut
        if not cand:
            z = np.zeros(0, int)
            return z, z, ISL, np.zeros(0)
        pairs = np.array(sorted(cand))
        a, b = pairs[:, 0], pairs[:, 1]
        dist, ok = self._isl_feasible(pos, a, b)
        a, b, dist = a[ok], b[ok], dist[ok]
        held = np.array([(x, y) in held_keys for x, y in zip(a, b, strict=True)], bool)
        order = np.lexsort((dist, ~held))
        keep = _take_terminals(a[order], b[order], free, limit=k)
        sel = order[keep]
        return a[sel], b[sel], ISL, dist[sel]

    def _access_geometry(self, pos):
        """Elevation (deg), range (km) and feasibility, access node x satellite."""
        if not len(self.access_nodes) or not self.n_sat:
            return None
        sat = pos[: self.n_sat]
        obs = pos[self.access_nodes]
        up = ellipsoid_normal(obs)
        elev = elevation_deg(obs[:, None, :], up[:, None, :], sat[None, :, :])  # (M, S)
        rng = np.linalg.norm(sat[None, :, :] - obs[:, None, :], axis=-1)
        limit = self.max_range_km(
            self.access_kind[:, None], np.arange(self.n_sat)[None, :], self.access_nodes[:, None]
        )
        with np.errstate(invalid="ignore"):
            ok = (elev >= self.access_mask_deg[:, None]) & (rng <= limit)
        ok &= self._slew_ok(
            self.access_kind[:, None],
            pos,
            np.arange(self.n_sat)[None, :],
            self.access_nodes[:, None],
        )
        return elev, rng, ok

    def _keep_access(self, access, held_keys, free, time_s: float) -> list[list[int]]:
        """Access links held before and still feasible keep their terminals.

        With a hysteresis margin, a held satellite is let go when another one
        with a free terminal stands higher by more than the margin and the
        link has been held for the minimum dwell time.
        """
        kept: list[list[int]] = [[] for _ in self.access_nodes]
        if access is None:
            return kept
        elev, _rng, ok = access
        policy = self.topology.access
        for m, node in enumerate(self.access_nodes.tolist()):
            for s in np.flatnonzero(ok[m]).tolist():
                if not ((s, node) in held_keys and free[node] > 0 and free[s] > 0):
                    continue
                if policy.hysteresis_deg is not None:
                    dwell = time_s - self._since.get((s, node), time_s)
                    others = ok[m] & (free[: self.n_sat] > 0)
                    others[s] = False
                    best = elev[m][others].max(initial=-90.0)
                    if best > elev[m, s] + policy.hysteresis_deg and dwell >= policy.min_dwell_s:
                        continue  # hand over to the better satellite
                kept[m].append(s)
                free[node] -= 1
                free[s] -= 1
        return kept

    def _fill_access(self, access, kept, free, positions_km):
        """New access links for free terminals, by the access policy's rule."""
        if access is None:
            return []
        elev, rng, ok = access
        rule = self.topology.access.selection
        by_elevation = rule != "nearest"  # longest-visibility breaks ties by elevation
        out = []
        for m, node in enumerate(self.access_nodes.tolist()):
            chosen = list(kept[m])
            if free[node] > 0:
                cand = np.flatnonzero(ok[m] & (free[: self.n_sat] > 0))
                cand = cand[~np.isin(cand, chosen)]
                if rule == "longest-visibility" and self.visibility is not None and len(cand):
                    score = -self.visibility(node, cand, positions_km)
                else:
                    score = -elev[m, cand] if by_elevation else rng[m, cand]
                for s in cand[np.argsort(score, kind="stable")][: free[node]].tolist():
                    chosen.append(s)
                    free[node] -= 1
                    free[s] -= 1
            if chosen:
                c = np.array(chosen, dtype=int)
                out.append(
                    (c, np.full(len(c), node), int(self.access_kind[m]), rng[m, c], elev[m, c])
                )
        return out

    def clouded(self, time_s: float) -> np.ndarray:
        """Which access nodes (in access order) are under cloud at ``time_s``
        (orbital seconds since the topology's start)."""
        out = np.zeros(len(self.access_nodes), dtype=bool)
        top = self.topology.weather.cloud_top_km if self.topology.weather else 0.0
        for m, (series, flight) in self.clouds.items():
            if flight is not None:
                since = time_s - (flight.departure - self.topology.start).total_seconds()
                if flight.position(since)[2][0] >= top:
                    continue  # above the weather right now
            out[m] = series.cloudy(time_s)
        return out

    # -- explanations -------------------------------------------------------------
    def diagnose(
        self, positions_km: np.ndarray, a: int, b: int, kind: int, time_s: float = 0.0
    ) -> str:
        """Why the link a-b of ``kind`` is not up at these positions."""
        pa, pb = positions_km[a], positions_km[b]
        if np.isnan(pa).any() or np.isnan(pb).any():
            return "no-position"
        dist = float(np.linalg.norm(pb - pa))
        if kind == ISL:
            if not line_of_sight(pa, pb, self.grazing_km):
                return "earth-blocked"
            if dist > self.max_range_km(ISL, a, b):
                return "out-of-range"
            if not self._slew_ok(ISL, positions_km, np.array([a]), np.array([b]))[0]:
                return "slew-rate"
            cutoff = self.topology.isl.cross_plane_cutoff_lat_deg
            if (
                cutoff is not None
                and max(abs(geocentric_lat_deg(pa)), abs(geocentric_lat_deg(pb))) > cutoff
            ):
                return "cutoff-latitude"
            return "not-selected"
        ground = b if b >= self.n_sat else a
        sat = a if ground == b else b
        m = int(np.flatnonzero(self.access_nodes == ground)[0])
        elev = float(
            elevation_deg(
                positions_km[ground], ellipsoid_normal(positions_km[ground]), positions_km[sat]
            )
        )
        if elev < self.access_mask_deg[m]:
            return "below-elevation"
        if self.clouds and self.clouded(time_s)[m]:
            return "clouds"
        if dist > self.max_range_km(kind, sat, ground):
            return "out-of-range"
        if not self._slew_ok(kind, positions_km, np.array([sat]), np.array([ground]))[0]:
            return "slew-rate"
        return "not-selected"


def cloud_series(topology: Topology, access_nodes: np.ndarray) -> dict[int, tuple]:
    """(cloud series, flight path or None) per access node (index into
    ``access_nodes``) that can be under cloud."""
    weather = topology.weather
    if weather is None:
        return {}
    sites = {g.name: g for g in topology.ground_sites}
    out = {}
    for m, index in enumerate(access_nodes.tolist()):
        node, flight = topology.nodes[index], None
        if node.kind is NodeKind.AIRCRAFT:
            flight = topology.flight(index)
            if flight.altitude_km.min() >= weather.cloud_top_km:
                continue  # always above the weather
            p = weather.cloud_free_probability
        else:
            own = sites[node.name].cloud_free_probability
            p = weather.cloud_free_probability if own is None else own
        series = CloudSeries(node.name, p, weather.mean_cloudy_spell_s, weather.seed)
        out[m] = (series, flight)
    return out


def _take_terminals(
    a: np.ndarray, b: np.ndarray, free: np.ndarray, limit: int | None
) -> np.ndarray:
    """Accept pairs in order while both ends have a free terminal (and < limit links).

    Updates ``free`` in place and returns a boolean mask of accepted pairs.
    """
    if not len(a):
        return np.zeros(0, bool)
    need = np.bincount(np.concatenate([a, b]), minlength=len(free))
    cap = free if limit is None else np.minimum(free, limit)
    if np.all(need <= cap):  # the common case: no contention, no Python loop
        free -= need
        return np.ones(len(a), bool)
    used = np.zeros(len(free), int)
    keep = np.zeros(len(a), bool)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        if used[x] < cap[x] and used[y] < cap[y]:
            used[x] += 1
            used[y] += 1
            keep[i] = True
    free -= used
    return keep
