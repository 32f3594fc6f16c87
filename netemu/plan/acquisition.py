"""Acquisition: a new optical link carries nothing until its terminals lock on.

Pure computation. Pointing, acquisition and tracking (PAT) take seconds: the
SDA terminal standard asks for acquisition within 100 s (goal < 10 s), and
re-acquiring a partner held shortly before is faster. :class:`Acquisition`
follows which links are up and says which of them carry traffic.

Times are seconds of *network* time, which whoever runs the model says: the
planner runs the one acquisition model of a plan or a run, on orbital time in a
plan, on the wall clock in a live run (orbits may be accelerated with
``--speed``, the terminals are not; see docs/design.md, "Two clocks").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable

#: A partner held within this many seconds counts as "recently held".
RECENT_S = 600.0


class Acquisition:
    def __init__(
        self,
        durations: Callable[[Hashable], tuple[float, float]],
        spread: Callable[[Hashable], float] | None = None,
        seed: int = 0,
    ):
        """``durations(link)`` gives (initial, re-acquisition) seconds for a link;
        ``spread(link)`` an extra delay of up to that many seconds, drawn
        uniformly from a generator seeded with ``seed`` (reproducible)."""
        self.durations = durations
        self.spread = spread
        self.rng = random.Random(seed)
        self.ready_at: dict[Hashable, float] = {}
        self.last_up: dict[Hashable, float] = {}
        self.carrying: set = set()  # as last reported by update()
        #: Links that finished acquiring at the last update (up before it, carrying
        #: only since): each one has its "link-ready" event.
        self.became_ready: set = set()
        self.started = False
        self._up: set = set()

    def update(self, now: float, up: Iterable[Hashable]) -> set:
        """Links up at ``now``; returns those that carry traffic (acquired)."""
        up, was_up = set(up), self._up
        for link in list(self.ready_at):
            if link not in up:  # lost: it must acquire again
                del self.ready_at[link]
        for link in up:
            if link in self.ready_at:
                continue
            if not self.started:  # the run starts on an established network
                self.ready_at[link] = now
                continue
            initial, again = self.durations(link)
            recent = now - self.last_up.get(link, -float("inf")) <= RECENT_S
            extra = self.rng.uniform(0.0, self.spread(link)) if self.spread else 0.0
            self.ready_at[link] = now + (again if recent else initial) + extra
        for link in up:
            self.last_up[link] = now
        self.started = True
        before, self._up = self.carrying, up
        self.carrying = {link for link, t in self.ready_at.items() if t <= now}
        self.became_ready = {link for link in self.carrying - before if link in was_up}
        return self.carrying

    def next_ready(self) -> float | None:
        """When the next link not yet reported as carrying is (or was) ready."""
        pending = [t for link, t in self.ready_at.items() if link not in self.carrying]
        return min(pending) if pending else None
