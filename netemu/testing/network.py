"""Network regression tests: measuring a live emulation, and assertions that explain failures.

:class:`Network` wraps a running :class:`~netemu.live.emulation.Emulation` with
what network tests measure: one-way delay, round trips, loss, throughput
(iperf3), the route between two nodes, commands run in a node, waiting for an
event (the next handover of an aircraft) or for orbital time to pass, and the
longest interruption of a stream. Its ``assert_*`` methods fail with a message
that says what was measured against what was expected, the path the packets
took, the state and delay of each link on it at that time, and where the
run's log and captures are kept::

    one-way delay gs_south -> gs_north: p99 14.18 ms, expected below 0.10 ms
      measured: 20 sent, 20 received (0.0% lost); p50 14.09, p95 14.12, p99 14.18, max 14.19 ms
      at 2026-06-21T03:05:20.000Z (orbital time, end of the measurement), path gs_south > t0 > ...
      links on the path: gs_south-t0 up 2.07 ms; t0-t1 up 3.22 ms; ...
      kept: results/pytest/test_broken.py_test_too_fast_to_be_true

The pytest plugin (:mod:`netemu.testing.pytest_plugin`) gives one to each test that
asks for the ``network`` fixture; scripts can make one around any emulation.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from netemu.live.emulation import Emulation
from netemu.plan.planner import Planner, iso_utc
from netemu.routes.routing import next_hops, path

#: UDP port of the probes (netemu.testing.probe); one stream at a time per destination.
PROBE_PORT = 9000


#: How often an assertion measures again when the engine says it spoiled the sample.
SPOILED_RETRIES = 2


class EmulatorWarning(UserWarning):
    """The emulator, not the emulated network, disturbed a measurement (said when an
    assertion measured again)."""


class NetworkAssertionError(AssertionError):
    """A network expectation that did not hold; the message explains the network's state."""


@dataclass
class Sample:
    """Packets sent between two nodes and what became of them."""

    what: str  # e.g. "one-way delay gs_south -> gs_north"
    sent: int
    values_ms: list[float] = field(default_factory=list)  # one per packet received
    #: Arrival times (unix s) of the packets received, in order.
    arrivals: list[float] = field(default_factory=list)
    #: When a stream began and ended (unix s), if it was run until something happened.
    started: float | None = None
    ended: float | None = None

    @property
    def received(self) -> int:
        return len(self.values_ms)

    @property
    def loss(self) -> float:
        """Share of the packets sent that never arrived."""
        return 1 - self.received / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.values_ms, q)) if self.values_ms else float("nan")

    @property
    def longest_gap_s(self) -> float:
        """The longest time without arrivals: an interruption of the stream (one it began
        in, or that lasted until it was stopped, counts from or up to then)."""
        times = [*([self.started] if self.started else []), *self.arrivals]
        times += [self.ended] if self.ended else []
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def describe(self) -> str:
        if not self.values_ms:
            return f"{self.sent} sent, none received"
        p = ", ".join(f"p{q} {self.percentile(q):.2f}" for q in (50, 95, 99))
        return (
            f"{self.sent} sent, {self.received} received ({self.loss:.1%} lost); "
            f"{p}, max {max(self.values_ms):.2f} ms"
        )


@dataclass
class CommandResult:
    node: str
    command: str
    returncode: int
    stdout: str
    stderr: str


