"""The wire backend: every link is two TAP interfaces with a compiled engine as the wire between.

For kernels without ``sch_netem`` (this project's CI). Each end of a link is a
TAP interface (``to-<peer>``, with the deterministic index and MAC of
:mod:`netemu.routes.addressing`) that the engine (``engine.c`` beside this file)
creates and holds. A node's packets leave through its HTB rate limiter into
the TAP; the engine holds each for the direction's delay (and jitter), drops
what the link loses, and writes it into the peer's TAP at its due time, where
the peer's kernel receives it as from a real wire: kernel timestamps (plain
``ping``), tcpdump in the node, routing and TCP all see the emulated delay.

The engine is one process for all namespaces, built from its C source the
first time it is needed (cached by the source's hash; ``python -m
netemu.shaping.wire`` builds it, as ``scripts/provision`` does) and supervised
here: :meth:`WireShaper.check` notices when it dies. A TAP nobody reads drops
what it is sent, so traffic has then already stopped (fail closed) and the run
ends saying so.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
from pathlib import Path

from netemu import native
from netemu.kernel.netlink.sockets import NamespaceSockets
from netemu.shaping import (
    BLOCKED,
    Direction,
    Port,
    Shape,
    Shaper,
    ShaperError,
    htb_rate,
    tc_batches,
)

SOURCE = Path(__file__).with_name("engine.c")
#: Packets each TAP holds for the engine to read (the kernel's default is 1,000): a
#: stall of the engine of 10 ms at 400,000 packets/s; a pointer each, so only up to
#: this many links (at Starlink scale 8 MiB a thousand links more).
TAP_QUEUE, TAP_QUEUE_UP_TO_LINKS = 4096, 2000
#: Descriptors the engine holds besides its TAPs (stdio, epoll, timer, its namespace).
ENGINE_FDS = 16


def engine_binary() -> Path:
    """The engine built from ``engine.c`` (compiled now if this source was never built)."""
    try:
        return native.built(SOURCE, "netemu-engine", [], ["-lm"])
    except native.BuildError as exc:
        raise ShaperError(str(exc).replace("engine.c", "the wire shaper's engine")) from None


class Engine:
    """The engine process and its control protocol (see the comment atop ``engine.c``)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        # Its own session: a terminal's Ctrl-C (or a signal to the controller's process
        # group) is the controller's to handle; the engine dies with the controller anyway.
        self.process = subprocess.Popen(
            [str(engine_binary())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            env=env,
        )
        hello = self.reply()
        self.notes: list[str] = hello.get("notes", [])

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, lines: list[str]) -> None:
        try:
            self.process.stdin.write("".join(line + "\n" for line in lines))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.check()
            raise

    def reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.check()
            raise ShaperError("the wire engine closed its output")
        return json.loads(line)

    def ask(self, lines: list[str]) -> list[dict]:
        """Send commands that each get a reply; the replies, in order."""
        self.send(lines)
        return [self.reply() for _ in lines]

    def stats(self, full: bool = False) -> dict:
        """Counters: packets held, in, out, lost (the links' loss), blocked, overload
        (packets the emulator could not carry: no memory left, or a TAP queue overflowed;
        the latter only read with ``full``), late releases, the release error, CPU time;
        with ``full`` also per direction."""
        return self.ask(["stats dirs" if full else "stats"])[0]

    def check(self) -> None:
        if self.process.poll() is not None:
            raise ShaperError(
                f"the wire engine exited (status {self.process.returncode}): "
                "traffic on all links is stopped"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(["quit"])
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ShaperError):
                self.process.kill()
                self.process.wait()
        for f in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # unsent bytes to a dead engine
                f.close()


