"""The ``netemu`` command line.

``netemu plan`` prints a topology's link schedule (no root needed). Every
problem with the user's input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from netemu.errors import (
    EXIT_BAD_INPUT,
    EXIT_RUNTIME_FAILURE,
    InputError,
    TeardownError,
    describe,
)
from netemu.formats import stamp
from netemu.live import signals
from netemu.live.signals import Stopped, StopSignals

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


def _time_arguments(parser, duration: float | None, duration_help: str, step_help: str) -> None:
    """TOPOLOGY --start --duration --step, shared by plan and run."""
    parser.add_argument("topology", type=Path, help="topology YAML file")
    parser.add_argument("--start", type=_utc_time, help="ISO 8601 UTC (default: the file's start)")
    parser.add_argument(
        "--duration", type=_positive_seconds, default=duration, metavar="S", help=duration_help
    )
    parser.add_argument("--step", type=_positive_seconds, default=1.0, metavar="S", help=step_help)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netemu", description=__doc__.split("\n\n")[0])
    debug_help = "a runtime failure prints its traceback too"
    import netemu

    parser.add_argument("--version", action="version", version=f"netemu {netemu.__version__}")
    parser.add_argument("--debug", action="store_true", help=debug_help)
    loud, quiet = "say more (netemu's log: -v info, -vv debug)", "say only errors"
    parser.add_argument("-v", "--verbose", action="count", default=0, help=loud)
    parser.add_argument("-q", "--quiet", action="count", default=0, help=quiet)
    # Also after the command (netemu run --debug ...), without overriding the above.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=loud)
    common.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS, help=quiet)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    plan = sub.add_parser(
        "plan",
        parents=[common],
        help="print a topology's link schedule (no root needed)",
        description="Compute which links are up, their delays and the handovers over a "
        "period, from orbital geometry. No root needed, no network is touched.",
    )
    _time_arguments(
        plan,
        duration=600.0,
        duration_help="seconds to plan (default 600)",
        step_help="seconds between epochs (default 1)",
    )
    plan.add_argument(
        "--json", action="store_true", help="one JSON object per epoch and line (stable format)"
    )
    plan.add_argument(
        "--machines",
        type=int,
        metavar="M",
        help="split the nodes over M machines (by orbital plane; ground stations and "
        "aircraft with the satellites they link to most) and print the partition",
    )
    imp = sub.add_parser(
        "import",
        parents=[common],
        help="write another tool's constellation as a netemu topology file",
        description="Print a topology file (YAML) for a Hypatia satellite network directory "
        "(tles.txt with its header, isls.txt, ground_stations.txt; netemu also loads such a "
        "directory directly where a topology file goes).",
    )
    imp.add_argument("format", choices=["hypatia"])
    imp.add_argument("source", type=Path, help="the Hypatia satellite network directory")
    imp.add_argument("--name", help="the topology's name (default: the directory's)")
    run = sub.add_parser(
        "run",
        parents=[common],
        help="emulate a topology live (root)",
        description="Build the network (one Mininet host per node, one link per feasible "
        "link) and drive it from orbital geometry until the duration is over or Ctrl-C.",
    )
    _time_arguments(
        run,
        duration=None,
        duration_help="orbital seconds to run (default: until Ctrl-C)",
        step_help="wall-clock seconds between epochs, 0.1 to 3600 (default 1)",
    )
    run.add_argument(
        "--speed",
        type=_positive_seconds,
        default=1.0,
        metavar="X",
        help="orbital time runs X times faster than the wall clock (default 1)",
    )
    run.add_argument(
        "--shaper",
        choices=["auto", "netem", "wire"],
        default="auto",
        help="auto: netem where the kernel has it, else wire (TAPs and a compiled engine)",
    )
    run.add_argument("--name", help="run name (default: the topology's name)")
    run.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run over the machines of the Ray cluster at ADDRESS (head:6379, or auto): "
        "its nodes started with --resources '{\"netemu_machine_<name>\": 1}' (docs/scaling.md)",
    )
    run.add_argument(
        "--cli",
        action="store_true",
        help="open Mininet's CLI while the controller runs (exit it to stop)",
    )
    run.add_argument(
        "--test",
        choices=["pingall", "iperf", "route"],
        help="as mn --test: bring the network up, test it, print the result and exit 0 "
        "(passed) or 1 (failed): pingall (every pair the routes connect answers, no other), "
        "iperf (TCP between the first and the last connected node), route (every pair has one)",
    )
    run.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="JSON-lines log of link states and events (default: results/<name>/run.jsonl)",
    )
    run.add_argument(
        "--capture",
        action="append",
        default=[],
        metavar="POINTS",
        help="capture nodes and links, e.g. sat3,link:sat3-sat4 (pcapng files for Wireshark; "
        "repeatable)",
    )
    run.add_argument(
        "--capture-dir",
        type=Path,
        metavar="DIR",
        help="where the captures go (default: results/<name>/captures)",
    )
    run.add_argument(
        "--containers",
        type=Path,
        metavar="FILE",
        help="users' containers to run on the nodes: a YAML file with a containers: list, "
        "as a topology file's (docs/topology.md)",
    )
    run.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help="a fault on purpose, KIND:TARGET[@+S][/S][,loss=P][,jitter=MS]: cut:kep3-kep4@+60/30, "
        "terminal:kep3-kep4@+10/60, lose:kep5@+120, reboot:kep2@+30/120, "
        "degrade:kep0-kep1@+0/60,loss=20 (times in orbital seconds; repeatable)",
    )
    analyze = sub.add_parser(
        "analyze",
        parents=[common],
        help="latency and loss per hop and per message from netemu captures",
        description="Follow each packet through netemu capture files of one run (taken at "
        "several points, on one clock): one-way latency and loss per hop, end-to-end latency "
        "per message kind, and the run's events.",
    )
    analyze.add_argument("captures", type=Path, nargs="+", metavar="CAPTURE", help="pcapng files")
    analyze.add_argument("--json", action="store_true", help="print the result as JSON")
    analyze.add_argument(
        "--flows", action="store_true", help="also end to end per UDP/TCP flow (any application)"
    )
    analyze.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        metavar="PORT",
        help="per flow, only flows with this source or destination port (repeatable)",
    )
    stages = sub.add_parser(
        "stages",
        parents=[common],
        help="where an application's time goes, from its stage records",
        description="Follow each unit of work (a frame, a request) through the stage records "
        "that users' containers wrote ($NETEMU_RESULTS/stages.jsonl, docs/topology.md): "
        "latency per step and end to end.",
    )
    stages.add_argument("folder", type=Path, metavar="RUN_FOLDER", help="e.g. results/<run>")
    stages.add_argument("--json", action="store_true", help="print the result as JSON")
    wireshark = sub.add_parser(
        "wireshark",
        parents=[common],
        help="install the Wireshark dissector for netemu's protocol and events",
        description="Write netemu.lua (generated from netemu's protocol definitions) into your "
        "Wireshark personal plugin folder, or to --output for 'wireshark -X lua_script:FILE'.",
    )
    wireshark.add_argument(
        "--output", type=Path, metavar="FILE", help="write the dissector here instead"
    )
    clean = sub.add_parser(
        "clean",
        parents=[common],
        help="remove what killed runs left behind (root)",
        description="Kill netemu processes and delete namespaces named netemu-* "
        "(or those of one run). Nothing else is touched.",
    )
    clean.add_argument("--run", help="only this run's leftovers")
    return parser


def emulation_for(args: argparse.Namespace):
    """The Emulation ``netemu run`` asks for, every input checked (InputError) and
    nothing created yet."""
    from netemu.live.emulation import Emulation
    from netemu.model.faults import parse_cli
    from netemu.model.topology import load_topology

    topology = load_topology(args.topology)
    emu = Emulation(
        topology,
        start=args.start,
        duration_s=args.duration,
        step_s=args.step,
        speed=args.speed,
        shaper=args.shaper,
        run_name=args.name,
        log_path=args.log or True,  # run.jsonl in the run's folder unless told
        capture=args.capture,
        capture_dir=args.capture_dir,
        faults=[parse_cli(f) for f in args.fault],
    )
    if args.containers:
        from netemu.live.workloads import containers_file

        for i, spec in enumerate(containers_file(args.containers)):
            emu.add_container(**spec, where=f"{args.containers}: containers[{i}]")
    return emu


#: What a run over a cluster cannot do yet (docs/scaling.md), by option.
NOT_ON_A_CLUSTER = {"cli": "--cli", "containers": "--containers"}


def say_captures(view, emu) -> None:
    """The run's capture files, and what their taps missed."""
    for path in emu.capture_files:
        view.message(f"netemu: capture {path}")
    for tap, n in emu.captures.dropped.items():
        view.message(f"netemu: warning: capture tap {tap} dropped {n} packets (too fast to record)")
    for tap, status in emu.captures.stopped_early.items():
        view.message(
            f"netemu: warning: capture tap {tap}'s recorder stopped before the run "
            f"(exit status {status}): its packets end there"
        )


