"""Link shapes: what each direction of a link does to packets, computed in one place.

A link's shape is a function of its geometry, its parameters, its link budget and
the faults on it. :func:`link_shapes` computes it for a set of links at once, as
arrays of shape (links, 2), column 0 for a -> b and column 1 for b -> a. The live
emulation applies exactly these arrays (the shapers), its run log reports them,
and ``netemu plan --json`` reports them too, so the plan and the run cannot
disagree on a link's loss.

Loss composes as independent causes: the configured loss, the link budget's
(packet loss from the bit error rate outside fades) and a fault's degradation,
``1 - (1 - static)(1 - budget)(1 - fault)``. Turbulence fades are apart: a share
of time in which the direction carries nothing, in bursts of ``fade_ms`` mean
length (netem's Gilbert-Elliott model, or the wire engine's). What a user counts
is :func:`total_loss`: fades and the loss outside them together.

Pure computation: no root, no programs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from netemu.model.topology import LinkParams
from netemu.plan.geometry import delay_ms

#: The columns of a shape table, each an array (links, 2): one-way propagation delay
#: (ms), line rate (Mbit/s), loss outside fades (0..1), jitter (ms), share of time in
#: a turbulence fade (0..1), the fades' mean length (ms), carrying nothing (bool).
COLUMNS = ("delay_ms", "rate_mbit", "loss", "jitter_ms", "fade_probability", "fade_ms", "blocked")


def link_shapes(
    distance_km: np.ndarray,
    params: Sequence[LinkParams],
    budget: Mapping[str, np.ndarray],
    fault_loss: np.ndarray | None = None,
    fault_jitter_ms: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each direction's shape for links at ``distance_km`` with ``params``.

    ``budget`` holds the planner's per-direction ``loss_ab``/``loss_ba`` and
    ``fade_ab``/``fade_ba`` (:meth:`netemu.plan.planner.Planner.budgets`); ``fault_loss`` and
    ``fault_jitter_ms`` what faults add per link (both directions); ``blocked`` the
    links carrying nothing (acquiring, or down).
    """
    n = len(params)

    def per_link(values) -> np.ndarray:  # the same in both directions
        return np.repeat(np.asarray(values, float).reshape(n, 1), 2, axis=1)

    def per_direction(ab: np.ndarray, ba: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(ab, float), np.asarray(ba, float)], axis=1).reshape(n, 2)

    static = per_link([p.loss_percent / 100 for p in params])
    fault = per_link(np.zeros(n) if fault_loss is None else fault_loss)
    jitter = per_link([p.jitter_ms for p in params])
    if fault_jitter_ms is not None:
        jitter = jitter + per_link(fault_jitter_ms)
    fade = per_direction(budget["fade_ab"], budget["fade_ba"])
    return {
        "delay_ms": per_link(delay_ms(np.asarray(distance_km, float))),
        "rate_mbit": per_link([p.data_rate_gbps * 1000 for p in params]),
        "loss": 1
        - (1 - static) * (1 - per_direction(budget["loss_ab"], budget["loss_ba"])) * (1 - fault),
        "jitter_ms": jitter,
        "fade_probability": fade,
        "fade_ms": np.where(fade > 0, per_link([p.mean_fade_ms for p in params]), 0.0),
        "blocked": per_link(np.zeros(n) if blocked is None else blocked) > 0,
    }


def total_loss(shapes: Mapping[str, np.ndarray]) -> np.ndarray:
    """Share of packets each direction loses, fades included (links, 2)."""
    fade = shapes["fade_probability"]
    return fade + (1 - fade) * shapes["loss"]


def fault_arrays(
    keys: Sequence[tuple[int, int]], degraded: Mapping[tuple[int, int], tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """A fault's added loss (0..1) and jitter (ms) for each link of ``keys``."""
    loss, jitter = np.zeros(len(keys)), np.zeros(len(keys))
    if degraded:
        for i, key in enumerate(keys):
            if key in degraded:
                loss[i], jitter[i] = degraded[key]
    return loss, jitter


#: Changes too small to apply: a delay within a microsecond (the shapers' resolution),
#: a loss or fade share within 1e-6. Anything else that changes is applied.
DELAY_TOLERANCE_MS = 1e-3
SHARE_TOLERANCE = 1e-6


class Applied:
    """The shapes last handed to the shapers, per link direction (``table``: arrays as
    :func:`link_shapes` makes them, rows in the order links were first seen), and
    which directions a new table changes."""

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}

    def update(self, shapes: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Record ``shapes`` (rows: the same links as before, new ones at the end) and
        return the (link, direction) indices that changed; new links always do."""
        # Nothing applied yet to new links: NaN, which differs from everything.
        last, n = self.table, len(shapes["delay_ms"])
        if not last:
            last = {k: np.full((n, 2), np.nan) for k in shapes}
        elif grown := n - len(last["delay_ms"]):
            last = {k: np.concatenate([last[k], np.full((grown, 2), np.nan)]) for k in shapes}
        changed = (
            ~(np.abs(shapes["delay_ms"] - last["delay_ms"]) < DELAY_TOLERANCE_MS)
            | ~(np.abs(shapes["loss"] - last["loss"]) < SHARE_TOLERANCE)
            | ~(np.abs(shapes["fade_probability"] - last["fade_probability"]) < SHARE_TOLERANCE)
        )
        for k in ("rate_mbit", "jitter_ms", "blocked", "fade_ms"):
            changed |= shapes[k] != last[k]
        i, j = np.nonzero(changed)
        for k in shapes:
            last[k][i, j] = shapes[k][i, j]
        self.table = last
        return i, j
