"""The nfqueue backend: delay and loss in a supervised user-space engine.

For kernels without ``sch_netem``. Each namespace sends what it receives on
its link interfaces (``to-*``) to NFQUEUE 0, without ``--queue-bypass``, so
nothing passes unless the engine (:mod:`netemu.shaping.engine`) lets it. Rate
limits stay in the kernel: HTB on each sending interface.

The engine is one process for all namespaces. :meth:`NfqueueShaper.check`
notices when it dies; traffic has then already stopped (fail closed) and the
run ends saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys

from netemu.shaping import (
    BLOCKED,
    Direction,
    Shape,
    Shaper,
    ShaperError,
    htb_rate,
    tc_batches,
)

RULE = "-t mangle -A PREROUTING -i to-+ -j NFQUEUE --queue-num 0"


class NfqueueShaper(Shaper):
    name = "nfqueue"

    def __init__(self) -> None:
        super().__init__()
        self.engine: subprocess.Popen | None = None
        self.ns_ids: dict[str, int] = {}
        self.notes: list[str] = []
        self.rates: dict[Direction, float] = {}

    @property
    def pids(self) -> list[int]:
        return [self.engine.pid] if self.engine else []

    def namespace_commands(self) -> list[str]:
        return [f"iptables {RULE}"]

    def started_at(self, direction: Direction, rate_mbit: float) -> None:
        self.rates[direction] = rate_mbit

    def start(self, namespaces: list[str]) -> None:
        self.engine = subprocess.Popen(
            [sys.executable, "-m", "netemu.shaping.engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._reply()
        self.notes = hello.get("notes", [])
        for i, ns in enumerate(namespaces):
            self.ns_ids[ns] = i
            self._send({"cmd": "bind", "ns": i, "path": f"/run/netns/{ns}"})
            reply = self._reply()
            if "error" in reply:
                raise ShaperError(f"NFQUEUE engine: {reply['error']}")

    def _send(self, *messages: dict) -> None:
        try:
            self.engine.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
            self.engine.stdin.flush()
        except (BrokenPipeError, OSError):
            self.check()
            raise

    def _reply(self) -> dict:
        line = self.engine.stdout.readline()
        if not line:
            self.check()
            raise ShaperError("NFQUEUE engine closed its output")
        return json.loads(line)

    def apply(self, changes: dict[Direction, Shape]) -> None:
        messages = []
        rate_lines: dict[str, list[str]] = {}
        for d, shape in changes.items():
            messages.append(
                {
                    "cmd": "set",
                    "ns": self.ns_ids[d.dst_netns],
                    "ifindex": self.ifindex[(d.dst_netns, d.dst_ifname)],
                    "delay_us": shape.delay_ms * 1000,
                    "jitter_us": shape.jitter_ms * 1000,
                    "loss": shape.loss,
                    "blocked": shape.blocked,
                    "fade_p": shape.fade_probability,
                    "fade_ms": shape.fade_ms,
                }
            )
            if self.rates.get(d, BLOCKED.rate_mbit) != shape.rate_mbit:
                rate_lines.setdefault(d.src_netns, []).append(
                    f"class change dev {d.src_ifname} parent 1: classid 1:10 htb "
                    + htb_rate(shape.rate_mbit)
                )
                self.rates[d] = shape.rate_mbit
        if rate_lines:
            tc_batches(rate_lines)
        if messages:
            self._send(*messages)

    def stats(self, full: bool = False) -> dict:
        if self.engine is None:
            return {}
        self._send({"cmd": "stats"})
        return self._reply()

    def check(self) -> None:
        if self.engine is not None and self.engine.poll() is not None:
            raise ShaperError(
                f"the NFQUEUE engine exited (status {self.engine.returncode}): "
                "traffic on all links is stopped"
            )

    def stop(self) -> None:
        if self.engine is None:
            return
        if self.engine.poll() is None:
            try:
                self._send({"cmd": "quit"})
                self.engine.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired, ShaperError):
                self.engine.kill()
                self.engine.wait()
        self.engine = None