def cmd_run(args: argparse.Namespace) -> int:
    if args.cluster is not None:
        return run_cluster(args)
    # From here on a signal stops the run; Ctrl-C in --cli stops the prompt's command.
    stop = StopSignals(interrupt=not args.cli).__enter__()
    with signals.blocked():  # the threads these imports start leave signals to this one
        import netemu.live.emulation  # noqa: F401

    from netemu.live.machine import preflight
    from netemu.report import StatusView

    failure: Exception | None = None
    passed = True  # --test
    emu = emulation_for(args)
    preflight(("tcpdump",) if args.capture else ())
    topology, name, log = emu.topology, emu.run_name, emu.this_run.log
    view = StatusView(quiet=args.quiet > 0)
    try:
        view.message(
            f"netemu: building {topology.name} ({len(topology.nodes)} nodes) "
            f"with the {emu.shaper.name} shaper ..."
        )
        emu.start()
        view.message(f"netemu: up; shaper {emu.shaper.name}; log {log}")
        if args.cli:
            from netemu.live.console import Console

            emu.start_controller()
            Console(emu)
            emu.wait(0)  # the controller failed meanwhile: this run failed
        elif args.test:
            from netemu.live.console import smoke_test

            emu.start_controller()
            passed = smoke_test(emu, args.test)
            emu.wait(0)
        else:
            with view:
                view.update(emu.status())
                emu.run(on_epoch=lambda e: (stop.check(), view.update(e.status())))
        stop.check()
    except Stopped:
        pass  # said below, with the run's figures
    except InputError:
        raise  # refused before anything was made (e.g. a name in use): exit 2
    except Exception as exc:  # a runtime failure: one line below (a traceback with --debug)
        failure = exc
        if args.debug:
            traceback.print_exc()
    finally:
        stop.hold()  # a second Ctrl-C must not cut the teardown short
        status = emu.status() if emu.epoch is not None else None
        lag = emu.routes.in_force_ms[1:]  # the first update is bring-up's
        late = emu.shaping_late()
        try:
            emu.stop()
            removed = "everything removed"
        except TeardownError as exc:
            removed, failure = str(exc), failure or exc
        stop.__exit__()
    stopped = stop.stopped
    if failure is not None:
        if isinstance(failure, TeardownError):  # what was made is not all removed
            view.message(f"netemu: {failure}", failure=True)
        else:
            view.message(f"netemu: run {name} failed: {describe(failure)}; {removed}", True)
        view.message(f"netemu: run log {log}", failure=True)
        return EXIT_RUNTIME_FAILURE
    if status:
        how = f"stopped by {stopped.name}" if stopped else "done"
        view.message(
            f"netemu: {how} after {status['epoch'] + 1} epochs, {status['handovers']} "
            f"handovers, {status['late_epochs']} late epochs; everything removed"
        )
        if lag:
            view.message(
                f"netemu: routes in the kernel {statistics.median(lag):.0f} ms after their "
                f"update began (median), {max(lag):.0f} ms at worst; at most "
                f"{emu.routes.installer.most_pending:,} prefix changes waited to be sent; "
                f"{emu.routes_deferred} updates left their routes to the next"
            )
    elif stopped:
        view.message(f"netemu: stopped by {stopped.name} during bring-up; everything removed")
    if late.get("late"):
        view.message(
            f"netemu: warning: the shaping engine released {late['late']} packets more than "
            f"0.5 ms after their due time (worst {late['worst_late_ms']} ms): the machine was "
            "too busy for those delays to be exact"
        )
    if late.get("overload"):
        view.message(
            f"netemu: warning: emulator overload: the shaping engine could not carry "
            f"{late['overload']} packets (counted apart from the links' own loss): the "
            "traffic was more than this machine can emulate"
        )
    say_captures(view, emu)
    if stopped:
        return stopped.exit_status
    if not passed:
        view.message(f"netemu: --test {args.test} failed", failure=True)
        return EXIT_RUNTIME_FAILURE
    return 0


