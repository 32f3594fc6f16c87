"""Cell-averaging CFAR detection on SAR intensity images.

For each pixel the clutter level is the mean over a ring of training cells
(a square window minus a guard area around the pixel); a pixel is a hit when
it exceeds ``alpha`` times that mean. For exponential (single-look) clutter
with N training cells, ``alpha = N (Pfa^(-1/N) - 1)`` gives the false-alarm
probability Pfa per pixel. Adjacent hits are merged into one detection at
their intensity-weighted centre. Vectorised with box filters from
``scipy.ndimage`` on the CPU or ``cupyx.scipy.ndimage`` on a GPU (the same
code: the array module is a parameter, see :mod:`netemu.services.backend`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as scipy_ndimage


def cfar_alpha(training_cells: int, pfa: float) -> float:
    return training_cells * (pfa ** (-1.0 / training_cells) - 1.0)


def detect(
    image,
    guard: int = 4,
    train: int = 12,
    pfa: float = 1e-6,
    xp=np,
    ndimage=scipy_ndimage,
) -> np.ndarray:
    """Detections as an (n, 2) numpy array of (row, col) centres.

    ``xp``/``ndimage``: numpy and scipy.ndimage, or cupy and cupyx.scipy.ndimage.
    """
    img = xp.asarray(image, dtype=xp.float32 if xp is not np else np.float64)
    outer, inner = 2 * (guard + train) + 1, 2 * guard + 1
    sum_outer = ndimage.uniform_filter(img, outer, mode="reflect") * outer**2
    sum_inner = ndimage.uniform_filter(img, inner, mode="reflect") * inner**2
    n = outer**2 - inner**2
    clutter = (sum_outer - sum_inner) / n
    hits = img > cfar_alpha(n, pfa) * clutter
    labels, count = ndimage.label(hits)
    count = int(count)
    if count == 0:
        return np.zeros((0, 2))
    centres = ndimage.center_of_mass(img, labels, xp.arange(1, count + 1))
    return np.array([[float(r), float(c)] for r, c in centres]).reshape(-1, 2)
