"""Human-readable output: tables and progress bars (rich), never on the JSON path."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from netemu.model.topology import Topology
from netemu.plan.planner import Schedule

#: Above this many links the schedule summarises links that never changed.
_MAX_ROWS = 60


@contextmanager
def progress(total: int, what: str) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for long jobs; silent when stderr is not a terminal."""
    bar = Progress(
        TextColumn(what),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        disable=total < 200 or not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def _hms(t: datetime) -> str:
    return t.strftime("%H:%M:%S")


def print_partition(topology: Topology, result: dict, part) -> None:
    """``netemu plan --machines M``: what each machine runs, and what crosses machines."""
    console = Console()
    table = Table(title=f"{topology.name} on {part.machines} machines", title_justify="left")
    for col in ("machine", "satellites", "ground stations", "aircraft", "ISLs inside",
                "ISLs to other machines", "nodes"):  # fmt: skip
        table.add_column(col)
    names = [n.name for n in topology.nodes]
    for row in result["machines"]:
        mine = [names[i] for i in part.nodes_of(row["machine"])]
        shown = ", ".join(mine[:3]) + (f", ... {len(mine) - 3} more" if len(mine) > 3 else "")
        table.add_row(str(row["machine"]), str(row["satellites"]), str(row["ground_stations"]),
                      str(row["aircraft"]), str(row["isls_inside"]), str(row["isls_across"]),
                      shown)  # fmt: skip
    console.print(table)
    isls, across = result["isls"], result["isls_across"]
    share = 100 * across / isls if isls else 0.0
    epochs, access = result["access_link_epochs"], result["access_link_epochs_across"]
    access_share = 100 * access / epochs if epochs else 0.0
    console.print(
        f"ISLs between machines: {across} of {isls} ({share:.1f}%); ground and air links "
        f"between machines: {access_share:.1f}% of their link-epochs"
    )


def print_schedule(
    topology: Topology, schedule: Schedule, start: datetime, duration_s: float, step_s: float
) -> None:
    console = Console()
    sats, gs, ac = (len(topology.satellites), len(topology.ground_stations), len(topology.aircraft))
    console.print(
        f"[bold]{topology.name}[/]: {sats} satellites, {gs} ground stations, {ac} aircraft; "
        f"{schedule.epochs} epochs from {start.isoformat().replace('+00:00', 'Z')} "
        f"every {step_s:g} s over {duration_s:g} s"
    )
    histories = sorted(schedule.links.values(), key=lambda h: (h.kind, h.a, h.b))
    end = start.timestamp() + (schedule.epochs - 1) * step_s
    steady = [
        h
        for h in histories
        if len(h.intervals) == 1
        and h.intervals[0][0] == start
        and abs(h.intervals[0][1].timestamp() - end) < 1e-6
    ]
    shown = histories if len(histories) <= _MAX_ROWS else [h for h in histories if h not in steady]

    table = Table(title="Link schedule", title_justify="left")
    for col in ("link", "kind", "up (UTC)", "delay ms"):
        table.add_column(col)
    for h in shown[:_MAX_ROWS]:
        spans = ", ".join(f"{_hms(a)}-{_hms(b)}" for a, b in h.intervals)
        table.add_row(f"{h.a}-{h.b}", h.kind, spans, f"{h.min_delay_ms:.3f}-{h.max_delay_ms:.3f}")
    if len(shown) > _MAX_ROWS:
        table.add_row(f"... {len(shown) - _MAX_ROWS} more links", "", "", "")
    if shown is not histories and steady:
        lo = min(h.min_delay_ms for h in steady)
        hi = max(h.max_delay_ms for h in steady)
        table.add_row(f"{len(steady)} links", "mixed", "up throughout", f"{lo:.3f}-{hi:.3f}")
    console.print(table)

    per_node, combined = schedule.availability()
    if per_node:
        table = Table(title="Availability (a link carrying traffic)", title_justify="left")
        for col in ("node", "available"):
            table.add_column(col)
        for name, share in per_node.items():
            table.add_row(name, f"{100 * share:.1f}%")
        if combined is not None and len(topology.ground_stations) > 1:
            table.add_row("any ground station", f"{100 * combined:.1f}%")
        console.print(table)

    events = [(t, e) for t, e in schedule.events if e["type"] == "handover"] or schedule.events
    kind = "Handovers" if events and events[0][1]["type"] == "handover" else "Events"
    table = Table(title=f"{kind} ({len(events)})", title_justify="left")
    for col in ("time", "event", "detail"):
        table.add_column(col)
    for t, e in events[:_MAX_ROWS]:
        if e["type"] == "handover":
            detail = (
                f"{e['node']}: {e['from']} -> {e['to']} ({e['reason']}; {e['mode']}, "
                f"{e['interruption_s']:g} s without traffic)"
            )
        else:
            detail = f"{e['a']}-{e['b']} ({e['kind']})" + (
                f": {e['reason']}" if "reason" in e else ""
            )
        table.add_row(_hms(t), e["type"], detail)
    if len(events) > _MAX_ROWS:
        table.add_row("...", f"{len(events) - _MAX_ROWS} more", "")
    console.print(table)


class StatusView:
    """The live status of a run: a redrawn table on a terminal, a line every 10 s otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        """``quiet`` (``-q``): no status, and only the messages that say a failure."""
        self.console = Console(file=sys.stderr)
        self.live = None
        self.quiet = quiet
        self._last_line = 0.0

    def message(self, text: str, failure: bool = False) -> None:
        if failure or not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def __enter__(self) -> StatusView:
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def update(self, status: dict) -> None:
        import time

        if self.quiet:
            return
        text = (
            f"{status['time']:%Y-%m-%d %H:%M:%S} UTC  epoch {status['epoch']}  "
            f"links up {status['links_up']}/{status['links']} "
            f"(acquiring {status['links_acquiring']})  handovers {status['handovers']}  "
            f"late {status['late_epochs']}  shaper {status['shaper']}"
        )
        if self.live is not None:
            table = Table.grid(padding=(0, 2))
            table.add_row("[bold]netemu[/]", text)
            self.live.update(table)
        elif time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            self.console.print(text, highlight=False, soft_wrap=True)


def _ms(stats: dict, key: str) -> str:
    return f"{stats[key]:.3f}" if key in stats else "-"


def _paths_table(title: str, column: str, key: str, rows: list[dict]) -> Table:
    """End-to-end rows (a kind or a flow, its count, paths and latency) as a table."""
    table = Table(title=title)
    for col in (column, "count", "paths", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(
            col, justify="left" if col in (column, "paths") else "right", overflow="fold"
        )
    for r in rows:
        s = r["latency_ms"]
        table.add_row(
            r[key], str(r["messages"]), "\n".join(r["paths"][:4]),
            _ms(s, "p50"), _ms(s, "p95"), _ms(s, "p99"), _ms(s, "max"),
        )  # fmt: skip
    return table


def print_analysis(result: dict) -> None:
    """``netemu analyze``'s tables: per hop, per message kind, events."""
    console = Console()
    hops = Table(title=f"Per hop ({result['packets']:,} packets in {len(result['files'])} files)")
    for col in ("hop", "sent", "arrived", "lost", "loss %", "p50 ms", "p95 ms", "max ms"):
        hops.add_column(col, justify="left" if col == "hop" else "right")
    for h in result["hops"]:
        s = h["latency_ms"]
        hops.add_row(
            h["hop"], str(h["sent"]), str(h["arrived"]), str(h["lost"]),
            f"{h['loss_percent']:.2f}", _ms(s, "p50"), _ms(s, "p95"), _ms(s, "max"),
        )  # fmt: skip
    console.print(hops if result["hops"] else "No hop tapped on both sides (capture both ends).")
    for tap, n in result.get("dropped_by_capture", {}).items():
        console.print(
            f"[yellow]warning: tap {tap} dropped {n} packets: its hop's loss is overstated"
        )
    console.print(_paths_table(
        "End to end (first tap leaving to last tap arriving)", "messages", "kind",
        result["end_to_end"],
    ))  # fmt: skip
    if "flows" in result:
        per_flow = _paths_table("End to end per flow", "flow", "flow", result["flows"])
        console.print(per_flow if result["flows"] else "No UDP or TCP flow matched.")
    if result["events"]:
        first = result["events"][0]["unix_ns"]
        events = Table(title="Events")
        events.add_column("t (s)", justify="right")
        events.add_column("event")
        for e in result["events"]:
            events.add_row(f"{(e['unix_ns'] - first) / 1e9:.3f}", e["text"])
        console.print(events)


def print_stages(result: dict) -> None:
    """``netemu stages``: latency per step and end to end."""
    console = Console()
    table = Table(title=f"Stages ({result['units']:,} units: {' > '.join(result['stages'])})")
    for col in ("step", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="left" if col == "step" else "right")
    rows = [*result["steps"].items(), ("end to end", result["end_to_end_ms"])]
    for step, s in rows:
        table.add_row(
            step, str(s["count"]), _ms(s, "p50"), _ms(s, "p95"), _ms(s, "p99"), _ms(s, "max")
        )
    console.print(table)
