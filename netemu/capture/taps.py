"""Packet captures: where packets are tapped, the tcpdump that records them, the pcapng files.

A *capture point* is what a user asks for: a node (``sat3``: everything it
sends and receives on its links) or a link (``link:sat3-sat4``: both
directions, at both ends). Points become *taps*, one per hop (sender,
receiver) and side:

- ``tx``: the packet as the sender's IP layer hands it to the link, before
  any rate limit or propagation delay;
- ``rx``: the packet as it arrives at the receiver, after the emulated
  propagation (and any loss) and before routing.

So a packet's ``rx`` stamp minus its ``tx`` stamp is its one-way latency on
that hop, whatever the shaper. With netem a capture on the sender's link
interface could not say that: netem delays packets in the egress qdisc, before
the point where an interface capture sees outgoing packets (the wire shaper
holds them after it, between the two interfaces). Taps are therefore iptables
``TEE`` rules (mangle POSTROUTING for tx, mangle INPUT/FORWARD for rx) that
copy the packet onto an ``ifb`` device in the node's namespace (``tx-<peer>``,
``rx-<peer>``; ifb drops what it is sent), where ``tcpdump --immediate-mode
-U`` records it with a kernel timestamp in nanoseconds. All namespaces share
one clock, so taps compare directly.

At stop every tcpdump is interrupted (it has written each packet as it came),
and its file becomes part of one pcapng per point (``sat3.pcapng``,
``link-sat3-sat4.pcapng``) and, with several points, ``all.pcapng`` on one
timeline. Each has an interface ``netemu events`` whose records are the
run's events (links up and down, handovers, route changes) at the time they
took effect, with a comment in words: in Wireshark, ``frame.comment`` shows
them next to the packets whose latency they explain.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from netemu.capture import pcapng
from netemu.errors import InputError
from netemu.kernel import netns
from netemu.kernel.privileges import chown_to_invoker, make_dirs

#: Any address: TEE needs a gateway; ifb has no neighbours to resolve.
_TEE_GATEWAY = "169.254.0.1"
_READY_TIMEOUT_S = 10.0
BUFFER_KIB = 32768
#: Whole packets up to 2 KiB (the links' MTU is 1,500); larger GSO packets are cut.
SNAP_BYTES = 2048
_TAP_NAME = re.compile(r"^(\w+)>(\w+) (tx|rx)$")
_WINDOW = re.compile(r"\[captured (\d+) to (\d+) ns\]")


@dataclass(frozen=True)
class CapturePoint:
    """``node`` or ``link:a-b``, as the user wrote it."""

    nodes: tuple[str, ...]
    is_link: bool = False

    @classmethod
    def parse(cls, text: str, known: Iterable[str], option: str = "--capture") -> CapturePoint:
        known = set(known)
        text = text.strip()
        is_link = text.startswith("link:")
        names = tuple(text.removeprefix("link:").split("-")) if is_link else (text,)
        if is_link and (len(names) != 2 or names[0] == names[1]):
            raise InputError(f"capture point {text!r}: write a link as link:NODE-NODE", key=option)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(
                f"capture point {text!r}: no node named {unknown[0]!r} in the topology",
                key=option,
            )
        return cls(names, is_link)

    @property
    def file_name(self) -> str:
        return ("link-" + "-".join(self.nodes) if self.is_link else self.nodes[0]) + ".pcapng"

    def taps(self, a: str, b: str) -> list[Tap]:
        """The taps this point needs on the link between nodes a and b (maybe none)."""
        if self.is_link:
            if {a, b} != set(self.nodes):
                return []
            return [Tap(a, b, "tx"), Tap(a, b, "rx"), Tap(b, a, "tx"), Tap(b, a, "rx")]
        node = self.nodes[0]
        if node not in (a, b):
            return []
        peer = b if node == a else a
        return [Tap(node, peer, "tx"), Tap(peer, node, "rx")]


def parse_points(args: Iterable[str], known: Iterable[str]) -> list[CapturePoint]:
    """Capture points as the command line gives them (``sat3,link:sat3-sat4``, repeated)."""
    known = set(known)
    return [CapturePoint.parse(p, known) for arg in args for p in arg.split(",") if p.strip()]


def run_comment(run: str, topology: str, shaper: str, speed: float) -> str:
    """What a run's pcapng files say of themselves (Wireshark's capture file comment)."""
    return (
        f"netemu run {run} of {topology}, shaper {shaper}, speed {speed}. Interfaces "
        "'A>B tx' show what A sends to B as it leaves A, 'A>B rx' the same packets as they "
        "reach B, after the emulated propagation; 'netemu events' the run's events, as "
        "comments."
    )


@dataclass(frozen=True)
class Tap:
    """One side of one hop: ``sender>receiver tx`` (at the sender) or ``rx`` (at the receiver)."""

    sender: str
    receiver: str
    side: str  # "tx" or "rx"

    @property
    def node(self) -> str:
        """Where the tap is."""
        return self.sender if self.side == "tx" else self.receiver

    @property
    def peer(self) -> str:
        return self.receiver if self.side == "tx" else self.sender

    @property
    def device(self) -> str:
        """The ifb device in the node's namespace the copies go to."""
        return f"{self.side}-{self.peer}"

    @property
    def name(self) -> str:
        return f"{self.sender}>{self.receiver} {self.side}"

    def commands(self, link_interface: str) -> list[str]:
        """Shell lines (in the node's namespace) that make the tap."""
        tee = f"-j TEE --gateway {_TEE_GATEWAY} --oif {self.device}"
        rules = (
            [f"-A POSTROUTING -o {link_interface} {tee}"]
            if self.side == "tx"
            else [f"-A FORWARD -i {link_interface} {tee}", f"-A INPUT -i {link_interface} {tee}"]
        )
        return [
            f"ip link add name {self.device} type ifb",
            f"ip link set {self.device} up",
            *(f"iptables -t mangle {r}" for r in rules),
        ]

    @classmethod
    def from_interface(cls, interface: pcapng.Interface) -> Tap | None:
        m = _TAP_NAME.match(interface.name)
        if not m or "netemu tap" not in interface.description:
            return None
        return cls(*m.groups())

    def describe(self) -> str:
        if self.side == "tx":
            return f"netemu tap: what {self.sender} sends to {self.receiver}, as it leaves"
        return f"netemu tap: what {self.receiver} receives from {self.sender}, after propagation"


