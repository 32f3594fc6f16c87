#!/usr/bin/env python3
"""Deploy a partner's system across 6 GPU slots on 2 spacecraft, through the emulated network.

As a partner would: its own image (containers/partner: built here offline from a
Containerfile), one instance per GPU slot, 3 on each of two compute satellites of
topologies/kepler.yaml. Measured, as the instances record it (stage records,
``netemu stages``):

- deployment: each instance fetches the software bundle (``--bundle-mb``) from a
  ground station over the ground-to-space link and the ISLs, at their rates;
  then it finds every other instance over the ISLs; the figure is how long until
  every instance answered every other;
- a job split across spacecraft: a model's stage 1 on one instance, its
  activations (``--activations-mb``) sent to stage 2 on a partner on the same
  spacecraft, or on one across the ISL, the result back: the ISL's cost is the
  difference (``--jobs`` of each, median and range).

Run as root::

    sudo .venv/bin/python scenarios/multi_gpu_deploy.py [--spacecraft kep1 kep2]

Results in results/multi_gpu_deploy/: summary.json, instances.csv, deploy.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netemu import stages  # noqa: E402
from netemu.api import Emulation, InputError, load_topology  # noqa: E402
from netemu.formats import stamp  # noqa: E402
from netemu.live.workloads import WorkloadError  # noqa: E402
from netemu.services import scenario  # noqa: E402
from netemu.services.image import base_image  # noqa: E402

NAME = "multi_gpu_deploy"
PARTNER = REPO / "containers" / "partner"
BUNDLE_PORT = 8000


def partner_image(folder: Path) -> tuple[Path, str]:
    """The partner's build context (its Containerfile on the offline Debian image) and
    the tag it builds, named by its contents."""
    folder.mkdir(parents=True, exist_ok=True)
    containerfile = (PARTNER / "Containerfile.in").read_text().format(base=base_image())
    (folder / "Containerfile").write_text(containerfile)
    (folder / "app.py").write_text((PARTNER / "app.py").read_text())
    digest = hashlib.sha256(containerfile.encode() + (PARTNER / "app.py").read_bytes())
    return folder, f"localhost/netemu-partner:{digest.hexdigest()[:12]}"


def ms_range(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values)}  # fmt: skip


def deploy(args, console_print) -> dict:
    topo = load_topology(args.topology)
    for node in (*args.spacecraft, args.ground):
        if node not in topo.by_name:
            raise InputError(f"no node {node!r} in {args.topology}")
    folder = args.results or REPO / "results" / NAME
    context, image = partner_image(folder / "image")
    emu = Emulation(topo, run_name=NAME, folder=folder, log_path=True, shaper=args.shaper)
    emu.add_container("bundle", image, nodes=args.ground, port=BUNDLE_PORT,
                      build={"context": str(context)},
                      command=["python3", "/app/app.py", "serve", str(args.bundle_mb),
                               str(BUNDLE_PORT)])  # fmt: skip
    crafts = [c for c in args.spacecraft for _ in range(args.gpus_each)]
    same, across = "worker-1", f"worker-{args.gpus_each}"
    emu.add_container("worker", image, nodes=crafts, gpus=1,
                      command=["python3", "/app/app.py", "worker",
                               f"http://{args.ground}:{BUNDLE_PORT}/bundle",
                               str(args.activations_mb), str(args.jobs), same, across])  # fmt: skip
    with emu:
        emu.start_controller()
        jobs_file = folder / "containers" / "worker-0" / "jobs.json"

        def finished() -> bool:
            gone = [c for c in emu.containers() if c["state"] == "exited"]
            if gone:
                c = gone[0]
                why = (folder / "containers" / f"{c['name']}.stderr").read_text().strip()
                raise WorkloadError(
                    f"{c['name']} on {c['node']} exited ({c['exit_status']}): {why[-300:]}"
                )
            return jobs_file.exists()

        if not emu.wait_until(finished, timeout=args.timeout_s):
            raise WorkloadError(f"the deployment did not finish within {args.timeout_s:.0f} s "
                                f"(containers: {emu.containers()})")  # fmt: skip
        emu.wait(0.5)
        routes = {c: emu.route(args.ground, c) for c in args.spacecraft}
        isl = emu.route(*args.spacecraft)
        isl_ms = emu.path_delay_ms(*args.spacecraft)
        ground_ms = {c: emu.path_delay_ms(args.ground, c) for c in args.spacecraft}
        placed = {c["name"]: c for c in emu.containers()}
        isl_mbit = min(emu.link(a, b).shapes[0].rate_mbit for a, b in itertools.pairwise(isl))
        first_hop = routes[args.spacecraft[0]][:2]
        uplink_gbit_s = emu.link(*first_hop).shapes[0].rate_mbit / 1000
    records = [r for r in stages.read(folder) if r["id"].startswith("deploy-worker")]
    by_instance: dict[str, dict[str, int]] = {}
    for r in records:
        by_instance.setdefault(r["id"].removeprefix("deploy-"), {})[r["stage"]] = r["unix_ns"]
    rows = []
    for name, t in sorted(by_instance.items()):
        rows.append({
            "instance": name, "node": placed[name]["node"],
            "gpu_slots": placed[name]["gpu_slots"],
            "bundle_ms": round((t["bundle"] - t["started"]) / 1e6, 2),
            "discovery_ms": round((t["answered-by-all"] - t["bundle"]) / 1e6, 2),
            "started_ns": t["started"], "bundle_ns": t["bundle"],
            "answered_ns": t["answered-by-all"],
        })  # fmt: skip
    jobs = json.loads(jobs_file.read_text())
    summary = {
        "scenario": NAME,
        "topology": topo.name,
        "shaper": emu.shaper.name,
        "image": image,
        "instances": len(rows),
        "gpu_mapping": emu.workloads.mapping,
        "bundle_mb": args.bundle_mb,
        "ground": args.ground,
        "ground_paths": {c: " > ".join(p or []) for c, p in routes.items()},
        "ground_path_delay_ms": ground_ms,
        "isl_path": " > ".join(isl or []),
        "isl_path_delay_ms": isl_ms,
        # From the first instance's start to the last one answered by every other.
        "every_instance_answered_ms": round(
            (max(r["answered_ns"] for r in rows) - min(r["started_ns"] for r in rows)) / 1e6, 2
        ),
        # All bundles over the ground link(s) at once: what the uplink carried.
        "bundle_aggregate_gbit_s": round(
            len(rows)
            * args.bundle_mb
            * 2**20
            * 8
            / (max(r["bundle_ns"] for r in rows) - min(r["started_ns"] for r in rows)),
            3,
        ),
        "uplink_rate_gbit_s": uplink_gbit_s,
        "bundle_ms": ms_range([r["bundle_ms"] for r in rows]),
        "discovery_ms": ms_range([r["discovery_ms"] for r in rows]),
        "split_job": {
            "activations_mb": jobs["activations_mb"],
            "same_spacecraft_ms": ms_range(jobs["same"]),
            "across_isl_ms": ms_range(jobs["across"]),
            "isl_cost_ms": round(
                statistics.median(jobs["across"]) - statistics.median(jobs["same"]), 2
            ),
            # What the physics alone sets: the round trip and the activations'
            # serialisation at the path's slowest link (TCP's slow start adds round trips).
            "isl_round_trip_ms": round(2 * isl_ms, 3),
            "activations_serialisation_ms": round(
                jobs["activations_mb"] * 2**20 * 8 / (isl_mbit * 1e3), 3
            ),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    summary = {**stamp("results"), **summary}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    with open(folder / "instances.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(folder / "deploy.png", rows, jobs)
    emu.this_run.hand_over()
    return summary


def plot(path: Path, rows: list[dict], jobs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["instance"] for r in rows]
    left.bar(names, [r["bundle_ms"] for r in rows], label="bundle from the ground")
    left.bar(names, [r["discovery_ms"] for r in rows],
             bottom=[r["bundle_ms"] for r in rows], label="every peer answered")  # fmt: skip
    left.set_ylabel("ms after the instance started")
    left.set_title("deployment, per instance")
    left.legend()
    right.boxplot([jobs["same"], jobs["across"]])
    right.set_xticks([1, 2], ["same spacecraft", "across the ISL"])
    right.set_ylabel("job time (ms)")
    right.set_title(f"split job, {jobs['activations_mb']} MB of activations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--topology", type=Path, default=REPO / "topologies" / "kepler.yaml")
    p.add_argument("--spacecraft", nargs=2, default=["kep1", "kep2"])
    p.add_argument("--gpus-each", type=int, default=3)
    p.add_argument(
        "--ground", default="c2_bodo", help="where the bundle is served from (linked at the start)"
    )
    p.add_argument("--bundle-mb", type=int, default=64)
    p.add_argument("--activations-mb", type=int, default=16)
    p.add_argument("--jobs", type=int, default=5)
    p.add_argument("--shaper", default="auto")
    p.add_argument("--timeout-s", type=float, default=240)
    p.add_argument("--results", type=Path, default=None, help="results folder")
    args = p.parse_args()

    def body(console) -> int:  # one-line failures and exit statuses: scenario.run_main
        summary = deploy(args, console.print)
        print(json.dumps({k: summary[k] for k in (
            "instances", "gpu_mapping", "every_instance_answered_ms", "bundle_ms",
            "bundle_aggregate_gbit_s", "uplink_rate_gbit_s", "discovery_ms", "isl_path",
            "isl_path_delay_ms")} | {"split_job": summary["split_job"]},
            indent=2, default=float))  # fmt: skip
        return 0

    return scenario.run_main(NAME, body)


if __name__ == "__main__":
    sys.exit(main())
