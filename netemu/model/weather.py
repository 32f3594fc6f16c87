"""Weather: clouds over ground stations and low aircraft, as reproducible series.

Pure computation. Clouds decide optical ground availability (a single site is
cloud-free ~69% of the time; several diverse sites together reach 99.97%,
shared notes). Each site's sky is a two-state Markov chain sampled every
``RESOLUTION_S`` seconds of orbital time from the topology's start: clear
spells and cloudy spells with exponentially distributed lengths, whose means
give the requested cloud-free probability::

    P(clear) = T_clear / (T_clear + T_cloudy)

The chain for a site depends only on the seed and the site's name, so the same
topology gives the same weather every time, plan or live run alike. Aircraft
above the cloud tops are never clouded.
"""

from __future__ import annotations

import hashlib

import numpy as np

RESOLUTION_S = 60.0


class CloudSeries:
    """Whether one site is under cloud, as a function of orbital seconds from the start."""

    def __init__(
        self, site: str, cloud_free_probability: float, mean_cloudy_spell_s: float, seed: int
    ):
        self.p_clear = cloud_free_probability
        digest = hashlib.sha256(f"{seed}:{site}".encode()).digest()
        self.rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        # Per-step transition probabilities of the chain.
        cloudy_steps = max(mean_cloudy_spell_s / RESOLUTION_S, 1.0)
        self.p_clear_after_cloud = 1.0 / cloudy_steps
        if self.p_clear >= 1.0:
            self.p_cloud_after_clear = 0.0
        else:
            clear_steps = cloudy_steps * self.p_clear / (1.0 - self.p_clear)
            self.p_cloud_after_clear = 1.0 / max(clear_steps, 1.0)
        self.states = np.zeros(0, dtype=bool)  # True: cloudy

    def _extend(self, steps: int) -> None:
        if steps <= len(self.states):
            return
        n = max(steps, 2 * len(self.states), 1024)
        out = np.empty(n, dtype=bool)
        k = len(self.states)
        out[:k] = self.states
        state = bool(self.states[-1]) if k else bool(self.rng.random() >= self.p_clear)
        u = self.rng.random(n - k)
        for i in range(k, n):
            if state:
                state = u[i - k] >= self.p_clear_after_cloud
            else:
                state = u[i - k] < self.p_cloud_after_clear
            out[i] = state
        self.states = out

    def cloudy(self, seconds) -> np.ndarray:
        """Vectorised over orbital seconds since the start (>= 0)."""
        steps = (np.maximum(np.asarray(seconds, dtype=float), 0.0) // RESOLUTION_S).astype(int)
        self._extend(int(np.max(steps, initial=0)) + 1)
        return self.states[steps]


def availability(connected: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-site and combined availability from a (epochs, sites) boolean array."""
    connected = np.asarray(connected, dtype=bool)
    return connected.mean(axis=0), float(connected.any(axis=1).mean())
