"""The controller: the clock loop that applies each epoch when it is due.

Epoch ``k`` is due ``k * step_s`` seconds of wall clock after the first one was
applied (bring-up is not late). Between epochs the loop sleeps, waking when a
link finishes acquiring (acquisition runs on the same wall clock, so a link is
ready exactly when its acquisition time is over, whatever ``--speed`` does to
orbits). An epoch applied more than half a step after it was due is *late*: it
is counted and said in its events (``late``), and the next epochs keep their
schedule rather than drifting. The loop itself computes nothing: what an epoch
or a wake-up does is the emulation's, passed in, so the policy is tested with a
fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from netemu.model import events as ev


class Controller:
    def __init__(
        self,
        step_s: float,
        advance: Callable[[list[dict]], bool],
        acquired: Callable[[float], None],
        next_ready: Callable[[], float | None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ):
        """``advance(events)`` applies the next epoch (False: the run is over);
        ``acquired(now)`` applies links that finished acquiring; ``next_ready()``
        says when the next one will (on ``clock``), None if none is acquiring;
        ``sleep(seconds)`` waits (returning early once stopped; a test's fake clock)."""
        self.step_s = step_s
        self.advance = advance
        self.acquired = acquired
        self.next_ready = next_ready
        self.clock = clock
        self.stopping = threading.Event()
        self.sleep = sleep or self.stopping.wait
        self.wall0 = 0.0  # when the first epoch was applied (clock)
        self.epochs = 0  # applied since the first
        self.late_epochs = 0

    def started(self) -> None:
        """The first epoch is applied: the schedule starts now."""
        self.wall0 = self.clock()

    def due(self) -> float:
        return self.wall0 + (self.epochs + 1) * self.step_s

    def behind_s(self) -> float:
        """Seconds the epoch being applied is now past its due time (negative: ahead)."""
        return self.clock() - self.due()

    def run(self, after_epoch: Callable[[], None] = lambda: None) -> None:
        """Apply epochs as they fall due until the run is over or :meth:`stop`."""
        while self._sleep_until(self.due()):
            late = self.clock() - self.due()
            behind = []
            if late > self.step_s / 2:
                # Said, not hidden: the epoch applies now, and the next ones catch up.
                self.late_epochs += 1
                behind = [ev.late(late)]
            if not self.advance(behind):
                return
            self.epochs += 1
            after_epoch()

    def _sleep_until(self, due: float) -> bool:
        """Sleep until ``due``, applying acquisitions as they finish; False if stopped."""
        while not self.stopping.is_set():
            now = self.clock()
            if now >= due:
                return True
            ready = self.next_ready()
            if ready is not None and now >= ready:
                self.acquired(now)
                continue
            self.sleep(due - now if ready is None else min(due, ready) - now)
        return False

    def stop(self) -> None:
        self.stopping.set()
