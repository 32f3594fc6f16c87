"""Programs in a node on another machine: started by its agent, read and signalled as a Popen.

A test (:class:`netemu.testing.network.Network`) runs probes, pings and iperf3
in nodes with ``emu.host(node).popen(argv, ...)``. On one machine that is a
Mininet host; over a cluster the node lives on another machine, so its agent
starts the program there (:class:`NodeProcesses`: in the node's namespace, with
the run's ``NETEMU_RUN`` so ``netemu clean`` finds it, output kept as it
comes) and the driver holds a :class:`RemoteProcess`: a ``subprocess.Popen``
as far as tests use one (``stdout.readline``, iterating ``stdout``,
``stderr.read``, ``wait``, ``poll``, ``communicate``, ``terminate``, ``kill``,
``returncode``), which asks the agent for new output every :data:`POLL_S` while waiting on it.
Ray carries only these calls; the program's packets stay on the emulated links.

The driver's Python (``sys.executable``) at the head of an argv stands for the
agent's own, as netemu is installed on every machine of a cluster.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

#: How long a driver waits between two asks for a program's output (each ask is a
#: Ray call: a few a second keep Ray's share of the CPUs, which the engines need, small).
POLL_S = 0.05
#: An argv's first word that stands for the agent's Python.
PYTHON = "{python}"


class NodeProcesses:
    """The programs a machine's agent started in its nodes (see the module's docstring)."""

    def __init__(self, netns: dict[int, str], env: dict[str, str]) -> None:
        self.netns = netns
        self.env = env
        self.procs: dict[int, subprocess.Popen] = {}
        self.out: dict[int, tuple[bytearray, bytearray]] = {}
        self._readers: dict[int, list[threading.Thread]] = {}
        self._ids = itertools.count()

    def spawn(self, node: int, argv: list[str]) -> int:
        """Start ``argv`` in ``node``'s namespace; the program's id on this machine."""
        argv = [sys.executable, *argv[1:]] if argv[:1] == [PYTHON] else list(argv)
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns[node]}", "--", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, start_new_session=True,
        )  # fmt: skip
        key = next(self._ids)
        self.procs[key] = proc
        self.out[key] = (bytearray(), bytearray())
        self._readers[key] = [
            threading.Thread(target=_drain, args=(pipe, buf), daemon=True)
            for pipe, buf in zip((proc.stdout, proc.stderr), self.out[key], strict=True)
        ]
        for t in self._readers[key]:
            t.start()
        return key

    def output(self, key: int, out_from: int, err_from: int) -> tuple[bytes, bytes, int | None]:
        """What program ``key`` wrote from these offsets on, and its exit status (None:
        still running). Once it has exited, all it wrote is there."""
        proc = self.procs[key]
        code = proc.poll()
        if code is not None:
            for t in self._readers[key]:
                t.join()
        out, err = self.out[key]
        return bytes(out[out_from:]), bytes(err[err_from:]), code

    def signal(self, key: int, signum: int) -> None:
        """Signal program ``key`` (one that has exited is left alone)."""
        proc = self.procs[key]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def forget(self, key: int) -> None:
        """Drop program ``key``, which the driver has seen end, and its output."""
        if self.procs[key].poll() is not None:
            del self.procs[key], self.out[key], self._readers[key]

    def stop(self) -> None:
        """Every program still running killed with what it started (its session); what
        they wrote stays readable."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _drain(pipe, buffer: bytearray) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        buffer += chunk
    pipe.close()


class RemoteProcess:
    """A program in a node on another machine, as a driver holds it (a Popen's part)."""

    def __init__(self, ask: Callable[..., object], key: int, text: bool) -> None:
        #: ``ask(method, *args)`` calls the agent of the program's machine.
        self._ask = ask
        self.key = key
        self.text = text
        self.returncode: int | None = None
        #: Why the program's agent stopped answering (then it counts as killed).
        self.gone: Exception | None = None
        self._got = (bytearray(), bytearray())
        self._lock = threading.Lock()
        self.stdout = _Stream(self, 0)
        self.stderr = _Stream(self, 1)

    def _fetch(self) -> bool:
        """New output into the buffers; whether the program has ended (all output in)."""
        with self._lock:
            if self.returncode is not None:
                return True
            try:
                out, err, code = self._ask("output", self.key, len(self._got[0]), len(self._got[1]))
            except Exception as exc:  # the machine lost, the run stopped: the program is gone
                self.returncode, self.gone = -signal.SIGKILL, exc
                # Said where a failing test shows it: the program's own stderr.
                self._got[1].extend(
                    f"netemu: no answer from the program's machine: {exc}\n".encode()
                )
                return True
            self._got[0].extend(out)
            self._got[1].extend(err)
            if code is not None:
                self.returncode = code
                with contextlib.suppress(Exception):  # the machine may be gone
                    self._ask("forget", self.key)
            return code is not None

    def poll(self) -> int | None:
        self._fetch()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._fetch():
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired("remote program", timeout)
            time.sleep(POLL_S)
        return self.returncode

    def communicate(self, input=None, timeout: float | None = None):
        if input:
            raise ValueError("a remote program reads no input")
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        return self.stdout.read(), self.stderr.read()

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            self._ask("signal", self.key, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Stream:
    """A remote program's stdout or stderr, read as it comes."""

    def __init__(self, proc: RemoteProcess, which: int) -> None:
        self.proc = proc
        self.which = which
        self.pos = 0

    def _decode(self, data: bytes):
        return data.decode() if self.proc.text else data

    def readline(self):
        """The next line (all that is left at the end; empty once nothing is)."""
        ended = False
        while True:  # from what has come when a line is there, else ask for more
            buf = self.proc._got[self.which]
            end = buf.find(b"\n", self.pos)
            if end >= 0 or ended:
                stop = end + 1 if end >= 0 else len(buf)
                line, self.pos = bytes(buf[self.pos : stop]), stop
                return self._decode(line)
            if not (ended := self.proc._fetch()):
                time.sleep(POLL_S)

    def __iter__(self) -> Iterator:
        while line := self.readline():
            yield line

    def read(self):
        """All the program wrote here from this point on, once it has ended."""
        self.proc.wait()
        data = bytes(self.proc._got[self.which][self.pos :])
        self.pos += len(data)
        return self._decode(data)


class RemoteHost:
    """A node on another machine, as a test starts programs in it (``emu.host(node)``)."""

    def __init__(self, ask: Callable[..., object], node: int) -> None:
        self._ask = ask
        self.node = node

    def popen(self, argv: list[str], *, text: bool = False, **_streams) -> RemoteProcess:
        """Start ``argv`` in the node; output is always kept (the streams asked for
        are not separate pipes here), ``text`` decodes it."""
        argv = [PYTHON, *argv[1:]] if argv[:1] == [sys.executable] else list(argv)
        return RemoteProcess(self._ask, self._ask("spawn", self.node, argv), text)
