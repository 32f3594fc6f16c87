"""Cell-averaging CFAR detection on SAR intensity images.

For each pixel the clutter level is the mean over a ring of training cells
(a square window minus a guard area around the pixel); a pixel is a hit when
it exceeds ``alpha`` times that mean. For exponential (single-look) clutter
with N training cells, ``alpha = N (Pfa^(-1/N) - 1)`` gives the false-alarm
probability Pfa per pixel. Adjacent hits are merged into one detection at
their intensity-weighted centre. Vectorised with scipy's box filters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def cfar_alpha(training_cells: int, pfa: float) -> float:
    return training_cells * (pfa ** (-1.0 / training_cells) - 1.0)


def detect(image: np.ndarray, guard: int = 4, train: int = 12, pfa: float = 1e-6) -> np.ndarray:
    """Detections as an (n, 2) array of (row, col) centres."""
    img = np.asarray(image, dtype=np.float64)
    outer, inner = 2 * (guard + train) + 1, 2 * guard + 1
    sum_outer = ndimage.uniform_filter(img, outer, mode="reflect") * outer**2
    sum_inner = ndimage.uniform_filter(img, inner, mode="reflect") * inner**2
    n = outer**2 - inner**2
    clutter = (sum_outer - sum_inner) / n
    hits = img > cfar_alpha(n, pfa) * clutter
    labels, count = ndimage.label(hits)
    if count == 0:
        return np.zeros((0, 2))
    return np.array(ndimage.center_of_mass(img, labels, range(1, count + 1)))