def run_cluster(args: argparse.Namespace) -> int:
    """``netemu run --cluster``: the driver here, an agent on each machine."""
    from netemu.cluster.agents import MachineLost
    from netemu.cluster.emulation import ClusterEmulation
    from netemu.model.faults import parse_cli
    from netemu.model.topology import load_topology
    from netemu.report import StatusView

    for key, option in NOT_ON_A_CLUSTER.items():
        if getattr(args, key):
            raise InputError(f"{option} does not run over a cluster yet (docs/scaling.md)")
    stop = StopSignals(interrupt=True).__enter__()
    topology = load_topology(args.topology)
    emu = ClusterEmulation(
        topology,
        None if args.cluster == "auto" else args.cluster,
        start=args.start,
        duration_s=args.duration,
        step_s=args.step,
        speed=args.speed,
        run_name=args.name,
        faults=[parse_cli(f) for f in args.fault],
        log_path=args.log or True,  # run.jsonl in the run's folder unless told
        shaper=args.shaper,
        capture=args.capture,
        capture_dir=args.capture_dir,
    )
    view = StatusView(quiet=args.quiet > 0)
    failure: Exception | None = None
    passed = True  # --test
    unreachable: list[str] = []
    try:
        view.message(
            f"netemu: building {topology.name} ({len(topology.nodes)} nodes) over the "
            f"cluster at {args.cluster} ..."
        )
        emu.start()
        where = {m.name: len(emu.partition.nodes_of(k)) for k, m in enumerate(emu.machines)}
        clocks = ", ".join(
            f"{m} {o.offset_ms:+.3f} ms (within {o.uncertainty_ms:.3f})"
            for m, o in emu.clock_offsets.items()
        )
        view.message(
            f"netemu: up over {len(where)} machines (nodes: "
            + ", ".join(f"{m} {n}" for m, n in where.items())
            + f"); {len(emu.links_across())} links across machines; clocks {clocks}; "
            f"log {emu.this_run.log}"
        )
        if args.test:
            from netemu.live.console import smoke_test

            emu.start_controller()
            passed = smoke_test(emu, args.test)
            emu.wait(0)  # the controller failed meanwhile: this run failed
        else:
            with view:
                view.update(emu.status())
                emu.run(on_epoch=lambda e: (stop.check(), view.update(e.status())))
        stop.check()
    except Stopped:
        pass
    except InputError:
        raise
    except Exception as exc:  # a lost machine, a runtime failure: one line below
        failure = exc
        if args.debug:
            traceback.print_exc()
    finally:
        stop.hold()
        status = emu.status() if emu.epoch is not None else None
        late = {}
        if failure is None and emu.agents is not None:
            with contextlib.suppress(Exception):  # a machine lost now: said by stop()
                late = emu.stats()
        try:
            unreachable = emu.stop()
        except Exception as exc:
            failure = failure or exc
        stop.__exit__()
    removed = (
        "everything removed"
        if not unreachable
        else f"machines {', '.join(unreachable)} unreachable: run 'netemu clean' on each"
    )
    if failure is not None:
        why = str(failure) if isinstance(failure, MachineLost) else describe(failure)
        view.message(f"netemu: run {emu.run_name} failed: {why}; {removed}", True)
        return EXIT_RUNTIME_FAILURE
    if status:
        how = f"stopped by {stop.stopped.name}" if stop.stopped else "done"
        view.message(
            f"netemu: {how} after {status['epoch'] + 1} epochs, {status['handovers']} "
            f"handovers, {status['late_epochs']} late epochs; {removed}"
        )
    for m, counters in late.items():
        if counters.get("late"):
            view.message(
                f"netemu: warning: machine {m}'s shaping engine released {counters['late']} "
                f"packets more than 0.5 ms late (worst {counters['worst_late_ms']} ms)"
            )
    say_captures(view, emu)
    if stop.stopped:
        return stop.stopped.exit_status
    if not passed:
        view.message(f"netemu: --test {args.test} failed", failure=True)
        return EXIT_RUNTIME_FAILURE
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import yaml

    from netemu.model.hypatia import topology_data
    from netemu.model.topology import load_topology

    data = topology_data(args.source, args.name)
    load_topology(args.source, {"name": data["name"]})  # checked as a run would check it
    print(f"# netemu {stamp('plan')['netemu_version']}: imported from Hypatia's "
          f"{args.source.resolve()}")  # fmt: skip
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import netemu.services.dissect  # noqa: F401 - the services' messages, by name
    from netemu.capture import analysis

    result = analysis.summary(analysis.load(args.captures), args.flows, set(args.port))
    if args.json:
        print(analysis.to_json(result))
    else:
        from netemu.report import print_analysis

        print_analysis(result)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from netemu import stages

    result = stages.report(stages.read(args.folder))
    if args.json:
        print(json.dumps({**stamp("stages"), **result}, indent=2))
    else:
        from netemu.report import print_stages

        print_stages(result)
    return 0


