"""What the service scenarios (``scenarios/*.py``) share: options, the emulation,
the deployment, results and the summary table.

A scenario brings up a topology, deploys sensors, compute services and
consumers (:class:`~netemu.services.deploy.Deployment`), lets frames flow,
then writes ``summary.json``, ``reports.csv`` and plots
(:mod:`netemu.services.results`) and prints a table. Bad input exits 2 with
one line; everything is removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from netemu.errors import EXIT_BAD_INPUT, EXIT_RUNTIME_FAILURE, InputError
from netemu.kernel.privileges import make_dirs
from netemu.live.emulation import Emulation
from netemu.live.signals import Stopped, StopSignals
from netemu.live.workloads import WorkloadError
from netemu.model.faults import parse_cli
from netemu.model.topology import Topology, load_topology
from netemu.services import measure, results
from netemu.services.backend import cpu_name
from netemu.services.deploy import Deployment, DeploymentError
from netemu.services.image import choose_engine, services_image

REPO = Path(__file__).resolve().parents[2]


def parser(doc: str, topology: str = "kepler.yaml", **defaults) -> argparse.ArgumentParser:
    """Options every services scenario has (``defaults`` override their defaults)."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--topology", type=Path, default=REPO / "topologies" / topology)
    p.add_argument("--frames", type=int, default=30, help="frames the sensor sends")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    p.add_argument("--size", type=int, default=1024, help="tile side, px (4 B each: 4 MB)")
    p.add_argument("--targets", type=int, default=8, help="moving targets in the scene")
    p.add_argument("--seed", type=int, default=1, help="scene seed (same seed, same frames)")
    p.add_argument("--speed", type=float, default=1.0, help="orbital time acceleration")
    p.add_argument("--shaper", default="auto", choices=["auto", "netem", "wire"])
    p.add_argument("--runtime", default="auto", choices=["auto", "podman", "process"])
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--hold-ms", type=float, default=0.0,
        help="device model: hold each inference this long (e.g. a published Orin latency)",
    )  # fmt: skip
    p.add_argument("--results", type=Path, default=None, help="results folder")
    p.add_argument(
        "--capture", action="append", default=[], metavar="POINTS",
        help="capture nodes/links for Wireshark, e.g. sat3,link:sat3-sat4 (in <results>/captures)",
    )  # fmt: skip
    p.add_argument(
        "--fault", action="append", default=[], metavar="FAULT",
        help="a fault on purpose, e.g. cut:kep0-kep1@+100/150 (see netemu run --help)",
    )  # fmt: skip
    p.set_defaults(**defaults)
    return p


