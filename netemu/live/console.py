"""The interactive prompt of ``netemu run --cli`` (Mininet's CLI with netemu's
commands), and ``netemu run --test`` (Mininet's ``mn --test``; over a cluster the
same tests, run with programs in the nodes on their machines).

Everything Mininet's users type works on the live network (``t0 ping t1``,
``pingall``, ``iperf``, ``links``, ``net``, ``dump``, ``link a b down``), and
netemu adds what its network knows: ``route``, ``delay``, ``status``, ``events``,
``fault`` and ``capture``. A command's bad input is one line; the prompt goes on.
"""

from __future__ import annotations

import itertools
import json
import re

from mininet.cli import CLI
from mininet.log import error, output

from netemu.errors import InputError
from netemu.model.faults import parse_cli


class Console(CLI):
    prompt = "mininet> "

    def __init__(self, emu, **kwargs):
        self.emu = emu
        super().__init__(emu.mininet(), **kwargs)

    def onecmd(self, line: str):
        try:
            return super().onecmd(line)
        except InputError as exc:
            error(f"{exc}\n")
            return False

    def _two_nodes(self, line: str, usage: str) -> tuple[str, str]:
        args = line.split()
        if len(args) != 2:
            raise InputError(f"usage: {usage}")
        for name in args:
            if name not in self.emu.topology.by_name:
                raise InputError(f"no node named {name!r}")
        return args[0], args[1]

    def do_route(self, line: str) -> None:
        """route A B: the current path from A to B."""
        a, b = self._two_nodes(line, "route A B")
        path = self.emu.route(a, b)
        output(f"{' -> '.join(path)}\n" if path else f"{a} -> {b}: no route now\n")

    def do_delay(self, line: str) -> None:
        """delay A B: the path's one-way delay now, and each link's on it."""
        a, b = self._two_nodes(line, "delay A B")
        path = self.emu.route(a, b)
        if not path:
            output(f"{a} -> {b}: no route now\n")
            return
        for u, v in itertools.pairwise(path):
            link = self.emu.link(u, v)
            output(f"  {u} -> {v}: {link.shapes[0].delay_ms:.3f} ms ({link.distance_km:.0f} km)\n")
        output(f"{a} -> {b}: {self.emu.path_delay_ms(a, b):.3f} ms over {len(path) - 1} links\n")

    def do_status(self, line: str) -> None:
        """status: orbital time, epoch, links up and acquiring, handovers."""
        s = self.emu.status()
        output(
            f"{s['time']:%Y-%m-%d %H:%M:%S} UTC, epoch {s['epoch']}, {s['wall_s']:.1f} s in: "
            f"{s['links_up']} links up, {s['links_acquiring']} acquiring of {s['links']}; "
            f"{s['handovers']} handovers, {s['late_epochs']} late epochs; shaper {s['shaper']}\n"
        )

    def do_events(self, line: str) -> None:
        """events [N]: the run's last N events (default 10), as the run log has them."""
        try:
            n = int(line or 10)
        except ValueError:
            raise InputError(f"usage: events [N], got {line!r}") from None
        for event in list(self.emu.events)[-n:] if n > 0 else []:
            output(json.dumps(event) + "\n")

    def do_fault(self, line: str) -> None:
        """fault KIND:TARGET[/SECONDS][,loss=P][,jitter=MS]: a fault from now on, as
        ``netemu run --fault`` (e.g. ``fault cut:kep3-kep4/30``, ``fault reboot:kep5/20``)."""
        fault = parse_cli(line)
        if fault.at_s:
            raise InputError(f"fault {line.strip()!r}: a fault typed here begins now (no @)")
        self.emu.inject(fault.kind, "-".join(fault.target), fault.for_s, fault.loss_percent,
                        fault.jitter_ms)  # fmt: skip
        output(f"{fault.kind} {'-'.join(fault.target)} from the next epoch\n")

    def do_capture(self, line: str) -> None:
        """capture POINT: capture a node (sat3) or a link (link:sat3-sat4) from now on."""
        self.emu.capture(line.strip())
        output(f"capturing {line.strip()} into {self.emu.captures.directory}\n")


