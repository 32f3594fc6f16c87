"""Stage records: how a user's application says where its time goes, and the report.

An application in a container (``containers:``) writes one JSON object per line to
``$NETEMU_RESULTS/stages.jsonl`` as each unit of work (a frame, a request, a batch)
passes a stage::

    {"id": "frame-17", "stage": "captured", "unix_ns": 1782003600123456789}

``id`` names the unit (the same across instances and nodes: the frame that a
sensor captured and a compute node inferred), ``stage`` the point it reached,
``unix_ns`` the wall clock (``time.time_ns()``: every node of a run shares this
machine's clock); other keys are kept. :func:`report` follows each unit from stage
to stage, as the built-in services' stages are reported: latency per step (``a >
b``), end to end (first stage to last), and how many units reached each stage.

Pure computation over the records: ``netemu stages RUN_FOLDER`` reads every
instance's file.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from netemu.errors import InputError
from netemu.stats import percentiles

FILE_NAME = "stages.jsonl"


def read(folder: str | Path) -> list[dict]:
    """Every stage record under ``folder`` (a run folder: containers/*/stages.jsonl),
    each with the ``instance`` that wrote it; a bad line is an InputError naming it."""
    folder = Path(folder)
    files = sorted(folder.glob(f"**/{FILE_NAME}"))
    if not files:
        raise InputError(f"no {FILE_NAME} under this folder (see docs/topology.md)", folder)
    out = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                record["id"], record["stage"] = str(record["id"]), str(record["stage"])
                record["unix_ns"] = int(record["unix_ns"])
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(
                    f"not a stage record ({exc}): one JSON object with id, stage and unix_ns "
                    "per line",
                    path,
                    line=n,
                ) from None
            out.append({**record, "instance": path.parent.name})
    return out


def report(records: Iterable[dict]) -> dict:
    """Per step between consecutive stages of a unit, and end to end: latency
    percentiles (ms) and counts; the stages in the order units pass them."""
    by_id: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_id[r["id"]].append(r)
    steps: dict[str, list[float]] = defaultdict(list)
    reached: Counter[str] = Counter()
    orders: Counter[tuple[str, ...]] = Counter()
    end_to_end = []
    for rows in by_id.values():
        rows.sort(key=lambda r: r["unix_ns"])
        orders[tuple(r["stage"] for r in rows)] += 1
        reached.update({r["stage"] for r in rows})
        for a, b in itertools.pairwise(rows):
            steps[f"{a['stage']} > {b['stage']}"].append((b["unix_ns"] - a["unix_ns"]) / 1e6)
        if len(rows) > 1:
            end_to_end.append((rows[-1]["unix_ns"] - rows[0]["unix_ns"]) / 1e6)
    usual = orders.most_common(1)[0][0] if orders else ()
    return {
        "units": len(by_id),
        "stages": list(usual),
        "reached": {stage: reached[stage] for stage in sorted(reached, key=_order(usual))},
        "steps": {step: {"count": len(ms), **percentiles(ms)} for step, ms in steps.items()},
        "end_to_end_ms": {"count": len(end_to_end), **percentiles(end_to_end)},
    }


def _order(usual: tuple[str, ...]):
    return lambda stage: (usual.index(stage) if stage in usual else len(usual), stage)
