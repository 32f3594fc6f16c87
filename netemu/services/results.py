"""A services run's results on disk: JSON summary, CSV of reports, PNG plots.

- ``summary.json``: what it ran on (shaper, runtime, backend, device model),
  delivered/lost counts, p50/p95/p99 per stage and consumer, accuracy against
  ground truth, and the network events (handovers, links ready/down, faults);
- ``reports.csv``: one row per report and consumer, every stage in ms;
- ``latency.png``: end-to-end latency over time per consumer, lost reports
  and network events marked; ``stages.png``: median stage breakdown.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from netemu.formats import stamp
from netemu.services.measure import STAGES

EVENT_COLOURS = {
    "handover": "tab:red",
    "link-ready": "tab:green",
    "link-down": "tab:gray",
    "fault": "tab:purple",
    "fault-cleared": "tab:olive",
}


def mark(folder: Path, complete: bool) -> Path:
    """``status.json``: ``complete`` false from the start, true once the results are written,
    so a killed run's partial results (the logs, flushed per record) say what they are."""
    path = folder / "status.json"
    path.write_text(json.dumps({"complete": complete}) + "\n")
    return path


def write(
    folder: Path, meta: dict, summary: dict, accuracy: dict, rows: list[dict], events: list[dict]
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "summary.json",
        "csv": folder / "reports.csv",
        "latency": folder / "latency.png",
        "stages": folder / "stages.png",
    }
    shown = [e for e in events if e.get("type") in EVENT_COLOURS]
    paths["json"].write_text(
        json.dumps(
            {
                **stamp("results"),
                "ran_on": meta,
                **summary,
                "accuracy": accuracy,
                "events": shown,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )
    with paths["csv"].open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    t0 = min((r["capture_ns"] for r in rows), default=0)
    _latency_plot(paths["latency"], rows, shown, t0, meta)
    _stages_plot(paths["stages"], summary, meta)
    return paths


def _latency_plot(path: Path, rows, events, t0: int, meta: dict) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for consumer in sorted({r["consumer"] for r in rows}):
        mine = [r for r in rows if r["consumer"] == consumer]
        ax.plot(
            [(r["capture_ns"] - t0) / 1e9 for r in mine],
            [r["e2e_ms"] for r in mine],
            ".-",
            ms=3,
            lw=0.8,
            label=consumer,
        )
    seen = set()
    for e in events:
        kind = e["type"]
        ax.axvline(
            e["unix_s"] - t0 / 1e9,
            color=EVENT_COLOURS[kind],
            ls=":",
            lw=0.8,
            label=kind if kind not in seen else None,
        )
        seen.add(kind)
    ax.set_xlabel("capture time since first frame (s, wall clock)")
    ax.set_ylabel("sensor -> consumer latency (ms)")
    ax.set_title(f"{meta.get('scenario', '')}: end-to-end latency per report (gaps: reports lost)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stages_plot(path: Path, summary: dict, meta: dict) -> None:
    consumers = list(summary["consumers"])
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * max(1, len(consumers))))
    left = [0.0] * len(consumers)
    for stage in STAGES:
        widths = [
            summary["consumers"][c]["stages_ms"].get(stage, {}).get("p50", 0.0) for c in consumers
        ]
        ax.barh(consumers, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("median latency per stage (ms)")
    ax.set_title(
        f"{meta.get('scenario', '')}: where the time goes "
        f"({meta.get('backend', '')}, {meta.get('runtime', '')})"
    )
    ax.legend(fontsize=8, ncol=len(STAGES), loc="lower center", bbox_to_anchor=(0.5, 1.12))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