class WireShaper(Shaper):
    name = "wire"

    def __init__(self) -> None:
        super().__init__()
        self.engine: Engine | None = None
        self.ns_ids: dict[str, int] = {}
        #: (namespace, sending interface) -> the engine's direction number.
        self.dir_ids: dict[tuple[str, str], int] = {}
        self.rates: dict[Direction, float] = {}
        self.notes: list[str] = []

    @property
    def pids(self) -> list[int]:
        return [self.engine.pid] if self.engine else []

    def start(
        self,
        namespaces: list[str],
        env: dict[str, str] | None = None,
        sockets: NamespaceSockets | None = None,
    ) -> None:
        super().start(namespaces, env, sockets)
        self.engine = Engine(env)
        self.notes = self.engine.notes
        pinned = [n for n in self.notes if n.startswith("CPU ")]
        self.cpu = int(pinned[0].split()[1]) if pinned else None
        self.bind(namespaces)

    def bind(self, namespaces: list[str]) -> None:
        """Namespaces the engine may make TAPs in (the nodes', a machine's tunnels')."""
        first = len(self.ns_ids)
        for i, ns in enumerate(namespaces, first):
            self.ns_ids[ns] = i
        replies = self.engine.ask(
            [f"bind {i} /run/netns/{ns}" for i, ns in enumerate(namespaces, first)]
        )
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise ShaperError(f"wire engine: {errors[0]}")

    def make_links(self, pairs: list[tuple[Port, Port]]) -> None:
        if not self.dir_ids:  # the first links: the size of the run
            big = len(pairs) > TAP_QUEUE_UP_TO_LINKS
            self.engine.send([f"queue {1000 if big else TAP_QUEUE}"])
        # Two TAP descriptors a link, under the open-files limit the engine inherits.
        need = len(self.dir_ids) + 2 * len(pairs) + ENGINE_FDS
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if need > limit:
            raise ShaperError(
                f"wire engine: {len(self.dir_ids) // 2 + len(pairs)} links need {need} open "
                f"files (two TAPs a link), above this process's limit of {limit} (ulimit -Hn; "
                "as root with CAP_SYS_RESOURCE netemu raises it to fs.nr_open itself)"
            )
        links = []
        for a, b in pairs:
            link = len(self.dir_ids) // 2
            self.dir_ids[(a.netns, a.ifname)] = 2 * link
            self.dir_ids[(b.netns, b.ifname)] = 2 * link + 1
            links.append(
                f"link {link} {self.ns_ids[a.netns]} {a.ifindex} {a.ifname} {a.mac} "
                f"{self.ns_ids[b.netns]} {b.ifindex} {b.ifname} {b.mac}"
            )
        errors = [r["error"] for r in self.engine.ask(links) if "error" in r]
        if errors:
            raise ShaperError(f"wire engine: {errors[0]}" + (
                f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            ))  # fmt: skip

    def started_at(self, direction: Direction, rate_mbit: float) -> None:
        self.rates[direction] = rate_mbit

    def direction_id(self, direction: Direction) -> int:
        """The engine's number of a direction (its key in ``stats(full=True)["dirs"]``)."""
        return self.dir_ids[(direction.src_netns, direction.src_ifname)]

    def apply(self, changes: dict[Direction, Shape]) -> None:
        lines = []
        rate_lines: dict[str, list[str]] = {}
        for d, s in changes.items():
            lines.append(
                f"set {self.direction_id(d)} {round(s.delay_ms * 1e6)} "
                f"{round(s.jitter_ms * 1e6)} {s.loss:.9g} {s.fade_probability:.9g} "
                f"{round(s.fade_ms * 1e6)} {int(s.blocked)}"
            )
            if self.rates.get(d, BLOCKED.rate_mbit) != s.rate_mbit:
                rate_lines.setdefault(d.src_netns, []).append(
                    f"class change dev {d.src_ifname} parent 1: classid 1:10 htb "
                    + htb_rate(s.rate_mbit)
                )
                self.rates[d] = s.rate_mbit
        if rate_lines:
            tc_batches(rate_lines)
        if lines:
            self.engine.send(lines)

    def stats(self, full: bool = False) -> dict:
        return self.engine.stats(full) if self.engine else {}

    def check(self) -> None:
        if self.engine is not None:
            self.engine.check()

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None


if __name__ == "__main__":  # scripts/provision: build the engine now
    print(engine_binary())
    sys.exit(0)
