"""How a run is stopped from outside, and the exit status that says so.

SIGINT, SIGTERM and SIGHUP, sent to the controller alone or to its whole process
group (a terminal's Ctrl-C, ``kill -- -PGID``, a closed terminal or SSH session),
become one :class:`Stopped` exception in the main thread; the run then tears down
and exits with 128 + the signal's number (130, 143, 129).

Python runs a handler between two bytecodes of the main thread, wherever that
thread is, and an exception raised inside a ``__del__`` or a weakref callback is
printed and dropped. So the signal is remembered too, and :meth:`StopSignals.check`
raises it again at the next safe point (the controller calls it every epoch).
Signals after the first are counted, not raised, and so is a first one that comes
during a teardown (:func:`deferred`): raised there it would cut the teardown short
and leave the run's namespaces behind. SIGKILL, then ``netemu clean``, is the way
to stop a teardown.

The kernel gives a process's signal to any thread that does not block it, and a
main thread blocked in a system call hears of it only if the signal lands on it:
netemu's own threads and the native ones its imports start block the stop
signals (:func:`only_for_the_main_thread`, :func:`blocked`), and a relay thread
sends a signal again to the main thread when its handler has not run soon after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The run was asked to stop by a signal (not an ``Exception``: nothing that
    handles errors may swallow it, Mininet's CLI included)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}"


class StopSignals:
    """While in use, the stop signals raise :class:`Stopped` in the main thread.

    A signal ignored when it starts (``nohup``, a script's ``&``) stays ignored.
    ``interrupt=False`` leaves SIGINT alone (``netemu run --cli``: Ctrl-C there stops
    the command at the prompt, as in Mininet, not the run).
    """

    def __init__(self, interrupt: bool = True) -> None:
        self.signals = STOP_SIGNALS if interrupt else STOP_SIGNALS[1:]
        self.received: int | None = None
        self.repeated = 0
        self.held = False  # for good: signals only noted (the CLI's teardown)
        self.deferring = 0  # inside deferred(): raised when it ends
        self.pending = False
        self._previous: dict[int, object] = {}
        self._wakeup: tuple[int, int] | None = None  # (read end, previous wakeup fd)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                # Ignored by whoever started us (nohup, a script's background job): kept so.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
            _installed.append(self)
            self._start_relay()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._wakeup is not None:
            read_end, previous = self._wakeup
            self._wakeup = None
            write_end = signal.set_wakeup_fd(previous)
            os.close(write_end)  # the relay reads the end of it and stops
            del read_end
        if self in _installed:
            _installed.remove(self)

    def _start_relay(self) -> None:
        """A signal that comes just before the main thread blocks in a system call
        that no signal check follows (readline's select() at the ``--cli`` prompt)
        would wait for the next keypress: Python's handler tripped, nothing ran it.
        Python writes every signal it catches to a wakeup fd; a relay thread reading
        it sends the signal to the main thread again if, 0.2 s later, its handler
        still has not run (this time select() is interrupted)."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(read_end, True)
        try:
            previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        except ValueError:  # not the main thread after all
            os.close(read_end)
            os.close(write_end)
            return
        self._wakeup = (read_end, previous)
        main = threading.main_thread().ident
        threading.Thread(
            target=self._relay, args=(read_end, main), name="netemu-signals", daemon=True
        ).start()

    def _relay(self, read_end: int, main: int) -> None:
        only_for_the_main_thread()
        try:
            while data := os.read(read_end, 64):
                mine = [s for s in data if s in self._previous]
                if not mine:
                    continue
                time.sleep(0.2)
                if self.received is None and self._previous:
                    signal.pthread_kill(main, mine[0])
        finally:
            os.close(read_end)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.repeated += 1
            return
        self.received = signum
        if self.held:
            return
        if self.deferring:
            self.pending = True
            return
        raise Stopped(signum)

    def hold(self) -> None:
        """From now on (a teardown) signals are noted, not raised."""
        self.held = True

    @property
    def stopped(self) -> Stopped | None:
        """The stop a signal asked for, raised or not."""
        return Stopped(self.received) if self.received is not None else None

    def check(self) -> None:
        """Raise :class:`Stopped` if a signal came and the run still goes on (its
        exception was dropped where Python could not raise it)."""
        if self.received is not None:
            raise Stopped(self.received)


_installed: list[StopSignals] = []  # in use, innermost last


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop signal that comes inside is raised only once the block is done (a
    teardown runs whole). Without :class:`StopSignals` in use, a no-op."""
    stop = _installed[-1] if _installed else None
    if stop is None:
        yield
        return
    stop.deferring += 1
    try:
        yield
    finally:
        stop.deferring -= 1
    if not stop.deferring and stop.pending:
        stop.pending = False
        raise Stopped(stop.received)


_library: StopSignals | None = None


def install_for_library() -> None:
    """For a program that uses netemu as a library (``with Emulation(...)``): SIGTERM
    and SIGHUP, which would end it at once with nothing removed, raise
    :class:`Stopped` instead, so its ``with`` blocks tear down; a Stopped nobody
    catches then ends the program as the signal would have, after one line and no
    traceback (as CPython does with an uncaught KeyboardInterrupt). SIGINT stays
    Python's KeyboardInterrupt. Only from the main thread, only for signals the
    program left at their default, once."""
    global _library
    if _library is not None or threading.current_thread() is not threading.main_thread():
        return
    if any(signal.getsignal(s) is not signal.SIG_DFL for s in STOP_SIGNALS[1:]):
        return  # the program handles them itself (netemu's CLI, the pytest plugin)
    _library = StopSignals(interrupt=False).__enter__()
    previous = sys.excepthook

    def excepthook(kind, value, tb) -> None:
        if not isinstance(value, Stopped):
            previous(kind, value, tb)
            return
        print(f"{os.path.basename(sys.argv[0]) or 'python'}: {value}", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        signal.signal(value.signum, signal.SIG_DFL)
        os.kill(os.getpid(), value.signum)

    sys.excepthook = excepthook


def only_for_the_main_thread() -> None:
    """Called first in a thread of netemu's own (and so in the threads it starts):
    the stop signals are blocked there, so the kernel gives them to the main thread.
    A main thread waiting in ``input()`` (the ``--cli`` prompt) would otherwise never
    wake for a signal another thread received."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """The stop signals held back in this thread meanwhile, and in every thread it
    starts meanwhile, native ones too (numpy's BLAS pool, started at import): those
    keep them blocked, so the kernel gives them to the main thread. A signal that
    came meanwhile is delivered when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
