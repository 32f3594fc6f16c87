"""The NFQUEUE delay engine: holds packets and releases them at their due time.

For kernels without ``sch_netem``. Every emulated namespace sends the packets
it *receives* on link interfaces to NFQUEUE 0 (``iptables -t mangle -A
PREROUTING -i to-+ -j NFQUEUE``). This process binds that queue in each
namespace (a netfilter queue socket belongs to the namespace it was opened
in), and for each packet looks up the link by (namespace, ingress interface):

- unknown interface or blocked link: drop (fail closed);
- loss: drop with the link's probability, and everything while the link is in
  a turbulence fade (a Gilbert-Elliott chain running on time, so fades last
  milliseconds whatever the packet rate);
- otherwise hold it until ``receive time + delay (+ jitter)``, keeping each
  link's packets in order, then accept it.

Packets never flow undelayed: with no engine listening the kernel drops them
(the rule has no ``--queue-bypass``), and a full queue drops too.

It runs as its own process (``python -m netemu.shaping.engine``), started and
supervised by the controller, which sends JSON lines on stdin::

    {"cmd": "bind", "ns": 3, "path": "/run/netns/NAME"}    -> {"ok": "bind", "ns": 3}
    {"cmd": "set", "ns": 3, "ifindex": 7, "delay_us": 14352.4, "jitter_us": 0,
     "loss": 0.0, "blocked": false}
    {"cmd": "stats"}                                       -> {"ok": "stats", ...}
    {"cmd": "quit"}

It dies with its parent (PR_SET_PDEATHSIG), so a killed controller never leaves
it behind. Measured facts behind the choices here are in shared/notes/machine.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import heapq
import json
import math
import os
import random
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field

from netfilterqueue import COPY_META, NetfilterQueue

from netemu.netns import raise_open_files_limit

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
SO_TIMESTAMP = 29
#: Packets a queue may hold: >= packets/s x the longest delay (notes).
QUEUE_MAX_LEN = 100_000
#: Below this much time to go, spin instead of sleeping (sleep wakes up late).
SPIN_S = 150e-6
#: A packet released this much after its due time counts as late.
LATE_S = 0.5e-3

_libc = ctypes.CDLL(None, use_errno=True)


class Timer:
    """A timerfd on CLOCK_REALTIME: a nanosecond-precise wake-up that epoll can wait on.

    epoll's own timeout counts whole milliseconds, far too coarse for delays.
    """

    class _Spec(ctypes.Structure):
        _fields_ = [
            ("interval_s", ctypes.c_long),
            ("interval_ns", ctypes.c_long),
            ("value_s", ctypes.c_long),
            ("value_ns", ctypes.c_long),
        ]

    CLOCK_REALTIME, TFD_TIMER_ABSTIME = 0, 1
    TFD_NONBLOCK, TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC

    def __init__(self) -> None:
        self.fd = _libc.timerfd_create(self.CLOCK_REALTIME, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def at(self, when: float | None) -> None:
        """Fire at unix time ``when`` (None: disarm)."""
        spec = self._Spec()
        if when is not None:
            whole = int(when)
            spec.value_s, spec.value_ns = whole, max(1, int((when - whole) * 1e9))
        if _libc.timerfd_settime(self.fd, self.TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass
class LinkState:
    """One receiving interface: what happens to the packets arriving on it."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    blocked: bool = True  # until told otherwise: fail closed
    # Turbulence fades: share of time faded, mean fade length; the chain's state.
    fade_p: float = 0.0
    fade_s: float = 0.0
    faded: bool = False
    fade_clock: float = 0.0
    last_due: float = 0.0
    counts: dict = field(default_factory=lambda: {"in": 0, "out": 0, "lost": 0, "blocked": 0})


def in_fade(link: LinkState, now: float, rng: random.Random) -> bool:
    """Advance the link's two-state fade chain to ``now``; True while faded.

    Continuous time: a fade ends at rate 1/fade_s, a clear spell at a rate
    that makes the chain faded ``fade_p`` of the time. Over a gap dt the state
    is kept with probability exp(-rate * dt) or else drawn from the chain's
    transient distribution, which is exact for a two-state chain.
    """
    dt = max(now - link.fade_clock, 0.0)
    link.fade_clock = now
    p = min(link.fade_p, 0.999)
    leave_fade = 1.0 / link.fade_s
    enter_fade = leave_fade * p / (1.0 - p)
    total = leave_fade + enter_fade
    # P(faded at now | state then), two-state Markov chain.
    decay = math.exp(-total * dt)
    prob = p + (1 - p) * decay if link.faded else p - p * decay
    link.faded = rng.random() < prob
    return link.faded


