"""Plans: the link schedule of a topology over a period, epoch by epoch.

A :class:`Planner` steps through time, asks :mod:`netemu.plan.geometry` where the
nodes are and :mod:`netemu.plan.links` which links are up, and reports what changed:
links that came up, went down (with the reason) and access handovers. Each
epoch becomes an :class:`EpochPlan`, whose :meth:`~EpochPlan.to_json` is the
stable line format of ``netemu plan --json``::

    {"time": "2026-06-21T05:00:10Z",
     "links": [{"a": "kep0", "b": "kep1", "kind": "isl", "distance_km": 4297.1,
                "delay_ms": 14.334, "up": true}, ...],
     "events": [{"type": "link-down", "a": ..., "b": ..., "kind": ..., "reason": ...},
                {"type": "handover", "node": "p8", "from": "kep3", "to": "kep4"}, ...]}

``links`` lists the links up at that epoch and, with ``"up": false``, those
that went down since the previous one. Pure computation: no root, no programs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from netemu.model import events, physics
from netemu.model.faults import Broken, FaultPlan, random_faults
from netemu.model.topology import LinkParams, NodeKind, Topology
from netemu.model.weather import availability
from netemu.plan.acquisition import Acquisition
from netemu.plan.geometry import (
    Geometry,
    delay_ms,
    elevation_deg,
    ellipsoid_normal,
    epoch_count,
    epochs,
)
from netemu.plan.links import KINDS, LinkModel, LinkSet
from netemu.plan.shapes import fault_arrays, link_shapes, total_loss

#: Epochs whose positions are computed together (vectorised over time). 16 are as cheap
#: per epoch as 256, and a live run computes them within one epoch's update: 12 ms for
#: Starlink's shell 1, 33 ms for phase 1 (256 took 0.2 s and 0.55 s: late epochs).
_CHUNK = 16
#: Look-ahead of the longest-visibility access rule.
VISIBILITY_HORIZON_S = 1800.0
VISIBILITY_STEP_S = 10.0


@dataclass
class EpochPlan:
    """Links and events of one epoch."""

    time: datetime
    up: LinkSet
    went_down: list[tuple[int, int, int, float, str]]  # a, b, kind, distance_km, reason
    events: list[dict] = field(default_factory=list)
    #: Link budgets of the links up, aligned with ``up``: rx_power_dbm and ber of the
    #: weaker direction, loss_ab / loss_ba and fade_ab / fade_ba per direction.
    budget: dict[str, np.ndarray] = field(default_factory=dict)
    #: Links up but still acquiring (carrying nothing yet), aligned with ``up``.
    acquiring: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: What faults break in this epoch (degraded links are shaped by the emulation).
    broken: Broken = field(default_factory=Broken)
    #: Each link's parameters, aligned with ``up``, made when first asked for (a live
    #: run's planner never needs them: the emulation has its own per link).
    params_of: Callable[[], list[LinkParams]] = list

    def shapes(self) -> dict[str, np.ndarray]:
        """What each direction of the links up does to packets (:mod:`netemu.plan.shapes`),
        as the emulation applies it, acquisition aside."""
        fault_loss, fault_jitter = fault_arrays(self.up.keys(), self.broken.degraded)
        params = self.params_of()
        return link_shapes(self.up.distance_km, params, self.budget, fault_loss, fault_jitter)

    def to_json(self, topology: Topology) -> dict:
        names = [n.name for n in topology.nodes]

        def link(
            a, b, kind, dist, up, power=None, ber=None, loss=None, acq=False, fade=None, jit=None
        ) -> dict:
            return {
                "a": names[a],
                "b": names[b],
                "kind": KINDS[kind].value,
                "distance_km": round(dist, 6),
                "delay_ms": round(float(delay_ms(dist)), 6),
                "up": up,
                "acquiring": bool(acq),
                "state": ("acquiring" if acq else "up") if up else "down",  # as the run log
                "rx_power_dbm": None if power is None else round(power, 3),
                "ber": None if ber is None else float(f"{ber:.4g}"),
                "loss": None if loss is None else float(f"{loss:.4g}"),
                "fade_probability": None if fade is None else float(f"{fade:.4g}"),
                "jitter_ms": None if jit is None else round(jit, 6),
            }

        b, shapes = self.budget, self.shapes()
        up = zip(
            self.up.a.tolist(),
            self.up.b.tolist(),
            self.up.kind.tolist(),
            self.up.distance_km.tolist(),
            b["rx_power_dbm"].tolist(),
            b["ber"].tolist(),
            total_loss(shapes).max(axis=1).tolist(),  # the worse direction's
            self.acquiring.tolist(),
            shapes["fade_probability"].max(axis=1).tolist(),
            shapes["jitter_ms"][:, 0].tolist(),
            strict=True,
        )
        links = [link(a, b_, k, d, True, *rest) for a, b_, k, d, *rest in up]
        links += [link(a, b_, k, d, False) for a, b_, k, d, _reason in self.went_down]
        return {"time": iso_utc(self.time), "links": links, "events": self.events}


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Planner:
    """Steps a topology through time and reports its links and their changes."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.geometry = Geometry(topology)
        self.links = LinkModel(topology)
        self._groups: dict[tuple, tuple] = {}
        self._grouped: tuple[LinkSet, dict] | None = None  # the last LinkSet grouped
        self._node_terminals: tuple[np.ndarray, int] | None = None  # numbered kinds, count
        self._kinds: dict[tuple[int, int], int] = {}
        self._now: datetime | None = None
        self._slew_limited = any(
            p.max_slew_deg_s is not None for p in topology.link_defaults.values()
        ) or any(n.terminals.max_slew_deg_s is not None for n in topology.nodes)
        self._lookahead: tuple | None = None  # (time, positions over the horizon)
        #: Faults on purpose (the file's; a live run adds its own while it goes).
        self.faults = FaultPlan(topology.faults, [n.name for n in topology.nodes])
        self._broken = Broken()
        self._drawn = False  # random faults are drawn once, at the first epoch planned
        if topology.access.selection == "longest-visibility":
            self.links.visibility = self.visibility_s

    def visibility_s(
        self, node: int, sats: np.ndarray, _positions=None, at: datetime | None = None
    ) -> np.ndarray:
        """Seconds each of ``sats`` stays above ``node``'s elevation mask from the epoch
        being planned (or from ``at``).

        Looks ahead VISIBILITY_HORIZON_S on a VISIBILITY_STEP_S grid (one
        position computation per epoch in which some node must choose).
        """
        now = at or self._now
        if self._lookahead is None or self._lookahead[0] != now:
            times = epochs(now, VISIBILITY_HORIZON_S, VISIBILITY_STEP_S)
            self._lookahead = (now, self.geometry.positions_km(times))
        pos = self._lookahead[1]
        obs = pos[:, node]
        elev = elevation_deg(obs[:, None], ellipsoid_normal(obs)[:, None], pos[:, sats])
        m = int(np.flatnonzero(self.links.access_nodes == node)[0])
        below = elev < self.links.access_mask_deg[m]
        first = np.where(below.any(axis=0), below.argmax(axis=0), len(elev))
        return first * VISIBILITY_STEP_S

    def _acquisition_times(self, key: tuple[int, int]) -> tuple[float, float]:
        a, b = (self.topology.nodes[i] for i in key)
        kind = self._kinds.get(key)
        params = self.topology.link_params(KINDS[kind], a, b)
        return params.acquisition_s, params.reacquisition_s

    def _acquisition_spread(self, key: tuple[int, int]) -> float:
        a, b = (self.topology.nodes[i] for i in key)
        return self.topology.link_params(KINDS[self._kinds[key]], a, b).acquisition_spread_s

    def budgets(self, up: LinkSet, time: datetime | None = None) -> dict[str, np.ndarray]:
        """Link budgets of the links in ``up``, both directions.

        Links are grouped by kind and the terminals at their ends, so each
        group is one vectorised computation (a shell's ISLs are one group).
        Per direction: ``loss_*`` is the packet loss outside fades and
        ``fade_*`` the probability of being in a turbulence fade (all lost); what
        a link does to packets, these composed with the rest, is
        :meth:`EpochPlan.shapes`.
        """
        n = len(up)
        keys = ("rx_power_dbm", "ber", "loss_ab", "loss_ba", "fade_ab", "fade_ba")
        out = {k: np.zeros(n) for k in keys}
        for key, idx in self._groups_of(up).items():
            idx = np.array(idx)
            params, term_a, term_b = self._groups[key]
            rng, elev = up.distance_km[idx], up.elevation_deg[idx]
            l_atm = 1.0
            if params.zenith_transmittance < 1.0:
                l_atm = physics.atmosphere_transmittance(params.zenith_transmittance, elev)
            ab = physics.link_budget(term_a, term_b, rng, params.data_rate_gbps, l_atm)
            ba = physics.link_budget(term_b, term_a, rng, params.data_rate_gbps, l_atm)
            out["rx_power_dbm"][idx] = np.minimum(ab.rx_power_dbm, ba.rx_power_dbm)
            out["ber"][idx] = np.maximum(ab.ber, ba.ber)
            out["loss_ab"][idx], out["loss_ba"][idx] = ab.loss, ba.loss
            if params.turbulence and time is not None:
                h0 = np.array([self._altitude_km(int(x), time) for x in up.b[idx]])
                sigma = np.array(
                    [
                        physics.rytov_variance(term_a.wavelength_nm, 90.0 - e, h)
                        for e, h in zip(elev.tolist(), h0.tolist(), strict=True)
                    ]
                )
                for budget, rx, name in ((ab, term_b, "fade_ab"), (ba, term_a, "fade_ba")):
                    threshold = physics.fade_threshold_ppb(rx) / budget.photons_per_bit
                    out[name][idx] = physics.lognormal_fade_probability(sigma, threshold)
        return out

    def _groups_of(self, up: LinkSet) -> dict[tuple, np.ndarray]:
        """The links of ``up`` grouped by kind and the terminals at their ends (one
        vectorised computation each), each group's parameters and terminals cached;
        the same ``up`` twice in a row (its budgets, then its parameters) is grouped once."""
        if self._grouped is not None and self._grouped[0] is up:
            return self._grouped[1]
        if self._node_terminals is None:  # the nodes' terminal kinds, numbered once
            numbers: dict = {}
            kinds = [numbers.setdefault(n.terminals, len(numbers)) for n in self.topology.nodes]
            self._node_terminals = (np.array(kinds, np.int64), len(numbers))
        per_node, count = self._node_terminals
        codes = (up.kind * count + per_node[up.a]) * count + per_node[up.b]
        found, inverse = np.unique(codes, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(found) + 1))
        nodes = self.topology.nodes
        groups: dict[tuple, np.ndarray] = {}
        for g in range(len(found)):
            idx = order[bounds[g] : bounds[g + 1]]
            i = int(idx[0])
            a, b, k = int(up.a[i]), int(up.b[i]), int(up.kind[i])
            key = (k, nodes[a].terminals, nodes[b].terminals)
            groups[key] = idx
            if key not in self._groups:
                self._groups[key] = (
                    self.topology.link_params(KINDS[k], nodes[a], nodes[b]),
                    self.topology.terminal(KINDS[k], nodes[a]),
                    self.topology.terminal(KINDS[k], nodes[b]),
                )
        self._grouped = (up, groups)
        return groups

    def link_params(self, up: LinkSet) -> list[LinkParams]:
        """Each link's parameters, aligned with ``up``."""
        return self._params_in(self._groups_of(up), len(up))

    def _params_in(self, groups: dict[tuple, np.ndarray], n: int) -> list[LinkParams]:
        params: list[LinkParams] = [None] * n  # type: ignore[list-item]
        for key, idx in groups.items():
            one = self._groups[key][0]
            for i in idx.tolist():
                params[i] = one
        return params

    def _altitude_km(self, node: int, time: datetime) -> float:
        """Altitude of a ground station or aircraft (the bottom of its air column)."""
        if self.topology.nodes[node].kind is NodeKind.GROUND:
            return self.topology.site(node).altitude_km
        flight = self.topology.flight(node)
        return float(flight.position((time - flight.departure).total_seconds())[2][0])

    def run(
        self,
        start: datetime | None = None,
        duration_s: float = 600.0,
        step_s: float = 1.0,
        network_clock: Callable[[], float] | None = None,
    ) -> Iterator[EpochPlan]:
        """Yield one :class:`EpochPlan` per epoch from ``start`` to ``start + duration_s``.

        Acquisition runs on *network time*: orbital seconds since ``start`` unless a
        ``network_clock`` is given (a live run gives the wall clock, read as each epoch
        is planned, and drives :attr:`acquisition` between epochs on the same clock).
        """
        start = start or self.topology.start
        count = epoch_count(duration_s, step_s)
        held: LinkSet | None = None
        self._start, self._network_clock = start, network_clock
        #: The one acquisition model of this run (see :mod:`netemu.plan.acquisition`).
        self.acquisition = Acquisition(
            self._acquisition_times, self._acquisition_spread, self.topology.seed
        )
        self.faults.restart()  # events of this run from its first epoch on
        for first in range(0, count, _CHUNK):
            n = min(_CHUNK, count - first)
            chunk_start = start + timedelta(seconds=first * step_s)
            times = epochs(chunk_start, (n - 1) * step_s, step_s)
            positions = self.geometry.positions_km(times)
            velocities = None
            if self._slew_limited:  # line-of-sight rates need velocities: +1 s difference
                later = epochs(chunk_start + timedelta(seconds=1), (n - 1) * step_s, step_s)
                velocities = self.geometry.positions_km(later) - positions
            for i in range(n):
                time = chunk_start + timedelta(seconds=i * step_s)
                self._now = time
                # Orbital seconds since the topology's start: the weather's clock.
                since = (time - self.topology.start).total_seconds()
                run_s = (time - start).total_seconds()  # the faults' clock
                if held is None and self.topology.random_faults and not self._drawn:
                    self._draw_faults(positions[i])
                    self._drawn = True
                self._broken = self.faults.broken(run_s)
                up = self.links.evaluate(
                    positions[i],
                    held,
                    since,
                    None if velocities is None else velocities[i],
                    self._broken,
                )
                self._kinds.update(zip(up.keys(), up.kind.tolist(), strict=True))
                plan = self._compare(time, positions[i], held, up)
                plan.events[:0] = self.faults.events(run_s)  # the cause before its effects
                plan.broken = self._broken
                yield plan
                held = up

    def _draw_faults(self, positions: np.ndarray) -> None:
        """The file's random faults, on its satellites and on the ISLs of the first epoch."""
        names = [n.name for n in self.topology.nodes]
        first = self.links.evaluate(positions)
        isl = [(names[a], names[b]) for a, b, k in zip(first.a, first.b, first.kind, strict=True)
               if k == 0]  # fmt: skip
        sats = [n.name for n in self.topology.satellites]
        for fault in random_faults(self.topology.random_faults, sats, isl or [(sats[0], sats[-1])]):
            self.faults.add(fault)

    def _compare(
        self, time: datetime, positions: np.ndarray, before: LinkSet | None, now: LinkSet
    ) -> EpochPlan:
        """Events between the previous epoch's links and this one's."""
        plan = EpochPlan(
            time, now, [], budget=self.budgets(now, time),
            params_of=functools.partial(self._params_in, self._groups_of(now), len(now)),
        )  # fmt: skip
        clock = self._network_clock
        seconds = clock() if clock else (time - self._start).total_seconds()
        keys = now.keys()
        carrying = self.acquisition.update(seconds, keys)
        plan.acquiring = np.array([k not in carrying for k in keys], dtype=bool)
        if before is None:  # the first epoch sets the scene: no events
            return plan
        names = [n.name for n in self.topology.nodes]
        old = dict(
            zip(
                before.keys(),
                zip(before.kind.tolist(), before.distance_km.tolist(), strict=True),
                strict=True,
            )
        )
        new = dict(zip(now.keys(), now.kind.tolist(), strict=True))
        gained = [key for key in new if key not in old]
        lost = [key for key in old if key not in new]
        reasons = {}
        for a, b in lost:
            kind, _ = old[(a, b)]
            reason = reasons[(a, b)] = self._fault_reason(a, b) or self.links.diagnose(
                positions, a, b, kind, (time - self.topology.start).total_seconds()
            )
            dist = float(np.linalg.norm(positions[b] - positions[a]))
            plan.went_down.append((a, b, kind, dist, reason))
            plan.events.append(events.link_down(names[a], names[b], KINDS[kind].value, reason))
        for a, b in gained:
            plan.events.append(events.link_up(names[a], names[b], KINDS[new[(a, b)]].value))
        plan.events += self.ready_events(self.acquisition.became_ready)
        plan.events += self._handovers(lost, gained, reasons, carrying, seconds, names)
        return plan

    def ready_events(self, keys: Iterable[tuple[int, int]]) -> list[events.LinkReady]:
        """A "link-ready" event for each of these links (which finished acquiring)."""
        nodes = self.topology.nodes
        return [
            events.link_ready(nodes[a].name, nodes[b].name, KINDS[self._kinds[(a, b)]].value)
            for a, b in sorted(keys)
        ]

    def _fault_reason(self, a: int, b: int) -> str | None:
        broken = self._broken
        if a in broken.dead or b in broken.dead:
            return "fault: node down"
        if (a, b) in broken.cut:
            return "fault: link cut"
        return None

    def _handovers(self, lost, gained, reasons, carrying, seconds, names) -> list[events.Handover]:
        """Access nodes that lost a satellite and moved to another.

        Break-before-make: the node gained a new satellite in the same epoch;
        traffic stops for the new link's acquisition time. Make-before-break:
        the node still holds another satellite that carries traffic; no gap.
        """
        n_sat = self.links.n_sat
        gained_by: dict[int, list[int]] = {}
        for a, b in gained:
            if b >= n_sat:
                gained_by.setdefault(b, []).append(a)
        out: list[events.Handover] = []
        for sat, node in lost:
            if node < n_sat:
                continue
            moved, reason = (names[node], names[sat]), reasons[(sat, node)]
            held = sorted(s for s, n in carrying if n == node)
            if held:
                out.append(events.handover(*moved, names[held[0]], reason, "make-before-break"))
            elif gained_by.get(node):
                new = gained_by[node].pop(0)
                ready = self.acquisition.ready_at.get((new, node), seconds)
                out.append(
                    events.handover(*moved, names[new], reason, "break-before-make",
                                    round(ready - seconds, 3))
                )  # fmt: skip
        return out


