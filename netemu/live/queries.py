"""What users and tests ask a live run: paths, delays, link states, faults, waiting.

One set of answers for both sequencers, :class:`netemu.live.emulation.Emulation`
(one machine) and :class:`netemu.cluster.emulation.ClusterEmulation` (several):
both keep the same pure parts, and these read them under the run's lock, so an
answer never mixes two updates. A sequencer provides ``topology``, ``names``,
``start_time``, ``planner``, ``table`` (the link table), ``router`` (next hops),
``history`` (a :class:`~netemu.routes.routing.RouteHistory` or None), ``epoch``,
``_lock`` (re-entrant), ``finished`` (set when its controller ends) and
``_error`` (what ended it, if it failed).
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable
from datetime import datetime

from netemu.errors import InputError
from netemu.live.linktable import LinkView
from netemu.model.faults import Fault, parse_target
from netemu.routes import addressing
from netemu.routes.routing import path

#: How far a path's delay may move while a packet is on it for the delay in force to be
#: known (:meth:`RunQueries.delay_in_force_ms`): 46 hops of Starlink's shell 1 move by
#: ~20 us in a 0.1 s epoch.
IN_FORCE_SPREAD_MS = 0.05


class RunQueries:
    """A live run's answers (mixed into both sequencers; see the module's docstring)."""

    _cuts: dict[tuple[int, int], Fault]

    # -- time --------------------------------------------------------------------------
    def now(self) -> datetime:
        """Orbital time of the epoch in force."""
        return self.epoch.time

    def wait(self, seconds: float) -> None:
        """Sleep while the controller runs; re-raise its error if it failed."""
        self.finished.wait(seconds)
        if self._error is not None:
            raise self._error

    def wait_until(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.wait(poll)
        return predicate()

    # -- paths -------------------------------------------------------------------------
    def address(self, name: str) -> str:
        """A node's service address (on its loopback; routes lead here)."""
        return addressing.service_address(self.topology.by_name[name].index)

    def route(self, src: str, dst: str) -> list[str] | None:
        """Nodes on the current path from ``src`` to ``dst`` (None: unreachable)."""
        with self._lock:
            p = path(
                self.router.hops, self.topology.by_name[src].index, self.topology.by_name[dst].index
            )
        return None if p is None else [self.names[i] for i in p]

    def path_delay_ms(self, src: str, dst: str) -> float | None:
        """Sum of the one-way propagation delays along the current path."""
        with self._lock:
            nodes = self.route(src, dst)
            if nodes is None:
                return None
            idx = [self.topology.by_name[x].index for x in nodes]
            return sum(
                self.table.delay_ms((min(u, v), max(u, v))) for u, v in itertools.pairwise(idx)
            )

    def delay_in_force_ms(self, src: str, dst: str, sent: float, received: float) -> float | None:
        """Path delay that applied to a packet sent and received at these unix times.

        Needs ``keep_history``. When updates changed the network while the packet was on
        its way (from an update's first change to its last route, within 2 ms), the
        delay is known only if the path stayed the same and its delay moved by at most
        :data:`IN_FORCE_SPREAD_MS` meanwhile (motion alone, epochs of 0.1 s): then the
        middle of that range; otherwise None, as when there was no path.
        """
        with self._lock:
            done, began = self.history.times, self.history.starts
            i = bisect.bisect_right(done, sent - 0.002) - 1
            if i < 0:
                return None
            last = bisect.bisect_left(began, received + 0.002) - 1  # the last update begun
            s, d = self.topology.by_name[src].index, self.topology.by_name[dst].index
            route, delays = None, []
            for k in range(i, max(i, last) + 1):
                _, carrying, hops = self.history[k]
                p = path(hops, s, d)
                if p is None or (route is not None and p != route):
                    return None
                route = p
                delays.append(
                    sum(carrying[(min(u, v), max(u, v))] for u, v in itertools.pairwise(p))
                )
        if max(delays) - min(delays) > IN_FORCE_SPREAD_MS:
            return None
        return (max(delays) + min(delays)) / 2

    # -- links -------------------------------------------------------------------------
    def _key(self, a: str, b: str) -> tuple[int, int]:
        i, j = self.topology.by_name[a].index, self.topology.by_name[b].index
        return min(i, j), max(i, j)

    def link_state(self, a: str, b: str) -> str:
        """ "up" (carrying), "acquiring" or "down" (also for a link never made)."""
        with self._lock:
            return self.table.state_of(self._key(a, b))

    def link(self, a: str, b: str) -> LinkView | None:
        """The link between two nodes as it is now (None: never made)."""
        with self._lock:
            key = self._key(a, b)
            return self.table.view(key, self.names) if key in self.table else None

    def links_now(self) -> list[LinkView]:
        """Every link made so far, as it is now (one consistent snapshot)."""
        with self._lock:
            return [self.table.view(key, self.names) for key in self.table.keys]

    # -- faults ------------------------------------------------------------------------
    def inject(
        self,
        kind: str,
        target: str,
        for_s: float | None = None,
        loss_percent: float = 0.0,
        jitter_ms: float = 0.0,
    ) -> Fault:
        """A fault from the next epoch on (``for_s`` orbital seconds; None: for good), e.g.
        ``emu.inject("cut", "kep3-kep4", for_s=60)``; see :mod:`netemu.model.faults`."""
        target_nodes = parse_target(kind, target, "inject")
        with self._lock:
            fault = Fault(kind, target_nodes, self._orbital_s(), for_s, loss_percent, jitter_ms)
            self.planner.faults.add(fault)
        return fault

    def clear_fault(self, fault: Fault) -> None:
        """End a fault from the next epoch on (one injected for good, say)."""
        with self._lock:
            self.planner.faults.end(fault, self._orbital_s())

    def _orbital_s(self) -> float:
        """Orbital seconds since the start, just after the epoch in force."""
        now_s = (self.now() - self.start_time).total_seconds() if self.epoch else 0.0
        return now_s + 1e-6

    def link_status(self, a: str, b: str, status: str) -> None:
        """Mininet's ``link a b down`` (a cut for good, from the next epoch) and ``up``
        (that cut ended); InputError for unknown nodes or a link not cut so."""
        for name in (a, b):
            if name not in self.topology.by_name:
                raise InputError(f"link {a} {b}: no node named {name!r}")
        key = self._key(a, b)
        if status == "down":
            if key not in self._cuts:
                self._cuts[key] = self.inject("cut", f"{a}-{b}")
        elif status == "up":
            if key not in self._cuts:
                raise InputError(f"link {a} {b}: not cut by 'link {a} {b} down'")
            self.clear_fault(self._cuts.pop(key))
        else:
            raise InputError(f"link {a} {b} {status}: the status is up or down")