class Network:
    """A running emulation as a test sees it (see the module's docstring)."""

    def __init__(self, emulation: Emulation, artifacts: Path | None = None):
        self.emu = emulation
        #: Where the run's log and captures are kept (named in failure messages).
        self.artifacts = artifacts

    # -- time ------------------------------------------------------------------------
    @property
    def speed(self) -> float:
        return self.emu.speed

    def now(self) -> datetime:
        """Orbital time of the epoch in force."""
        return self.emu.now()

    def advance(self, orbital_s: float) -> None:
        """Let ``orbital_s`` seconds of orbital time pass (``orbital_s / speed`` wall seconds)."""
        self.emu.wait(orbital_s / self.speed)

    def wait_for(self, kind: str, timeout_s: float, **match) -> dict:
        """The next event of ``kind`` (e.g. ``"handover"``, ``node="patrol1"``) from now on,
        within ``timeout_s`` orbital seconds."""
        start, began = len(self.emu.events), self.now()

        def found() -> dict | None:
            for event in self.emu.events[start:]:
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        if self.emu.wait_until(lambda: found() is not None, timeout_s / self.speed):
            return found()
        wanted = " ".join([kind, *(f"{k}={v}" for k, v in match.items())])
        seen = [f"{e['time']} {e['type']}" for e in self.emu.events[start:]][-5:]
        raise NetworkAssertionError(
            f"no {wanted} within {timeout_s:g} orbital s (from {iso_utc(began)} to "
            f"{iso_utc(self.now())}); events meanwhile: {', '.join(seen) or 'none'}"
        )

    # -- paths -------------------------------------------------------------------------
    def route(self, src: str, dst: str) -> list[str] | None:
        """The nodes a packet from ``src`` to ``dst`` crosses now (None: unreachable)."""
        return self.emu.route(src, dst)

    def planned_route(self, src: str, dst: str, when: datetime) -> list[str] | None:
        """The shortest-delay path at orbital time ``when`` by the plan (no packets): what the
        network will do at a given time, or did; the file's faults count, injected ones and
        acquisition do not."""
        epoch = next(Planner(self.emu.topology).run(when, 0.0, 1.0))
        hops = next_hops(len(self.emu.names), epoch.up.a, epoch.up.b, epoch.up.delay_ms)
        by_name = self.emu.topology.by_name
        nodes = path(hops, by_name[src].index, by_name[dst].index)
        return None if nodes is None else [self.emu.names[i] for i in nodes]

    def path_delay_ms(self, src: str, dst: str) -> float | None:
        """The geometric one-way delay along the current path."""
        return self.emu.path_delay_ms(src, dst)

    def link_state(self, a: str, b: str) -> str:
        """``up`` (carrying), ``acquiring`` or ``down``."""
        return self.emu.link_state(a, b)

    def explain(self, src: str, dst: str) -> str:
        """The state of the network between two nodes, as failure messages show it."""
        route = self.route(src, dst)
        lines = [f"at {iso_utc(self.now())} (orbital time, end of the measurement), " + (
            f"path {' > '.join(route)} (geometric {self.path_delay_ms(src, dst):.2f} ms)"
            if route else f"no path from {src} to {dst}"
        )]  # fmt: skip
        pairs = itertools.pairwise(route) if route else self._links_of([src, dst])
        lines.append("links on the path: " if route else f"links of {src} and {dst}: ")
        lines[-1] += "; ".join(self._link_text(a, b) for a, b in pairs) or "none"
        late = self.emu.shaping_late()
        if late:  # the machine, not the emulated network, may have added delay or loss
            lines.append(
                f"the shaping engine released {late['late']} packets more than 0.5 ms late "
                f"so far (worst {late['worst_late_ms']} ms) and could not carry "
                f"{late['overload']} (emulator overload)"
            )
        if self.artifacts is not None:
            lines.append(f"kept: {self.artifacts}")
        return "\n  ".join(lines)

    def _links_of(self, nodes: list[str]) -> list[tuple[str, str]]:
        return [
            (link.a, link.b)
            for link in self.emu.links_now()
            if {link.a, link.b} & set(nodes) and link.state != "down"
        ]

    def _link_text(self, a: str, b: str) -> str:
        link = self.emu.link(a, b)
        if link is None:
            return f"{a}-{b} never up"
        return f"{a}-{b} {link.state} {link.delay_ms:.2f} ms"

    # -- running things in nodes ---------------------------------------------------------
    def run(self, node: str, command: str, timeout_s: float = 60.0) -> CommandResult:
        """Run a shell command in a node; its output and exit status."""
        proc = self.emu.host(node).popen(
            ["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = proc.communicate(timeout=timeout_s)
        return CommandResult(node, command, proc.returncode, out, err)

    def _python(self, node: str, *args: str, **popen) -> subprocess.Popen:
        return self.emu.host(node).popen([sys.executable, "-m", *args], text=True, **popen)

    # -- measuring ---------------------------------------------------------------------
    def one_way_delay(
        self, src: str, dst: str, count: int = 200, interval_s: float = 0.01, size: int = 64
    ) -> Sample:
        """Timestamped datagrams from ``src`` to ``dst`` (application to application)."""
        rx = self.probe_receiver(dst, duration_s=1.5 * count * interval_s + 2.0)
        tx = self.probe_sender(src, dst, count, interval_s, size)
        got = received(rx)
        tx.wait()
        return _sample(f"one-way delay {src} -> {dst}", count, got)

    def loss(self, src: str, dst: str, count: int = 1000, interval_s: float = 0.002) -> Sample:
        """Like :meth:`one_way_delay`, many packets: ``.loss`` is the share lost."""
        return self.one_way_delay(src, dst, count, interval_s)

    def stream_until(
        self,
        src: str,
        dst: str,
        done: Callable[[], bool],
        timeout_s: float,
        interval_s: float = 0.005,
    ) -> Sample:
        """Stream from ``src`` to ``dst`` until ``done()`` and half a second more (wall
        ``timeout_s`` at most); its ``longest_gap_s`` is the longest interruption."""
        count = int(timeout_s / interval_s) + 1
        rx = self.probe_receiver(dst, duration_s=timeout_s + 2.0)
        started = time.time()
        tx = self.probe_sender(src, dst, count, interval_s, 64)
        self.emu.wait_until(done, timeout_s)
        self.emu.wait(0.5)  # the stream resumes (or not) after the event
        tx.terminate()
        tx.wait()
        ended = time.time()
        self.emu.wait(0.1)  # the last packets on their way
        rx.terminate()
        # Stopped early: as many were sent as the last one received says (tail loss unseen).
        sample = _sample(f"stream {src} -> {dst}", 0, received(rx))
        sample.started, sample.ended = started, ended
        return sample

    def rtt(self, src: str, dst: str, count: int = 10, interval_s: float = 0.2) -> Sample:
        """Round trips of ``ping`` (user-space stamps: delays at the receiver's ingress count)."""
        result = self.run(
            src,
            f"ping -U -n -c {count} -i {interval_s} -W 5 {self.emu.address(dst)}",
            timeout_s=count * interval_s + 30,
        )
        values = [float(v) for v in re.findall(r"time=([\d.]+) ms", result.stdout)]
        return Sample(f"round trip {src} -> {dst} -> {src}", count, values)

    def throughput_mbit(
        self, src: str, dst: str, seconds: float = 3.0, udp_mbit: float | None = None
    ) -> float:
        """iperf3 from ``src`` to ``dst`` (TCP, or UDP at ``udp_mbit``): Mbit/s received."""
        server = self.emu.host(dst).popen(
            ["iperf3", "-s", "-1", "-B", self.emu.address(dst)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            udp = f"-u -b {udp_mbit}M" if udp_mbit else ""
            client = ""
            for _ in range(50):  # until the server listens
                client = self.run(
                    src,
                    f"iperf3 -J -c {self.emu.address(dst)} -B {self.emu.address(src)} "
                    f"-t {seconds} {udp}",
                    timeout_s=seconds + 30,
                )
                if client.returncode == 0 or "connect" not in client.stdout + client.stderr:
                    break
                time.sleep(0.1)
            report = json.loads(client.stdout)
            if "error" in report:
                raise NetworkAssertionError(
                    f"iperf3 {src} -> {dst} failed: {report['error']}\n  {self.explain(src, dst)}"
                )
            end = report["end"]
            received = end.get("sum_received") or end["sum"]
            return received["bits_per_second"] / 1e6
        finally:
            server.kill()
            server.wait()

    def probe_receiver(
        self, node: str, duration_s: float, port: int = PROBE_PORT
    ) -> subprocess.Popen:
        """A ``netemu.testing.probe`` receiver in ``node``, listening when this returns; its stdout
        has a JSON line per datagram."""
        proc = self._python(
            node,
            "netemu.testing.probe", "recv", "--bind", self.emu.address(node),
            "--port", str(port), "--duration", str(duration_s),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        first = proc.stdout.readline()
        if "listening" not in first:
            raise RuntimeError(f"probe receiver in {node} did not start: {proc.stderr.read()}")
        _keep_reading(proc)
        return proc

    def probe_sender(
        self, src: str, dst: str, count: int, interval_s: float, size: int = 64,
        port: int = PROBE_PORT,
    ) -> subprocess.Popen:  # fmt: skip
        """A ``netemu.testing.probe`` sender: ``count`` timestamped datagrams, src to dst."""
        return self._python(
            src,
            "netemu.testing.probe", "send", "--to", self.emu.address(dst), "--port", str(port),
            "--count", str(count), "--interval", str(interval_s), "--size", str(size),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    # -- assertions --------------------------------------------------------------------
    def _check(self, ok: bool, headline: str, src: str, dst: str, sample: Sample | None = None):
        if ok:
            return
        measured = f"\n  measured: {sample.describe()}" if sample else ""
        raise NetworkAssertionError(f"{headline}{measured}\n  {self.explain(src, dst)}")

    def _check_below(self, s: Sample, src: str, dst: str, below_ms: float, q: float) -> Sample:
        value = s.percentile(q)
        self._check(
            _below(below_ms, q)(s),
            f"{s.what}: p{q:g} {value:.2f} ms, expected below {below_ms:.2f} ms",
            src, dst, s,
        )  # fmt: skip
        return s

    def unspoiled(self, measure: Callable[[], Sample], good: Callable[[Sample], bool]) -> Sample:
        """A sample, measured again (at most SPOILED_RETRIES times) when it fails the
        check while the shaping engine counted packets it released late or could not
        carry: the machine, not the emulated network, made those (a host stalled the
        engine's CPU). Each retry is said as an :class:`EmulatorWarning`."""
        for attempt in range(SPOILED_RETRIES + 1):
            before = self._spoiled()
            sample = measure()
            spoiled = self._spoiled() - before
            if good(sample) or not spoiled or attempt == SPOILED_RETRIES:
                return sample
            warnings.warn(
                EmulatorWarning(
                    f"measured again: the shaping engine released {spoiled} packets late or "
                    f"could not carry them during the measurement ({sample.describe()})"
                ),
                stacklevel=3,
            )
        return sample

    def _spoiled(self) -> int:
        late = self.emu.shaping_late()
        return late.get("late", 0) + late.get("overload", 0)

    def assert_one_way_delay(
        self, src: str, dst: str, *, below_ms: float, percentile: float = 99, **probe
    ) -> Sample:
        """The ``percentile`` of one-way delay stays below ``below_ms``."""
        sample = self.unspoiled(
            lambda: self.one_way_delay(src, dst, **probe), _below(below_ms, percentile)
        )
        return self._check_below(sample, src, dst, below_ms, percentile)

    def assert_rtt(
        self, src: str, dst: str, *, below_ms: float, percentile: float = 50, **ping
    ) -> Sample:
        """The ``percentile`` of ping's round trips stays below ``below_ms``."""
        sample = self.unspoiled(lambda: self.rtt(src, dst, **ping), _below(below_ms, percentile))
        return self._check_below(sample, src, dst, below_ms, percentile)

    def assert_loss(
        self, src: str, dst: str, *, between: tuple[float, float] = (0.0, 0.0), **probe
    ) -> Sample:
        """The share of packets lost lies in ``between`` (inclusive), e.g. (0.03, 0.07)."""
        low, high = between
        s = self.unspoiled(lambda: self.loss(src, dst, **probe), lambda s: low <= s.loss <= high)
        self._check(
            low <= s.loss <= high,
            f"loss {src} -> {dst}: {s.loss:.2%}, expected {low:.2%} to {high:.2%}",
            src, dst, s,
        )  # fmt: skip
        return s

    def assert_throughput(
        self, src: str, dst: str, *, at_least_mbit: float, at_most_mbit: float = float("inf"),
        **iperf,
    ) -> float:  # fmt: skip
        mbit = self.throughput_mbit(src, dst, **iperf)
        self._check(
            at_least_mbit <= mbit <= at_most_mbit,
            f"throughput {src} -> {dst}: {mbit:.1f} Mbit/s, expected {at_least_mbit:g} to "
            f"{at_most_mbit:g} Mbit/s",
            src, dst,
        )  # fmt: skip
        return mbit

    def assert_route(self, src: str, dst: str, expected: list[str]) -> None:
        path = self.route(src, dst)
        self._check(
            path == expected,
            f"route {src} -> {dst}: {' > '.join(path) if path else 'none'}, expected "
            f"{' > '.join(expected)}",
            src, dst,
        )  # fmt: skip

    def assert_reachable(self, src: str, dst: str) -> None:
        self._check(self.route(src, dst) is not None, f"{dst} unreachable from {src}", src, dst)

    def assert_interruption(
        self, src: str, dst: str, *, during: Callable[[], bool], below_s: float, timeout_s: float,
        interval_s: float = 0.005,
    ) -> Sample:  # fmt: skip
        """A stream from ``src`` to ``dst``, until ``during()`` says the event is over, is
        never interrupted for ``below_s`` seconds or more."""
        s = self.stream_until(src, dst, during, timeout_s, interval_s)
        gap = s.longest_gap_s
        self._check(
            bool(s.values_ms) and gap < below_s,
            f"interruption {src} -> {dst}: {gap:.3f} s, expected below {below_s:g} s",
            src, dst, s,
        )  # fmt: skip
        return s


def _below(below_ms: float, q: float) -> Callable[[Sample], bool]:
    """Whether a sample's ``q`` percentile is below ``below_ms`` (an empty one is not)."""
    return lambda s: bool(s.values_ms) and s.percentile(q) < below_ms


def received(proc: subprocess.Popen) -> list[dict]:
    """What a probe receiver got (it is stopped or has run its duration)."""
    proc.wait(timeout=600)
    proc.reader.join()
    if proc.returncode not in (0, -15):
        raise RuntimeError(f"probe receiver failed: {proc.stderr.read()}")
    return [json.loads(line) for line in proc.lines if line.strip()]


def _keep_reading(proc: subprocess.Popen) -> None:
    """Read a receiver's output as it comes, into ``proc.lines``: a pipe nobody reads
    fills after ~700 datagrams and then holds the receiver back (it stops recording)."""
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True)
    proc.reader.start()


def _sample(what: str, sent: int, got: list[dict]) -> Sample:
    got = [g for g in got if "seq" in g]
    seqs = {g["seq"] for g in got}
    return Sample(
        what,
        max(sent, max(seqs, default=-1) + 1),
        [(g["recv_ns"] - g["sent_ns"]) / 1e6 for g in got],
        [g["recv_ns"] / 1e9 for g in got],
    )


__all__ = ["Network", "NetworkAssertionError", "Sample"]