@dataclass
class LinkHistory:
    """When one link was up over a plan, and the range of its delay."""

    a: str
    b: str
    kind: str
    intervals: list[list[datetime]] = field(default_factory=list)  # [first, last] epochs up
    min_delay_ms: float = float("inf")
    max_delay_ms: float = 0.0


class Schedule:
    """Accumulates a plan's epochs into per-link up intervals and an event list."""

    def __init__(self, topology: Topology):
        self.names = [n.name for n in topology.nodes]
        self.access = [n.index for n in topology.nodes if n.kind is not NodeKind.SATELLITE]
        self.ground = [n.index for n in topology.ground_stations]
        #: Per epoch: which access nodes (in self.access order) had a carrying link.
        self.connected: list[np.ndarray] = []
        self.links: dict[tuple[int, int], LinkHistory] = {}
        self.events: list[tuple[datetime, dict]] = []
        self.epochs = 0
        self._last: datetime | None = None

    def add(self, epoch: EpochPlan) -> None:
        self.epochs += 1
        delays = epoch.up.delay_ms.tolist()
        for (a, b), kind, d in zip(epoch.up.keys(), epoch.up.kind.tolist(), delays, strict=True):
            h = self.links.get((a, b))
            if h is None:
                h = self.links[(a, b)] = LinkHistory(
                    self.names[a], self.names[b], KINDS[kind].value
                )
            if h.intervals and h.intervals[-1][1] == self._last:
                h.intervals[-1][1] = epoch.time
            else:
                h.intervals.append([epoch.time, epoch.time])
            h.min_delay_ms = min(h.min_delay_ms, d)
            h.max_delay_ms = max(h.max_delay_ms, d)
        self.events += [(epoch.time, e) for e in epoch.events]
        self._last = epoch.time
        carrying = epoch.up.b[~epoch.acquiring] if len(epoch.acquiring) else epoch.up.b
        self.connected.append(np.isin(self.access, carrying))

    def availability(self) -> tuple[dict[str, float], float | None]:
        """Share of epochs each aircraft and ground station had a carrying link,
        and the share in which at least one ground station had (site diversity)."""
        if not self.connected:
            return {}, None
        per_node, _ = availability(np.array(self.connected))
        out = {self.names[i]: float(v) for i, v in zip(self.access, per_node, strict=True)}
        ground = [self.access.index(i) for i in self.ground]
        combined = None
        if ground:
            _, combined = availability(np.array(self.connected)[:, ground])
        return out, combined