class Engine:
    def __init__(self) -> None:
        self.links: dict[tuple[int, int], LinkState] = {}
        self.queues: dict[int, NetfilterQueue] = {}  # fd -> queue
        self.heap: list[tuple[float, int, object]] = []
        self.seq = 0
        self.unknown = 0
        #: Packets released more than 0.5 ms after their due time, and the worst (s):
        #: a fidelity alarm (the engine could not run when it should have).
        self.late = 0
        self.worst_late_s = 0.0
        self.fatal: str | None = None
        self.rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self.own_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.selector = selectors.DefaultSelector()  # epoll: no 1,024-descriptor limit
        self.timer = Timer()
        self.selector.register(self.timer.fd, selectors.EVENT_READ)

    # -- control ----------------------------------------------------------------
    def bind(self, ns: int, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            setns(fd)
            queue = NetfilterQueue()
            queue.bind(0, self._callback(ns), max_len=QUEUE_MAX_LEN, mode=COPY_META)
        finally:
            setns(self.own_ns)
            os.close(fd)
        self.queues[queue.get_fd()] = queue
        self.selector.register(queue.get_fd(), selectors.EVENT_READ)

    def set(self, msg: dict) -> None:
        key = (msg["ns"], msg["ifindex"])
        link = self.links.get(key) or self.links.setdefault(key, LinkState())
        link.delay_s = msg.get("delay_us", 0.0) / 1e6
        link.jitter_s = msg.get("jitter_us", 0.0) / 1e6
        link.loss = msg.get("loss", 0.0)
        link.blocked = bool(msg.get("blocked", False))
        link.fade_p = msg.get("fade_p", 0.0)
        link.fade_s = msg.get("fade_ms", 0.0) / 1000

    def stats(self) -> dict:
        return {
            "held": len(self.heap),
            "unknown": self.unknown,
            "late": self.late,
            "worst_late_ms": round(self.worst_late_s * 1000, 3),
            "links": {f"{ns}/{ifi}": s.counts for (ns, ifi), s in self.links.items()},
        }

    # -- packets ------------------------------------------------------------------
    def _callback(self, ns: int):
        links, heap, rng = self.links, self.heap, self.rng

        def on_packet(pkt) -> None:
            try:
                handle(pkt)
            except Exception:  # a broken engine must stop, not limp on
                pkt.drop()
                self.fatal = traceback.format_exc()

        def handle(pkt) -> None:
            link = links.get((ns, pkt.indev))
            if link is None:
                self.unknown += 1
                pkt.drop()
                return
            link.counts["in"] += 1
            if link.blocked:
                link.counts["blocked"] += 1
                pkt.drop()
                return
            if link.fade_p > 0.0 and link.fade_s > 0.0 and in_fade(link, time.time(), rng):
                link.counts["lost"] += 1
                pkt.drop()
                return
            if link.loss > 0.0 and rng.random() < link.loss:
                link.counts["lost"] += 1
                pkt.drop()
                return
            # The kernel's receive timestamp, when it stamps packets, excludes
            # the time the packet waited to reach us.
            arrived = pkt.get_timestamp() or time.time()
            due = arrived + link.delay_s
            if link.jitter_s > 0.0:
                due += abs(rng.gauss(0.0, link.jitter_s))
            due = max(due, link.last_due)  # a link never reorders
            link.last_due = due
            self.seq += 1
            heapq.heappush(heap, (due, self.seq, pkt, link))

        return on_packet

    def release_due(self) -> float | None:
        """Accept every packet that is due; return seconds until the next one."""
        heap = self.heap
        while heap:
            due = heap[0][0]
            now = time.time()
            if due - now > SPIN_S:
                return due - now - SPIN_S
            while time.time() < due:  # spin out the last microseconds
                pass
            late = now - due
            if late > LATE_S:
                self.late += 1
                self.worst_late_s = max(self.worst_late_s, late)
            _, _, pkt, link = heapq.heappop(heap)
            pkt.accept()
            link.counts["out"] += 1
        return None

    def run(self) -> None:
        control = sys.stdin.fileno()
        self.selector.register(control, selectors.EVENT_READ)
        buf = b""
        while True:
            wait = self.release_due()
            self.timer.at(None if wait is None else time.time() + wait)
            for key, _ in self.selector.select():
                if key.fd == self.timer.fd:
                    self.timer.clear()
                elif key.fd == control:
                    data = os.read(control, 65536)
                    if not data:
                        return  # the controller is gone: stop (queues drop)
                    *lines, buf = (buf + data).split(b"\n")
                    for i, line in enumerate(lines, 1):
                        if self.handle(json.loads(line)) is False:
                            return
                        if i % 32 == 0:  # an epoch's changes come by the thousand:
                            self.release_due()  # let what is due go meanwhile
                else:
                    self.queues[key.fd].run(block=False)
                    if self.fatal:
                        sys.stderr.write(f"netemu engine: internal error\n{self.fatal}")
                        sys.exit(3)

    def handle(self, msg: dict) -> bool:
        cmd = msg["cmd"]
        if cmd == "set":
            self.set(msg)
            return True
        if cmd == "bind":
            try:
                self.bind(msg["ns"], msg["path"])
                reply = {"ok": "bind", "ns": msg["ns"]}
            except OSError as exc:
                reply = {"error": f"bind {msg['path']}: {exc}"}
        elif cmd == "stats":
            reply = {"ok": "stats", **self.stats()}
        elif cmd == "quit":
            return False
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        return True


def _tune_process() -> list[str]:
    """Die with the parent, sleep precisely, run at real-time priority if allowed."""
    notes = []
    raise_open_files_limit()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)
    _libc.prctl(PR_SET_TIMERSLACK, 1)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        notes.append("SCHED_FIFO 50")
    except OSError as exc:  # without it tails grow to a few ms under load (notes)
        notes.append(f"no real-time priority ({exc.strerror})")
    # Per-packet objects hold no cycles (reference counting frees them), and a
    # collection pass over the engine's objects (thousands of links and queues at
    # scale) would hold every packet in flight for milliseconds.
    gc.disable()
    # Any socket asking for receive timestamps makes the kernel stamp every
    # packet on arrival; NFQUEUE then hands us that stamp.
    stamp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stamp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    _tune_process.keep = stamp  # type: ignore[attr-defined]
    return notes


def main() -> int:
    notes = _tune_process()
    engine = Engine()
    sys.stdout.write(json.dumps({"ok": "ready", "pid": os.getpid(), "notes": notes}) + "\n")
    sys.stdout.flush()
    engine.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