def cmd_wireshark(args: argparse.Namespace) -> int:
    import netemu.services.dissect  # noqa: F401 - the protocol the dissector decodes
    from netemu.capture import wireshark

    path = wireshark.install(args.output)
    print(f"netemu: dissector written to {path}")
    if args.output:
        print(f"open captures with: wireshark -X lua_script:{path} CAPTURE.pcapng")
    else:
        print("Wireshark loads it at start (Help > About > Plugins lists netemu.lua)")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    import os

    from netemu.kernel import netns

    if os.geteuid() != 0:
        raise InputError("netemu clean needs root (try: sudo netemu clean)")
    from netemu.capture.taps import Captures, logged_events
    from netemu.kernel.containers import remove_containers
    from netemu.routes.addressing import NETNS_PREFIX

    killed = netns.states(args.run)
    removed = netns.clean(args.run)  # kills the runs' tcpdumps with their namespaces
    for _, info in killed:
        if info.get("captures"):
            saved = Captures.salvage(info["captures"], logged_events(info.get("log")))
            removed += [f"(kept) captures of run {info['run']} in {saved}"] if saved else []
    prefix = NETNS_PREFIX + (f"{args.run}-" if args.run else "")
    removed += [f"container {c}" for c in remove_containers(prefix)]
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from netemu.model.topology import load_topology
    from netemu.plan.geometry import epoch_count
    from netemu.plan.planner import Planner, Schedule

    topology = load_topology(args.topology)
    planner = Planner(topology)
    count = epoch_count(args.duration, args.step)
    if count > MAX_EPOCHS:
        raise InputError(f"--duration/--step give {count:,} epochs, more than {MAX_EPOCHS:,}")
    start = args.start or topology.start
    if args.machines is not None and not 1 <= args.machines <= len(topology.nodes):
        raise InputError(
            f"--machines must be between 1 and the topology's {len(topology.nodes)} nodes, "
            f"got {args.machines}"
        )
    epochs = planner.run(start, args.duration, args.step)
    if args.machines is not None:
        return _print_partition(args, topology, epochs, count)
    if args.json:
        out = sys.stdout
        for epoch in epochs:
            line = {**stamp("plan"), **epoch.to_json(topology)}
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
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


