"""Multi-target tracking: constant-velocity Kalman filters, nearest-neighbour gating.

Each track's state is (row, col, v_row, v_col). Every frame, tracks predict
forward, take the nearest unused detection inside their gate (a Mahalanobis
distance), and update; unmatched detections start tentative tracks, and
tracks without a detection for ``max_misses`` frames are dropped. Tracks
confirmed by ``confirm`` hits are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    id: int
    x: np.ndarray  # state (4,)
    p: np.ndarray  # covariance (4, 4)
    hits: int = 1
    misses: int = 0
    history: list = field(default_factory=list)


class Tracker:
    def __init__(
        self,
        meas_sigma_px: float = 1.0,
        accel_sigma_px_s2: float = 2.0,
        gate: float = 4.0,
        confirm: int = 3,
        max_misses: int = 3,
    ):
        self.r = np.eye(2) * meas_sigma_px**2
        self.q_sigma = accel_sigma_px_s2
        self.gate, self.confirm, self.max_misses = gate, confirm, max_misses
        self.tracks: list[Track] = []
        self._next = 1

    def step(self, detections: np.ndarray, dt: float) -> list[Track]:
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        g = np.array([[dt**2 / 2, 0], [0, dt**2 / 2], [dt, 0], [0, dt]])
        q = g @ g.T * self.q_sigma**2
        h = np.eye(2, 4)
        for t in self.tracks:  # predict
            t.x = f @ t.x
            t.p = f @ t.p @ f.T + q
        free = list(range(len(detections)))
        for t in sorted(self.tracks, key=lambda t: -t.hits):  # confirmed tracks choose first
            s = h @ t.p @ h.T + self.r
            s_inv = np.linalg.inv(s)
            best, best_d = None, self.gate**2
            for i in free:
                y = detections[i] - h @ t.x
                d = float(y @ s_inv @ y)
                if d < best_d:
                    best, best_d = i, d
            if best is None:
                t.misses += 1
                continue
            free.remove(best)
            y = detections[best] - h @ t.x
            k = t.p @ h.T @ s_inv
            t.x = t.x + k @ y
            t.p = (np.eye(4) - k @ h) @ t.p
            t.hits, t.misses = t.hits + 1, 0
        for i in free:  # new tentative tracks
            x = np.array([*detections[i], 0.0, 0.0])
            p = np.diag([1.0, 1.0, 30.0**2, 30.0**2])
            self.tracks.append(Track(self._next, x, p))
            self._next += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        return [t for t in self.tracks if t.hits >= self.confirm]