@dataclass
class _Recorder:
    """A tcpdump recording one tap into a raw pcap file."""

    tap: Tap
    raw: Path
    process: subprocess.Popen | None  # None: salvaged from a killed run
    started_ns: int = 0
    stopped_ns: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    #: tcpdump's exit status when it stopped before the run did (killed, crashed).
    exited_early: int | None = None


def _last_write_ns(path: Path) -> int:
    """When a recording was last written to: where a tap that stopped early ends."""
    return path.stat().st_mtime_ns if path.exists() else time.time_ns()


def logged_events(log: str | Path | None) -> list[dict]:
    """The events a run log (run.jsonl) recorded, stamped; [] if there is none."""
    if not log or not Path(log).exists():
        return []
    events = []
    for line in Path(log).read_text().splitlines():
        with contextlib.suppress(ValueError):  # a killed run's last line may be cut short
            logged = json.loads(line).get("events")
            if isinstance(logged, list):  # (the closing line has a count)
                events += [e for e in logged if "unix_s" in e]
    return events


def tap_window(interface: pcapng.Interface) -> tuple[int, int] | None:
    """When a tap recorded (ns since the epoch), from a netemu capture's interface."""
    m = _WINDOW.search(interface.description)
    return (int(m.group(1)), int(m.group(2))) if m else None


def event_text(event: dict) -> str:
    """One line a Wireshark user reads in the packet list's comment column."""
    kind = event.get("type", "event")
    if kind == "handover":
        return f"netemu: handover of {event['node']} from {event['from']} to {event['to']}"
    if kind in ("link-up", "link-down", "link-ready"):
        state = {"link-up": "up (acquiring)", "link-down": "down", "link-ready": "carrying"}[kind]
        reason = f" ({event['reason']})" if event.get("reason") else ""
        return f"netemu: link {event['a']}-{event['b']} {state}{reason}"
    if kind == "routes":
        return f"netemu: routes changed ({event['changed']} next hops)"
    detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time", "unix_s"))
    return f"netemu: {kind}" + (f" ({detail})" if detail else "")


def _on_interface(raw: Path, index: int, direction: int) -> Iterator[pcapng.Record]:
    """A tcpdump file's packets as records of one interface of the pcapng being written."""
    for rec in pcapng.read(raw)[1]:
        yield pcapng.Record(index, rec.time_ns, rec.data, direction=direction)