def _print_partition(args: argparse.Namespace, topology, epochs, count: int) -> int:
    """``netemu plan --machines M``: the partition of the nodes, from the plan's links."""
    from netemu.plan.partition import count_link_epochs, partition, summary
    from netemu.report import print_partition, progress

    with progress(count, "planning") as advance:
        link_epochs, isl = count_link_epochs(epochs, advance)
    part = partition(topology, args.machines, link_epochs)
    result = summary(topology, part, link_epochs, isl)
    if args.json:
        names = [n.name for n in topology.nodes]
        nodes = dict(zip(names, part.machine.tolist(), strict=True))
        print(json.dumps({**stamp("partition"), **result, "nodes": nodes}, separators=(",", ":")))
        return 0
    print_partition(topology, result, part)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parser().parse_args(argv)
        from netemu import log

        log.configure(args.verbose - args.quiet)
        commands = {
            "plan": cmd_plan,
            "import": cmd_import,
            "run": cmd_run,
            "analyze": cmd_analyze,
            "stages": cmd_stages,
            "wireshark": cmd_wireshark,
            "clean": cmd_clean,
        }
        return commands[args.command](args)
    except InputError as exc:
        print(f"netemu: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Stopped as exc:  # before anything was made
        print(f"netemu: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("netemu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `netemu plan ... --json | head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a runtime failure: one line (a traceback with --debug)
        if args is not None and args.debug:
            raise
        print(f"netemu: failed: {describe(exc)} (--debug shows where)", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE


if __name__ == "__main__":
    sys.exit(main())
