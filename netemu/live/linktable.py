"""The link table: every link a live run has made, and what it is now, as arrays.

Rows are links in the order they were made (a veth or TAP pair each, kept for the
whole run); columns are arrays over rows. Each epoch the planner's links up give
their distance and link budget (:meth:`LinkTable.update`), acquisition says which
of them carry (:meth:`LinkTable.set_carrying`), and :meth:`LinkTable.changes`
composes what each direction does to packets with :func:`netemu.plan.shapes.link_shapes`
(the one place a link's delay and loss are computed) and returns a
:class:`~netemu.shaping.Shape` only for the directions that changed. Routes, the
run log and the public queries read the same table.

Pure computation: no root, no programs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from netemu.model.topology import LinkParams
from netemu.plan.links import KINDS, LinkSet
from netemu.plan.shapes import Applied, fault_arrays, link_shapes, total_loss
from netemu.shaping import Direction, Shape

Key = tuple[int, int]
DOWN, ACQUIRING, UP = 0, 1, 2
STATES = ("down", "acquiring", "up")
BUDGET = ("loss_ab", "loss_ba", "fade_ab", "fade_ba")
#: Shape's fields in order, as the columns of the shapes table.
_SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(Shape))


@dataclass(frozen=True)
class LinkView:
    """One link as it is now (a snapshot: names, state, geometry and applied shapes)."""

    a: str
    b: str
    kind: str
    state: str  # "up" (carrying), "acquiring" or "down"
    distance_km: float
    delay_ms: float  # one-way propagation delay now (0 when down)
    forward: Direction  # a -> b
    backward: Direction  # b -> a
    shapes: tuple[Shape, Shape]  # as the shapers were last given them: a -> b, b -> a


class LinkTable:
    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.rows: dict[Key, int] = {}
        self.ends = np.zeros((0, 2), np.int64)  # (a, b) per row
        self.kind = np.zeros(0, np.int64)
        self.params: list[LinkParams] = []
        self.directions: list[tuple[Direction, Direction]] = []
        self.distance_km = np.zeros(0)
        self.budget = {k: np.zeros(0) for k in BUDGET}
        self.state = np.zeros(0, np.int8)
        #: Each direction's shape now (netemu.plan.shapes.COLUMNS, arrays (links, 2)).
        self.shapes = link_shapes(np.zeros(0), [], self.budget)
        self.applied = Applied()  # what the shapers were last given
        self._up = np.zeros(0, np.int64)  # rows of the links up this epoch

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: Key) -> bool:
        return key in self.rows

    def missing(self, up: LinkSet) -> list[tuple[Key, int]]:
        """(key, kind) of the links in ``up`` not made yet."""
        return [
            (k, kind)
            for k, kind in zip(up.keys(), up.kind.tolist(), strict=True)
            if k not in self.rows
        ]

    def add(self, made: list[tuple[Key, int, LinkParams, tuple[Direction, Direction]]]) -> None:
        """Links just made, (key, kind, parameters, directions) each; down until an
        epoch says otherwise."""
        if not made:
            return
        keys, kinds, params, directions = zip(*made, strict=True)
        self.rows.update((k, len(self.keys) + i) for i, k in enumerate(keys))
        self.keys += keys
        self.ends = np.concatenate([self.ends, np.array(keys, np.int64).reshape(-1, 2)])
        self.kind = np.concatenate([self.kind, np.array(kinds, np.int64)])
        self.params += params
        self.directions += directions
        zeros = np.zeros(len(made))
        self.distance_km = np.concatenate([self.distance_km, zeros])
        self.budget = {k: np.concatenate([v, zeros]) for k, v in self.budget.items()}
        self.state = np.concatenate([self.state, np.full(len(made), DOWN, np.int8)])

    def update(self, up: LinkSet, budget: Mapping[str, np.ndarray]) -> None:
        """The epoch's links up (all made) with their link budgets; the rest are down."""
        keys = up.keys()
        rows = np.array([self.rows[k] for k in keys], np.int64)
        self.distance_km = np.zeros(len(self))
        self.distance_km[rows] = up.distance_km
        for k in BUDGET:
            self.budget[k] = np.zeros(len(self))
            self.budget[k][rows] = budget[k]
        self._up = rows

    def set_carrying(self, carrying: Iterable[Key]) -> None:
        """Which of the links up carry traffic (acquired); the others are acquiring."""
        self.state = np.full(len(self), DOWN, np.int8)
        self.state[self._up] = ACQUIRING
        self.state[[self.rows[k] for k in carrying]] = UP

    def changes(self, degraded: Mapping[Key, tuple[float, float]]) -> dict[Direction, Shape]:
        """Each direction's shape now, with the faults' ``degraded`` links; a
        :class:`Shape` for each direction that changed since last asked."""
        self.shapes = link_shapes(
            self.distance_km,
            self.params,
            self.budget,
            *fault_arrays(self.keys, degraded),
            blocked=self.state != UP,
        )
        i, j = self.applied.update(self.shapes)
        # Each column gathered once (thousands of directions change an epoch at scale).
        columns = {k: v[i, j].tolist() for k, v in self.shapes.items()}
        columns["blocked"] = [bool(x) for x in columns["blocked"]]
        shapes = (Shape(*row) for row in zip(*(columns[k] for k in _SHAPE_FIELDS), strict=True))
        ends = (self.directions[r][d] for r, d in zip(i.tolist(), j.tolist(), strict=True))
        return dict(zip(ends, shapes, strict=True))

    def carrying(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, one-way delay ms) of the links carrying traffic."""
        rows = np.flatnonzero(self.state == UP)
        return self.ends[rows, 0], self.ends[rows, 1], self.shapes["delay_ms"][rows, 0]

    def delay_ms(self, key: Key) -> float:
        return float(self.shapes["delay_ms"][self.rows[key], 0])

    def state_of(self, key: Key) -> str:
        row = self.rows.get(key)
        return "down" if row is None else STATES[self.state[row]]

    def count(self, state: int) -> int:
        return int(np.count_nonzero(self.state == state))

    def view(self, key: Key, names: list[str]) -> LinkView:
        r = self.rows[key]
        applied = self.applied.table
        return LinkView(
            names[key[0]], names[key[1]], KINDS[self.kind[r]].value, STATES[self.state[r]],
            float(self.distance_km[r]), float(self.shapes["delay_ms"][r, 0]),
            *self.directions[r], (self._shape(applied, r, 0), self._shape(applied, r, 1)),
        )  # fmt: skip

    def log_columns(self) -> dict[str, list]:
        """Per link, as the run log reports it: state, distance, delay now, and the
        loss, fade share and jitter the shapers were last given (the worse direction)."""
        applied = self.applied.table
        return {
            "state": [STATES[s] for s in self.state.tolist()],
            "kind": [KINDS[k].value for k in self.kind.tolist()],
            "distance_km": self.distance_km.tolist(),
            "delay_ms": self.shapes["delay_ms"][:, 0].tolist(),
            "loss": total_loss(applied).max(axis=1).tolist(),
            "fade_probability": applied["fade_probability"].max(axis=1).tolist(),
            "jitter_ms": applied["jitter_ms"][:, 0].tolist(),
        }

    @staticmethod
    def _shape(table: Mapping[str, np.ndarray], row: int, direction: int) -> Shape:
        values = {k: v[row, direction].item() for k, v in table.items()}
        return Shape(**{**values, "blocked": bool(values["blocked"])})  # applied: NaN-able