def smoke_test(emu, kind: str, settle_s: float = 30.0) -> bool:
    """``netemu run TOPO --test KIND``, as ``mn --test``: once the first links have
    acquired, ``pingall`` (every pair the routes connect answers, every other pair
    does not: those the plan leaves unconnected now), ``iperf`` (TCP between the first
    and the last node that have a route), or ``route`` (every pair has one). Prints
    the result; True when it passed."""
    names = list(emu.names)
    emu.wait_until(lambda: emu.status()["links_acquiring"] == 0, timeout=settle_s)
    pairs = list(itertools.permutations(names, 2))
    routed = {(a, b) for a, b in pairs if emu.route(a, b)}
    alone = sorted({a for a, _ in pairs} - {a for a, _ in routed})
    if kind == "route":
        for a, b in pairs:
            if (a, b) not in routed:
                output(f"no route {a} -> {b}\n")
        output(f"*** Results: {len(routed)}/{len(pairs)} pairs have a route now\n")
        return len(routed) == len(pairs)
    if kind == "pingall":
        answered = _answered(emu, names)
        wrong = sorted((routed - answered) | (answered - routed))
        output(
            f"*** Results: {len(answered)}/{len(pairs)} answered; "
            + (f"{len(pairs) - len(routed)} pairs have no route now ({', '.join(alone) or '-'}); "
               if len(routed) < len(pairs) else "")
            + (f"{len(wrong)} pings not as the routes say: {wrong[:5]}\n" if wrong
               else "every ping as the routes say\n")
        )  # fmt: skip
        return not wrong
    if kind == "iperf":
        ends = [n for n in names if any((n, m) in routed for m in names)]
        if len(ends) < 2:
            output("*** Results: no two nodes have a route between them now\n")
            return False
        if not hasattr(emu, "mininet"):  # over a cluster
            return _iperf3(emu, ends[0], ends[-1])
        net = emu.mininet()
        server, _ = net.iperf([net.get(ends[0]), net.get(ends[-1])], seconds=5)
        return bool(re.match(r"[\d.]+ [KMG]?bits/sec", server))
    raise InputError(f"--test must be pingall, iperf or route, got {kind!r}")


def _answered(emu, names: list[str]) -> set[tuple[str, str]]:
    """The pairs (a, b) whose ping answered: Mininet's pingall on one machine; over a
    cluster, one ping each from a shell in every node, on its machine, all at once."""
    if hasattr(emu, "mininet"):
        net = emu.mininet()
        return {(a.name, b.name) for a, b, (_, got, *_) in net.pingFull(timeout=1) if got}
    shells = {}
    for a in names:
        script = "; ".join(
            f"ping -n -q -c 1 -W 1 {emu.address(b)} >/dev/null 2>&1 && echo {b}"
            for b in names
            if b != a
        )
        shells[a] = emu.host(a).popen(["sh", "-c", script], text=True)
    return {
        (a, b)
        for a, shell in shells.items()
        for b in shell.communicate(timeout=5 + 2 * len(names))[0].split()
    }


def _iperf3(emu, client: str, server: str) -> bool:
    """TCP from ``client`` to ``server`` for 5 s with iperf3, each on its node's machine;
    prints the rate the server received, as Mininet's iperf prints it."""
    to, me = emu.address(server), emu.address(client)
    listener = emu.host(server).popen(["iperf3", "-s", "-1", "-B", to, "--forceflush"], text=True)
    while "listening" not in (line := listener.stdout.readline()):
        if not line:  # it ended without listening
            output(f"*** iperf3 server in {server} did not start\n")
            return False
    sender = emu.host(client).popen(["iperf3", "-c", to, "-B", me, "-t", "5", "-J"], text=True)
    out, _ = sender.communicate(timeout=60)
    listener.communicate(timeout=30)
    try:
        rate = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError):
        output(f"*** iperf3 {client} -> {server} failed: {out.strip()[-200:]}\n")
        return False
    output(f"*** Results: {client} -> {server}: {rate / 1e6:.1f} Mbits/sec\n")
    return rate > 0
