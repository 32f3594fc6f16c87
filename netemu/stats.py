"""Summary statistics of measured samples, as netemu reports them everywhere."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values`` ({} when there are none)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return {}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(v.max())}