class Captures:
    """The captures of one run: taps made as links appear, pcapng files at the end."""

    def __init__(
        self,
        points: list[CapturePoint],
        directory: str | Path,
        comment: str = "",
        env: dict[str, str] | None = None,
    ):
        self.points = list(dict.fromkeys(points))
        self.directory = Path(directory)
        self.env = env
        self.comment = comment
        self.recorders: dict[Tap, _Recorder] = {}
        #: By tap: packets its recorder could not keep up with; its recorder's exit
        #: status where it stopped before the run (both known once written).
        self.dropped: dict[str, int] = {}
        self.stopped_early: dict[str, int] = {}

    def add_point(self, point: CapturePoint, links: list[tuple[str, str, dict]]) -> None:
        """Capture one more point from now on, on the links that exist."""
        if point not in self.points:
            self.points.append(point)
        self.add_links(links)

    def add_links(self, links: list[tuple[str, str, dict]]) -> None:
        """New links (a, b, {node: (namespace, link interface)}): make and start their
        taps (those at the nodes in ``where``: over a cluster, a machine has its own)."""
        wanted: dict[Tap, tuple[str, str]] = {}
        for a, b, where in links:
            for point in self.points:
                for tap in point.taps(a, b):
                    if tap not in self.recorders and tap.node in where:
                        wanted[tap] = where[tap.node]
        if not wanted:
            return
        raw = make_dirs(self.directory / ".raw")
        scripts: dict[str, list[str]] = {}
        for tap, (ns, interface) in wanted.items():
            scripts.setdefault(ns, []).extend(tap.commands(interface))
        netns.run_all(netns.shell_jobs(scripts))
        started = [self._start(tap, ns, raw) for tap, (ns, _) in wanted.items()]
        for recorder in started:
            self._wait_ready(recorder)

    def _start(self, tap: Tap, ns: str, raw_dir: Path) -> _Recorder:
        raw = raw_dir / f"{tap.sender}-{tap.receiver}-{tap.side}.pcap"
        # -Z root: Debian's tcpdump would switch to user tcpdump, unable to write here.
        cmd = ["ip", "netns", "exec", ns, "tcpdump", "-i", tap.device, "-w", str(raw)]
        # Immediate mode gives the ring fixed slots of the snap length: 2 KiB slots in a
        # 32 MiB ring hold a 4 MB frame's burst of fragments while tcpdump catches up.
        cmd += ["--immediate-mode", "-U", "-Z", "root", "-n"]
        cmd += ["-s", str(SNAP_BYTES), "-B", str(BUFFER_KIB)]
        cmd += ["--time-stamp-precision=nano"]
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # stopped by us, after the run, not by the terminal's Ctrl-C
            env=self.env,
        )
        recorder = self.recorders[tap] = _Recorder(tap, raw, process)
        return recorder

    def _wait_ready(self, recorder: _Recorder) -> None:
        """tcpdump says 'listening on' once its socket is bound: from then on nothing is missed."""
        stderr, seen = recorder.process.stderr, b""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or recorder.process.poll() is not None:
                raise RuntimeError(
                    f"tcpdump for tap {recorder.tap.name} did not start: {seen.decode().strip()}"
                )
            if select.select([stderr], [], [], left)[0]:
                seen += os.read(stderr.fileno(), 4096)
        recorder.started_ns = time.time_ns()

    def stop(self, events: list[dict]) -> list[Path]:
        """Stop every tcpdump and write the pcapng files; returns their paths."""
        self.stop_recorders()
        return self.write(events)

    def stop_recorders(self) -> None:
        """Stop every tcpdump (each has written every packet as it came)."""
        for r in self.recorders.values():
            if r.process is None:  # stopped before, or recorded elsewhere (adopted)
                continue
            r.exited_early = r.process.poll()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.process.pid, signal.SIGINT)
        for r in self.recorders.values():
            if r.process is None:
                continue
            try:
                _, err = r.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(r.process.pid, signal.SIGKILL)
                _, err = r.process.communicate()
            r.stopped_ns = time.time_ns() if r.exited_early is None else _last_write_ns(r.raw)
            for n, what in re.findall(
                rb"(\d+) packets? (received by filter|dropped by kernel)", err
            ):
                r.stats[what.decode().split()[0]] = int(n)
            r.process = None

    def recordings(self) -> list[dict]:
        """The stopped recorders' files and figures, to be written elsewhere
        (:meth:`adopt`: a cluster's driver); their files here are removed."""
        out = []
        for tap, r in self.recorders.items():
            out.append({
                "tap": (tap.sender, tap.receiver, tap.side),
                "raw": r.raw.read_bytes() if r.raw.exists() else b"",
                "started_ns": r.started_ns, "stopped_ns": r.stopped_ns,
                "stats": dict(r.stats), "exited_early": r.exited_early,
            })  # fmt: skip
            r.raw.unlink(missing_ok=True)
        self.recorders.clear()
        with contextlib.suppress(OSError):
            (self.directory / ".raw").rmdir()
        return out

    def adopt(self, recordings: list[dict]) -> None:
        """Recorders stopped elsewhere (:meth:`recordings`), as if they were this one's."""
        raw_dir = make_dirs(self.directory / ".raw")
        for rec in recordings:
            tap = Tap(*rec["tap"])
            raw = raw_dir / f"{tap.sender}-{tap.receiver}-{tap.side}.pcap"
            raw.write_bytes(rec["raw"])
            self.recorders[tap] = _Recorder(
                tap, raw, None, rec["started_ns"], rec["stopped_ns"], dict(rec["stats"]),
                rec["exited_early"],
            )  # fmt: skip

    def write(self, events: list[dict]) -> list[Path]:
        """The pcapng files of the stopped recorders, with ``events``; returns their paths."""
        #: Packets a tap's recorder could not keep up with (kernel drops), where any.
        self.dropped = {
            t.name: r.stats["dropped"] for t, r in self.recorders.items() if r.stats.get("dropped")
        }
        #: Taps whose recorder stopped before the run (exit status): their files end early.
        self.stopped_early = {
            t.name: r.exited_early for t, r in self.recorders.items() if r.exited_early is not None
        }
        if not self.recorders and not self.points:
            return []
        make_dirs(self.directory)
        written = [
            self._write(self.directory / p.file_name, self._taps_of(p), events) for p in self.points
        ]
        if len(self.points) > 1:
            written.append(self._write(self.directory / "all.pcapng", list(self.recorders), events))
        for r in self.recorders.values():
            r.raw.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.directory / ".raw").rmdir()
        self.recorders.clear()
        for path in written:
            chown_to_invoker(path)
        return written

    @classmethod
    def salvage(cls, directory: str | Path, events: list[dict] = ()) -> Path | None:
        """After a run was killed (``netemu clean``): merge the raw recordings its taps
        left under ``directory/.raw`` into ``directory/all.pcapng``, with the events
        its run log had (if any); None when there was nothing to merge."""
        directory = Path(directory)
        files = sorted((directory / ".raw").glob("*.pcap"))
        if not files:
            return None
        salvaged = cls([], directory, comment="netemu: salvaged after the run was killed")
        for f in files:
            tap = Tap(*f.stem.split("-"))  # sender-receiver-side: node names have no '-'
            first = next(iter(pcapng.read(f)[1]), None)
            start = first.time_ns if first else f.stat().st_mtime_ns
            salvaged.recorders[tap] = _Recorder(
                tap, f, process=None, started_ns=start, stopped_ns=_last_write_ns(f),
                exited_early=-signal.SIGKILL,
            )  # fmt: skip
        path = salvaged._write(directory / "all.pcapng", list(salvaged.recorders), events)
        for f in files:
            f.unlink()
        with contextlib.suppress(OSError):
            (directory / ".raw").rmdir()
        chown_to_invoker(path)
        return path

    def _taps_of(self, point: CapturePoint) -> list[Tap]:
        return [t for t in self.recorders if t in point.taps(t.sender, t.receiver)]

    def _write(self, path: Path, taps: list[Tap], events: list[dict]) -> Path:
        with pcapng.Writer(path, comment=self.comment) as out:
            streams, indices = [], {}
            for tap in sorted(taps, key=lambda t: t.name):
                r = self.recorders[tap]
                window = f"[captured {r.started_ns} to {r.stopped_ns} ns]"
                if r.exited_early is not None:
                    window += f" [recorder stopped early, exit status {r.exited_early}]"
                index = out.add_interface(pcapng.Interface(tap.name, f"{tap.describe()} {window}"))
                indices[tap] = index
                direction = pcapng.OUTBOUND if tap.side == "tx" else pcapng.INBOUND
                if r.raw.exists() and r.raw.stat().st_size:
                    streams.append(_on_interface(r.raw, index, direction))
            ev = out.add_interface(
                pcapng.Interface("netemu events", "netemu events", pcapng.LINKTYPE_USER0)
            )
            streams.append(
                pcapng.Record(
                    ev,
                    int(e["unix_s"] * 1e9),
                    json.dumps(e, separators=(",", ":")).encode(),
                    comment=event_text(e),
                )
                for e in sorted(events, key=lambda e: e["unix_s"])
            )
            for record in heapq.merge(*streams, key=lambda rec: rec.time_ns):
                out.write(record)
            for tap, index in indices.items():
                r = self.recorders[tap]
                if "received" in r.stats:
                    out.statistics(
                        index, r.stopped_ns, r.stats["received"], r.stats.get("dropped", 0)
                    )
        return path
