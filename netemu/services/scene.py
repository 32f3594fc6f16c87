"""A synthetic SAR scene: sea clutter with moving ships, reproducible from a seed.

Each frame is an intensity image (float32): exponentially distributed speckle
(single-look SAR clutter, mean 1) plus targets, each a small bright Gaussian
blob whose signal-to-clutter ratio is set in dB. Targets move at constant
velocity (pixels per second); the ground truth of every frame is known, so
detectors and trackers can be scored. A 1,024 x 1,024 tile is 4 MB, the
"few MB" tiles of the shared notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    seq: int
    time_s: float
    image: np.ndarray  # (H, W) float32 intensity
    truth: np.ndarray  # (targets, 2) row, col of each target's centre


class Scene:
    """Moving targets over clutter; frame k is the same for the same seed."""

    def __init__(
        self,
        seed: int = 0,
        size_px: int = 1024,
        targets: int = 8,
        target_db: float = 15.0,
        speed_px_s: float = 5.0,  # 3 m pixels: 15 m/s, a fast ship
        frame_interval_s: float = 1.0,
    ):
        self.seed, self.size, self.target_db = seed, size_px, target_db
        self.frame_interval_s = frame_interval_s
        rng = np.random.default_rng(seed)
        margin = 0.1 * size_px
        self.start = rng.uniform(margin, size_px - margin, (targets, 2))
        heading = rng.uniform(0, 2 * np.pi, targets)
        self.velocity = speed_px_s * np.stack([np.sin(heading), np.cos(heading)], axis=1)

    def truth(self, time_s: float) -> np.ndarray:
        """Centres of the targets inside the tile at ``time_s`` (they sail out of it)."""
        pos = self.start + self.velocity * time_s
        inside = np.all((pos >= 3) & (pos <= self.size - 4), axis=1)
        return pos[inside]

    def frame(self, seq: int) -> Frame:
        t = seq * self.frame_interval_s
        rng = np.random.default_rng([self.seed, seq])
        image = rng.exponential(1.0, (self.size, self.size)).astype(np.float32)
        truth = self.truth(t)
        peak = 10 ** (self.target_db / 10)
        rows = np.arange(self.size)
        for r, c in truth:
            # A 2-pixel-wide blob, evaluated only near the target.
            r0, r1 = max(int(r) - 6, 0), min(int(r) + 7, self.size)
            c0, c1 = max(int(c) - 6, 0), min(int(c) + 7, self.size)
            rr, cc = np.meshgrid(rows[r0:r1], rows[c0:c1], indexing="ij")
            image[r0:r1, c0:c1] += peak * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.5**2))
        return Frame(seq, t, image, truth)
