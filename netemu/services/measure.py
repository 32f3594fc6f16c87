"""End-to-end latency of track reports, stage by stage, from the applications' logs.

Every report carries the stamps of its stages; the consumer adds its arrival.
All hosts share one clock, so each stage is an exact difference:

==========  ===============================================================
uplink      capture at the sensor -> whole frame at the compute node
            (``uplink_first``: -> its first fragment, i.e. path delay)
queue       frame complete -> a worker slot starts on it
inference   detection on the slot's device
tracking    the sensor's tracker, in frame order, and sending the report
downlink    report sent -> arrival at the consumer
==========  ===============================================================

``e2e`` (capture -> arrival) is measured on its own and equals their sum.
Also here: delivered/lost counts, percentiles, and the tracks scored against
the scene's ground truth. Pure functions over records; no network.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from netemu.services.scene import Scene
from netemu.stats import percentiles

STAGES = ("uplink", "queue", "inference", "tracking", "downlink")
STAMP_STAGES = {
    "uplink": ("capture_ns", "received_ns"),
    "uplink_first": ("capture_ns", "first_rx_ns"),
    "queue": ("received_ns", "inference_start_ns"),
    "inference": ("inference_start_ns", "inference_end_ns"),
    "tracking": ("inference_end_ns", "sent_ns"),
    "downlink": ("sent_ns", "arrival_ns"),
    "e2e": ("capture_ns", "arrival_ns"),
}
MATCH_PX = 3.0  # a track within this distance of a true target found it


def load_logs(folder: str | Path) -> dict[str, list[dict]]:
    """Records of every ``<node>-<app>.jsonl``; a torn last line (killed run) is skipped."""
    logs = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        logs[path.stem] = records
    return logs


def records(logs: dict[str, list[dict]], app: str, event: str):
    """(label, record) for every record of one event type in one app's logs."""
    for name, records in logs.items():
        if name.endswith(f"-{app}"):
            for r in records:
                if r["event"] == event:
                    yield name.rsplit("-", 1)[0], r


def report_rows(logs: dict[str, list[dict]], names: dict[int, str]) -> list[dict]:
    """One row per report received: who, when, and each stage in milliseconds."""
    rows = []
    for node, r in records(logs, "consumer", "report"):
        row = {
            "consumer": node,
            "compute": names[r["compute"]],
            "sensor": names[r["sensor"]],
            "seq": r["seq"],
            "capture_ns": r["capture_ns"],
            "arrival_ns": r["arrival_ns"],
            "tracks": len(r["tracks"]),
        }
        for stage, (a, b) in STAMP_STAGES.items():
            row[f"{stage}_ms"] = (r[b] - r[a]) / 1e6
        rows.append(row)
    return sorted(rows, key=lambda r: (r["consumer"], r["capture_ns"]))


def summary(logs: dict[str, list[dict]], names: dict[int, str]) -> dict:
    """Per consumer: delivered/lost and percentiles of every stage; per compute: frames."""
    rows = report_rows(logs, names)
    sent = {(names[r["sensor"]], r["seq"]) for _, r in records(logs, "sensor", "frame")}
    consumers = sorted({n for n, _ in records(logs, "consumer", "start")})
    out = {"frames_sent": len(sent), "consumers": {}, "computes": {}}
    for c in consumers:
        mine = [r for r in rows if r["consumer"] == c]
        got = {(r["sensor"], r["seq"]) for r in mine}
        out["consumers"][c] = {
            "delivered": len(got & sent),
            "lost": len(sent - got),
            "stages_ms": {
                s: percentiles(r[f"{s}_ms"] for r in mine) for s in (*STAGES, "uplink_first", "e2e")
            },
        }
    per_compute = defaultdict(lambda: {"frames": 0, "frames_lost": 0, "fragments_lost": 0})
    for node, _ in records(logs, "inference", "frame"):
        per_compute[node]["frames"] += 1
    for node, r in records(logs, "inference", "frame_lost"):
        per_compute[node]["frames_lost"] += 1
        per_compute[node]["fragments_lost"] += r["missing_fragments"]
    for node, r in records(logs, "inference", "start"):
        per_compute[node] |= {"slots": r["slots"], "backend": r["backend"], "hold_ms": r["hold_ms"]}
    out["computes"] = dict(per_compute)
    return out


def accuracy(logs: dict[str, list[dict]], warmup_frames: int = 3) -> dict[str, dict]:
    """Reported tracks against the scene's truth, per consumer (after the tracker's warm-up).

    ``detection_rate``: true targets with a track within 3 px; ``error_px``: mean
    distance of those; ``false_tracks``: tracks near no target.
    """
    scenes = {}
    for _, r in records(logs, "sensor", "start"):
        scenes[r["sensor"]] = Scene(
            r["seed"],
            r["size_px"],
            r["targets"],
            speed_px_s=r["speed_px_s"],
            frame_interval_s=r["interval_s"],
        )
    result = {}
    by_consumer = defaultdict(list)
    for node, r in records(logs, "consumer", "report"):
        if r["seq"] >= warmup_frames and r["sensor"] in scenes:
            by_consumer[node].append(r)
    for node, reports in by_consumer.items():
        found = total = false = 0
        errors = []
        for r in reports:
            scene = scenes[r["sensor"]]
            truth = scene.truth(r["seq"] * scene.frame_interval_s)
            tracks = np.array([t[1:3] for t in r["tracks"]]).reshape(-1, 2)
            total += len(truth)
            if len(tracks) == 0:
                continue
            dist = np.linalg.norm(truth[:, None, :] - tracks[None, :, :], axis=2)
            near = dist.min(axis=1) if len(truth) else np.array([])
            found += int((near < MATCH_PX).sum())
            errors += near[near < MATCH_PX].tolist()
            false += int((dist.min(axis=0) >= MATCH_PX).sum()) if len(truth) else len(tracks)
        result[node] = {
            "reports": len(reports),
            "detection_rate": found / total if total else float("nan"),
            "error_px": float(np.mean(errors)) if errors else float("nan"),
            "false_tracks": false,
        }
    return result
