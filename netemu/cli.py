"""The ``netemu`` command line.

``netemu plan`` prints a topology's link schedule (no root needed). Every
problem with the user's input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from netemu.errors import EXIT_BAD_INPUT, InputError

MAX_EPOCHS = 10_000_000


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see '{self.prog} --help')")


def _utc_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-06-21T03:00:00Z)"
        ) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netemu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    plan = sub.add_parser(
        "plan",
        help="print a topology's link schedule (no root needed)",
        description="Compute which links are up, their delays and the handovers over a "
        "period, from orbital geometry. No root needed, no network is touched.",
    )
    plan.add_argument("topology", type=Path, help="topology YAML file")
    plan.add_argument("--start", type=_utc_time, help="ISO 8601 UTC (default: the file's start)")
    plan.add_argument(
        "--duration",
        type=_positive_seconds,
        default=600.0,
        metavar="S",
        help="seconds to plan (default 600)",
    )
    plan.add_argument(
        "--step",
        type=_positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between epochs (default 1)",
    )
    plan.add_argument(
        "--json", action="store_true", help="one JSON object per epoch and line (stable format)"
    )
    return parser


def cmd_plan(args: argparse.Namespace) -> int:
    from netemu.plan import Planner, Schedule
    from netemu.topology import load_topology

    topology = load_topology(args.topology)
    planner = Planner(topology)
    count = planner.epoch_count(args.duration, args.step)
    if count > MAX_EPOCHS:
        raise InputError(f"--duration/--step give {count:,} epochs, more than {MAX_EPOCHS:,}")
    start = args.start or topology.start
    epochs = planner.run(start, args.duration, args.step)
    if args.json:
        out = sys.stdout
        for epoch in epochs:
            out.write(json.dumps(epoch.to_json(topology), separators=(",", ":")) + "\n")
            out.flush()
        return 0

    from netemu.report import print_schedule, progress

    schedule = Schedule(topology)
    with progress(count, "planning") as advance:
        for epoch in epochs:
            schedule.add(epoch)
            advance()
    print_schedule(topology, schedule, start, args.duration, args.step)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return {"plan": cmd_plan}[args.command](args)
    except InputError as exc:
        print(f"netemu: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("netemu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `netemu plan ... --json | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