def run_main(name: str, body: Callable[[Console], int]) -> int:
    """Run a scenario's body: one-line errors, exit 2 on bad input, 1 when the
    deployment fails, 128 + the signal's number when a signal stops it."""
    console = Console(width=None if sys.stdout.isatty() else 120)
    if os.geteuid() != 0:
        print(f"{name}: needs root for network namespaces: run it with sudo", file=sys.stderr)
        return EXIT_BAD_INPUT
    with StopSignals() as stop:
        try:
            code = body(console)
            stop.check()  # a signal whose exception Python dropped (in a __del__)
            return code
        except InputError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except (DeploymentError, WorkloadError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_RUNTIME_FAILURE
        except Stopped:
            stop.hold()
            print(f"{name}: {stop.stopped}; everything removed", file=sys.stderr)
            return stop.stopped.exit_status


def load(args) -> Topology:
    return load_topology(args.topology)


def sensor_node(topo: Topology) -> str:
    """The node with role ``sensor`` (the first satellite if none has it)."""
    return ([n.name for n in topo.with_role("sensor")] or [topo.satellites[0].name])[0]


@contextlib.contextmanager
def deployed(name: str, args, topo: Topology, wall_s: float) -> Iterator[Deployment]:
    """A running emulation of ``wall_s`` seconds with a deployment on it."""
    engine = choose_engine(args.runtime)
    image = services_image() if engine == "podman" else None  # before the run: made once
    emu = Emulation(
        topo,
        duration_s=wall_s * args.speed,
        speed=args.speed,
        shaper=args.shaper,
        run_name=name,
        folder=args.results,  # results/<name> unless told (netemu.live.run)
        log_path=True,
        keep_history=True,
        capture=args.capture,
        faults=[parse_cli(f) for f in args.fault],
    )
    folder = make_dirs(emu.this_run.folder)
    results.mark(folder, complete=False)
    try:
        with emu, Deployment(emu, folder, engine, args.backend, args.hold_ms, image) as dep:
            emu.start_controller()
            yield dep
        results.mark(folder, complete=True)  # not reached when the run fails or is killed
    finally:
        emu.this_run.hand_over()  # and what the scenario wrote after the run


def sensor_options(args) -> dict:
    return {
        "frames": args.frames,
        "interval": args.interval,
        "size": args.size,
        "targets": args.targets,
        "seed": args.seed,
    }


def run_pipeline(
    dep: Deployment, sensors: list[str], computes: list[str], consumers: list[str], args, wall_s
) -> None:
    """Consumers, a compute service per node, the sensor; until its frames are sent and the
    last reports are in, then everything stopped."""
    for c in consumers:
        dep.consumer(c)
    services = [dep.compute(c, consumers, sensors) for c in computes]
    sensor = dep.sensor(sensors[0], services, **sensor_options(args))
    dep.wait(sensor, timeout=wall_s + 60)
    dep.emu.wait(3.0)  # the last reports on their way
    dep.stop()


def ran_on(dep: Deployment, logs: dict, scenario: str, args) -> dict:
    starts = [r for _, r in measure.records(logs, "inference", "start")]
    return {
        "scenario": scenario,
        "topology": str(args.topology),
        "start": dep.emu.start_time.isoformat(),
        "speed": args.speed,
        "shaper": dep.emu.shaper.name,
        "runtime": dep.engine,
        "image": dep.image,
        "backend": starts[0]["backend"] if starts else None,
        "devices": sorted({d for r in starts for d in r["devices"]}),
        "device_model": f"inference held {args.hold_ms:g} ms (not measured)"
        if args.hold_ms
        else "none: measured on this host",
        "host_cpu": cpu_name(),
    }


def finish(dep: Deployment, scenario: str, args, folder: Path | None = None) -> dict:
    """Results of a deployment's logs written to ``folder``; the figures (and the
    logs and report rows they came from) returned."""
    folder = folder or dep.results
    logs = measure.load_logs(dep.logs)
    summary = measure.summary(logs, dep.labels)
    accuracy = measure.accuracy(logs)
    meta = ran_on(dep, logs, scenario, args)
    rows = measure.report_rows(logs, dep.labels)
    paths = results.write(folder, meta, summary, accuracy, rows, list(dep.emu.events))
    return {
        "meta": meta, "summary": summary, "accuracy": accuracy, "paths": paths,
        "logs": logs, "rows": rows, "emulation": dep.emu,
    }  # fmt: skip


def table(title: str, figures: dict) -> Table:
    """Per consumer: delivered/lost, end-to-end percentiles, median of each stage, accuracy."""
    t = Table(title=f"{title} (stages: median ms)")
    for col in ("consumer", "got", "lost", "e2e ms p50/95/99"):
        t.add_column(col)
    for stage in measure.STAGES:
        t.add_column(stage[:5], justify="right")
    t.add_column("found/err px")
    for consumer, s in figures["summary"]["consumers"].items():
        st = s["stages_ms"]
        e2e = st.get("e2e", {})
        acc = figures["accuracy"].get(consumer, {})
        t.add_row(
            consumer,
            str(s["delivered"]),
            str(s["lost"]),
            "/".join(f"{e2e[k]:.1f}" for k in ("p50", "p95", "p99")) if e2e else "-",
            *(f"{st[x]['p50']:.1f}" if st.get(x) else "-" for x in measure.STAGES),
            f"{acc['detection_rate']:.0%} / {acc['error_px']:.2f}" if acc else "-",
        )
    return t


def describe(console: Console, figures: dict) -> None:
    m = figures["meta"]
    console.print(
        f"ran on: shaper [bold]{m['shaper']}[/], runtime [bold]{m['runtime']}[/], "
        f"backend [bold]{m['backend']}[/] ({', '.join(m['devices'])}); device model: "
        f"{m['device_model']}"
    )
    console.print("results: " + ", ".join(str(p) for p in figures["paths"].values()))
    captures = figures["emulation"].capture_files  # written when the emulation stopped
    if captures:
        console.print(
            "captures: " + ", ".join(map(str, captures)) + " (netemu analyze FILES; "
            "netemu wireshark installs the dissector)"
        )


def check_nodes(topo: Topology, names: list[str]) -> None:
    for name in names:
        if name not in topo.by_name:
            raise InputError(f"unknown node {name!r} (nodes: {', '.join(topo.by_name)})")
