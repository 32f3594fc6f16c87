"""The controller's clock policy, on a fake clock: epochs when due, acquisitions
between them when they finish, late epochs counted and said, the schedule kept."""

from __future__ import annotations

import pytest

from netemu.live.controller import Controller


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def controller(clock: FakeClock, epochs: int, cost_s=lambda i: 0.0, ready=()):
    """A controller over ``epochs`` epochs, each taking ``cost_s(i)`` of the clock, with
    links that finish acquiring at the clock times ``ready``."""
    applied, acquired, pending = [], [], sorted(ready)

    def advance(events):
        if len(applied) == epochs:
            return False
        applied.append((clock.now, events))
        clock.now += cost_s(len(applied))
        return True

    def on_acquired(now):
        acquired.append(now)
        pending.pop(0)

    c = Controller(1.0, advance, on_acquired, lambda: pending[0] if pending else None,
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    c.started()
    return c, applied, acquired


def test_epochs_apply_when_due():
    clock = FakeClock()
    c, applied, _ = controller(clock, 5)
    c.run()
    assert [t for t, _ in applied] == pytest.approx([101, 102, 103, 104, 105])
    assert c.late_epochs == 0 and c.epochs == 5


def test_a_link_ready_between_epochs_is_applied_when_ready():
    clock = FakeClock()
    c, applied, acquired = controller(clock, 2, ready=[100.3, 101.7])
    c.run()
    assert acquired == pytest.approx([100.3, 101.7])
    assert [t for t, _ in applied] == pytest.approx([101, 102])


def test_a_late_epoch_is_counted_said_and_the_schedule_kept():
    """Epoch 2 takes 1.8 s: epoch 3 is applied at once, 0.8 s late (said), and epoch 4
    is back on its schedule rather than one step after the late one."""
    clock = FakeClock()
    c, applied, _ = controller(clock, 4, cost_s=lambda i: 1.8 if i == 2 else 0.0)
    c.run()
    times = [t for t, _ in applied]
    assert times == pytest.approx([101, 102, 103.8, 104])
    assert c.late_epochs == 1
    late = [e for _, events in applied for e in events]
    assert [e["type"] for e in late] == ["late"] and late[0]["late_s"] == pytest.approx(0.8)


def test_lateness_of_half_a_step_or_less_is_not_late():
    clock = FakeClock()
    c, _, _ = controller(clock, 3, cost_s=lambda i: 1.5 if i == 1 else 0.0)
    c.run()
    assert c.late_epochs == 0


def test_stop_ends_the_loop_between_epochs():
    clock = FakeClock()
    c, applied, _ = controller(clock, 100)
    original = clock.sleep

    def sleep(seconds):
        original(seconds)
        if clock.now >= 103:
            c.stop()

    c.sleep = sleep
    c.run()
    assert len(applied) == 2  # the third was due when the stop came
