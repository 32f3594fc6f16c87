"""The run log's format (netemu.live.runlog), without root: the run first, marked
incomplete; per update only the links that changed; the end with why."""

from __future__ import annotations

import json

import pytest

from netemu.errors import ResultsError
from netemu.live.runlog import RunLog, link_row


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_only_links_that_changed_are_logged(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    log = RunLog(path, {"run": "r", "topology": "t"})
    isl = ("a", "b", "isl", 4000.0)
    log.update({"epoch": 0}, [link_row(*isl, 13.3426, "acquiring", 0.1, 0, 0.5)], {"events": []})
    # 0.3 us later and the same loss to 4 digits: nothing to say about a-b.
    log.update({"epoch": 1}, [link_row(*isl, 13.3429, "acquiring", 0.100001, 0, 0.5)], {})
    log.update({"epoch": 2}, [link_row(*isl, 13.3429, "up", 0.1, 0, 0.5),
                              link_row("a", "c", "space-air", 900.0, 3.0, "up", 0.2, 0.01, 0)],
               {})  # fmt: skip
    log.end(False, 3, "stopped by SIGTERM")
    first, *updates, last = _lines(path)
    assert first["run"] == "r" and first["complete"] is False
    assert [len(u["links"]) for u in updates] == [1, 0, 2]
    assert updates[0]["links"][0] == {
        "a": "a", "b": "b", "kind": "isl", "distance_km": 4000.0, "delay_ms": 13.3426,
        "state": "acquiring", "loss": 0.1, "fade_probability": 0.0, "jitter_ms": 0.5,
    }  # fmt: skip
    assert updates[0]["events"] == [] and updates[2]["epoch"] == 2
    assert last == {"end": True, "complete": False, "events": 3, "stopped": "stopped by SIGTERM"}


def test_a_folder_that_cannot_be_made_is_a_results_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ResultsError, match="cannot write the run log"):
        RunLog(tmp_path / "file" / "run.jsonl", {})
