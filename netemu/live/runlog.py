"""The run log: a live run's record, one JSON object per line, its format owned here.

- the first line: the run (``run``, ``topology``, ``shaper``, ``start``, ``step_s``,
  ``speed``, ``duration_s``) and ``"complete": false``, so a run killed with -9 says
  it did not complete;
- one line per update: orbital ``time``, ``wall_s`` since the run began, ``epoch``,
  the ``links`` whose state, delay (to a microsecond), ``loss``, ``fade_probability``
  or ``jitter_ms`` changed since the line before (every link every epoch would be
  ~360 KB a line for Starlink's shell 1), the ``events`` (:mod:`netemu.model.events`), how
  many shapes and routes changed and how long the update took (``apply_ms``);
- the last line: ``"end": true``, whether the run ``complete``\\ d, how many events,
  and why it ``stopped`` when it did not complete.

A link's ``loss``, ``fade_probability`` and ``jitter_ms`` are in the form of
``netemu plan --json`` (the worse direction's), as the shapers applied them.
A write that fails (a full disk, a folder gone) raises :class:`ResultsError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

from netemu.errors import ResultsError, describe
from netemu.formats import stamp
from netemu.kernel.privileges import make_dirs
from netemu.plan.planner import iso_utc

#: A link as logged: a, b, kind, distance_km, delay_ms, state, loss, fade_probability,
#: jitter_ms.
LINK_FIELDS = ("a", "b", "kind", "distance_km", "delay_ms", "state", "loss",
               "fade_probability", "jitter_ms")  # fmt: skip


class RunLog:
    def __init__(self, path: Path, run: dict) -> None:
        """Open ``path`` (its folder made) and write the run's first line, ``run``."""
        self.path = path
        self._logged: dict[tuple, tuple] = {}  # per link: what its last logged line said
        try:
            make_dirs(path.parent)
            self._file = path.open("w", buffering=1)
        except OSError as exc:
            raise ResultsError(f"cannot write the run log {path}: {exc}") from None
        self._line({**stamp("run-log"), **run, "links": "each line: the links that changed",
                    "complete": False})  # fmt: skip

    def update(self, head: dict, links: Iterable[tuple], counts: dict) -> None:
        """One update: ``head`` (time, wall_s, epoch), every link now as a tuple in
        :data:`LINK_FIELDS` order (those unchanged since their last line are left out),
        then the update's ``counts`` (events, shape_changes, route_changes, apply_ms)."""
        changed = []
        for link in links:
            key = link[:3]
            # Rounded as logged: a delay to a microsecond, loss to 4 significant digits.
            seen = (link[5], round(link[4], 3), *link[6:])
            if self._logged.get(key) != seen:
                self._logged[key] = seen
                changed.append(dict(zip(LINK_FIELDS, link, strict=True)))
        self._line({**head, "links": changed, **counts})

    def end(self, complete: bool, events: int, stopped: str | None) -> None:
        """The last line, then the file closed; a log that failed says no more."""
        with contextlib.suppress(ResultsError):
            self._line(
                {"end": True, "complete": complete, "events": events}
                | ({"stopped": stopped} if stopped else {})
            )
        with contextlib.suppress(OSError):
            self._file.close()

    def _line(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk, a folder gone: the run cannot record
            raise ResultsError(
                f"cannot write the run log {self.path}: {exc.strerror or exc}"
            ) from None


def link_row(a: str, b: str, kind: str, distance_km: float, delay_ms: float, state: str,
             loss: float, fade: float, jitter_ms: float) -> tuple:  # fmt: skip
    """A link as :meth:`RunLog.update` takes it, rounded as the plan's JSON has it."""
    return (a, b, kind, round(distance_km, 6), round(delay_ms, 6), state,
            float(f"{loss:.4g}"), float(f"{fade:.4g}"), round(jitter_ms, 6))  # fmt: skip


class RunLogging:
    """Writing a live run's log, as both sequencers do (one machine's and a cluster's).

    A sequencer provides ``this_run`` (its log's path, or None: no log), ``run_name``,
    ``topology``, ``names``, ``start_time``, ``step_s``, ``speed``, ``duration_s``,
    ``table`` (the link table), ``epoch``, ``epoch_index``, ``controller``, ``events``,
    ``finished`` and ``_error``; it calls :meth:`_open_log` once bring-up begins,
    :meth:`_write_log` after each update and :meth:`_end_log` at stop.
    """

    _log: RunLog | None = None

    def _open_log(self, shaper: str) -> None:
        if self.this_run.log is None:
            return
        self._log = RunLog(
            self.this_run.log,
            {
                "run": self.run_name,
                "topology": self.topology.name,
                "shaper": shaper,
                "start": iso_utc(self.start_time),
                "step_s": self.step_s,
                "speed": self.speed,
                "duration_s": self.duration_s,
            },
        )

    def _write_log(self, now, events, shape_changes, route_changes, apply_ms) -> None:
        if self._log is None:
            return
        c = self.table.log_columns()
        links = (
            link_row(self.names[a], self.names[b], *row)
            for (a, b), *row in zip(self.table.keys, c["kind"], c["distance_km"], c["delay_ms"],
                                    c["state"], c["loss"], c["fade_probability"], c["jitter_ms"],
                                    strict=True)
        )  # fmt: skip
        self._log.update(
            {
                "time": iso_utc(self.epoch.time),
                "wall_s": round(now - self.controller.wall0, 6),
                "epoch": self.epoch_index,
            },
            links,
            {
                "events": events,
                "shape_changes": shape_changes,
                "route_changes": route_changes,
                "apply_ms": round(apply_ms, 3),
            },
        )

    def _end_log(self) -> None:
        if self._log is not None:
            complete = self.finished.is_set() and self._error is None
            self._log.end(complete, len(self.events), self._error and describe(self._error))
            self._log = None
