"""netemu.live.signals with real signals sent to this process: a stop signal becomes one
Stopped, a second one does not cut a teardown short, a Stopped that Python drops
(raised inside a __del__) is raised again, a signal ignored by whoever started the
process stays ignored."""

from __future__ import annotations

import os
import signal
import time

import pytest

from netemu.live import signals
from netemu.live.signals import Stopped, StopSignals


def _deliver(sig: int) -> None:
    """Send sig to this process and give Python the bytecodes to run its handler."""
    os.kill(os.getpid(), sig)
    for _ in range(1000):
        time.sleep(0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_stop_signal_is_one_stopped_with_its_exit_status(sig):
    with StopSignals() as stop, pytest.raises(Stopped) as caught:
        _deliver(sig)
    assert caught.value.signum == sig and caught.value.exit_status == 128 + sig
    assert str(caught.value) == f"stopped by {signal.Signals(sig).name}"
    assert stop.stopped.signum == sig
    assert signal.getsignal(sig) is not stop._handle  # put back on exit


def test_a_second_signal_is_noted_not_raised():
    with StopSignals() as stop:
        with pytest.raises(Stopped):
            _deliver(signal.SIGTERM)
        _deliver(signal.SIGINT)  # during the teardown: no exception
        assert stop.repeated == 1 and stop.stopped.signum == signal.SIGTERM


def test_a_signal_during_a_deferred_block_is_raised_after_it():
    done = []
    with StopSignals(), pytest.raises(Stopped), signals.deferred():
        _deliver(signal.SIGTERM)
        done.append("teardown finished")
    assert done == ["teardown finished"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop
def test_a_stopped_dropped_in_a_destructor_is_raised_again_by_check():
    class Busy:
        def __del__(self):
            _deliver(signal.SIGTERM)  # its Stopped is printed and dropped by Python

    with StopSignals() as stop:
        Busy()  # no exception reaches here
        with pytest.raises(Stopped):
            stop.check()


def test_a_signal_ignored_by_the_parent_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with StopSignals() as stop:
            _deliver(signal.SIGHUP)
            assert stop.received is None
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_without_stop_signals_deferred_does_nothing():
    with signals.deferred():
        pass
