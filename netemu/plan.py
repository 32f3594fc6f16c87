"""Plans: the link schedule of a topology over a period, epoch by epoch.

A :class:`Planner` steps through time, asks :mod:`netemu.geometry` where the
nodes are and :mod:`netemu.links` which links are up, and reports what changed:
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

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from netemu.geometry import Geometry, delay_ms, epochs
from netemu.links import KINDS, LinkModel, LinkSet
from netemu.topology import Topology

#: Epochs whose positions are computed together (vectorised over time).
_CHUNK = 256


@dataclass
class EpochPlan:
    """Links and events of one epoch."""

    time: datetime
    up: LinkSet
    went_down: list[tuple[int, int, int, float, str]]  # a, b, kind, distance_km, reason
    events: list[dict] = field(default_factory=list)

    def to_json(self, topology: Topology) -> dict:
        names = [n.name for n in topology.nodes]

        def link(a: int, b: int, kind: int, dist: float, up: bool) -> dict:
            return {
                "a": names[a],
                "b": names[b],
                "kind": KINDS[kind].value,
                "distance_km": round(dist, 6),
                "delay_ms": round(float(delay_ms(dist)), 6),
                "up": up,
            }

        up = zip(
            self.up.a.tolist(),
            self.up.b.tolist(),
            self.up.kind.tolist(),
            self.up.distance_km.tolist(),
            strict=True,
        )
        links = [link(*row, True) for row in up]
        links += [link(a, b, k, d, False) for a, b, k, d, _reason in self.went_down]
        return {"time": iso_utc(self.time), "links": links, "events": self.events}


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Planner:
    """Steps a topology through time and reports its links and their changes."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.geometry = Geometry(topology)
        self.links = LinkModel(topology)

    def epoch_count(self, duration_s: float, step_s: float) -> int:
        return int(np.floor(duration_s / step_s + 1e-9)) + 1

    def run(
        self, start: datetime | None = None, duration_s: float = 600.0, step_s: float = 1.0
    ) -> Iterator[EpochPlan]:
        """Yield one :class:`EpochPlan` per epoch from ``start`` to ``start + duration_s``."""
        start = start or self.topology.start
        count = self.epoch_count(duration_s, step_s)
        held: LinkSet | None = None
        for first in range(0, count, _CHUNK):
            n = min(_CHUNK, count - first)
            chunk_start = start + timedelta(seconds=first * step_s)
            positions = self.geometry.positions_km(epochs(chunk_start, (n - 1) * step_s, step_s))
            for i in range(n):
                time = chunk_start + timedelta(seconds=i * step_s)
                up = self.links.evaluate(positions[i], held)
                yield self._compare(time, positions[i], held, up)
                held = up

    def _compare(
        self, time: datetime, positions: np.ndarray, before: LinkSet | None, now: LinkSet
    ) -> EpochPlan:
        """Events between the previous epoch's links and this one's."""
        plan = EpochPlan(time, now, [])
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
        for a, b in lost:
            kind, _ = old[(a, b)]
            reason = self.links.diagnose(positions, a, b, kind)
            dist = float(np.linalg.norm(positions[b] - positions[a]))
            plan.went_down.append((a, b, kind, dist, reason))
            plan.events.append(
                {
                    "type": "link-down",
                    "a": names[a],
                    "b": names[b],
                    "kind": KINDS[kind].value,
                    "reason": reason,
                }
            )
        for a, b in gained:
            plan.events.append(
                {"type": "link-up", "a": names[a], "b": names[b], "kind": KINDS[new[(a, b)]].value}
            )
        plan.events += self._handovers(lost, gained, names)
        return plan

    def _handovers(self, lost, gained, names) -> list[dict]:
        """An access node that lost a satellite and gained another in one epoch handed over."""
        n_sat = self.links.n_sat
        lost_by = {}
        for a, b in lost:
            if b >= n_sat:
                lost_by.setdefault(b, []).append(a)
        events = []
        for a, b in gained:
            if b >= n_sat and lost_by.get(b):
                events.append(
                    {
                        "type": "handover",
                        "node": names[b],
                        "from": names[lost_by[b].pop(0)],
                        "to": names[a],
                    }
                )
        return events


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
