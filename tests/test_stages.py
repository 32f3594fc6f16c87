"""Stage records of users' applications (netemu.stages): read from a run folder,
followed unit by unit, reported per step and end to end; a bad line named."""

from __future__ import annotations

import json

import pytest

from netemu import stages
from netemu.errors import InputError

MS = 1_000_000


def write(folder, instance, records):
    path = folder / "containers" / instance / "stages.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_units_are_followed_across_instances(tmp_path):
    """A frame captured on one instance and inferred on another: per step and end to
    end, whichever instance wrote which stage."""
    t0 = 1_782_003_600 * 10**9
    write(tmp_path, "sensor-0", [{"id": f"f{k}", "stage": "captured", "unix_ns": t0 + k * 100 * MS}
                                 for k in range(3)])  # fmt: skip
    write(tmp_path, "detector-1", [
        *({"id": f"f{k}", "stage": "received", "unix_ns": t0 + k * 100 * MS + 15 * MS}
          for k in range(3)),
        *({"id": f"f{k}", "stage": "inferred", "unix_ns": t0 + k * 100 * MS + (40 + k) * MS,
           "boxes": 3} for k in range(2)),
    ])  # fmt: skip
    records = stages.read(tmp_path)
    assert {r["instance"] for r in records} == {"sensor-0", "detector-1"}
    result = stages.report(records)
    assert result["units"] == 3 and result["stages"] == ["captured", "received", "inferred"]
    assert result["reached"] == {"captured": 3, "received": 3, "inferred": 2}
    assert result["steps"]["captured > received"]["count"] == 3
    assert result["steps"]["captured > received"]["p50"] == pytest.approx(15.0)
    assert result["steps"]["received > inferred"]["max"] == pytest.approx(26.0)
    assert result["end_to_end_ms"]["count"] == 3  # f2 ends at "received"


def test_a_bad_record_is_named_by_file_and_line(tmp_path):
    write(tmp_path, "x-0", [{"id": 1, "stage": "a", "unix_ns": 5}])
    path = tmp_path / "containers" / "x-0" / "stages.jsonl"
    path.write_text(path.read_text() + '{"id": 2, "stage": "b"}\n')
    with pytest.raises(InputError, match=r"stages\.jsonl:2: not a stage record"):
        stages.read(tmp_path)
    with pytest.raises(InputError, match=r"no stages\.jsonl"):
        stages.read(tmp_path / "containers" / "nothing")
