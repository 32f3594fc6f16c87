"""Aircraft flight paths: great-circle legs between waypoints at constant speed.

Pure computation. An aircraft leaves its first waypoint at ``departure``, flies
each leg along the great circle (on a sphere of the Earth's mean radius) at
``speed_kmh``, changes altitude linearly along the leg and, on a patrol
(``loop``), flies back to the first waypoint and starts again. Before departure
it waits at the first waypoint; after the last leg of an open route it stays at
the last waypoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from netemu.model.constants import EARTH_MEAN_RADIUS_KM


def unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) of points on a sphere."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance on the mean-radius sphere (numerically stable atan2 form)."""
    u, v = (
        unit_vectors(np.asarray(lat1), np.asarray(lon1)),
        unit_vectors(np.asarray(lat2), np.asarray(lon2)),
    )
    cross = np.linalg.norm(np.cross(u, v), axis=-1)
    dot = np.sum(u * v, axis=-1)
    return EARTH_MEAN_RADIUS_KM * np.arctan2(cross, dot)


@dataclass(frozen=True)
class FlightPath:
    """Where an aircraft is, as a function of time."""

    lat_deg: np.ndarray  # waypoints, with the first repeated at the end on a loop
    lon_deg: np.ndarray
    altitude_km: np.ndarray
    speed_kmh: float
    departure: datetime
    loop: bool

    @classmethod
    def from_spec(cls, aircraft, default_departure: datetime) -> FlightPath:
        wps = list(aircraft.waypoints)
        if aircraft.loop:
            wps.append(wps[0])
        return cls(
            np.array([w.lat_deg for w in wps], dtype=float),
            np.array([w.lon_deg for w in wps], dtype=float),
            np.array([w.altitude_km for w in wps], dtype=float),
            float(aircraft.speed_kmh),
            aircraft.departure or default_departure,
            bool(aircraft.loop),
        )

    @property
    def leg_km(self) -> np.ndarray:
        return great_circle_km(
            self.lat_deg[:-1], self.lon_deg[:-1], self.lat_deg[1:], self.lon_deg[1:]
        )

    @property
    def route_km(self) -> float:
        return float(self.leg_km.sum())

    def position(self, seconds_since_departure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latitude (deg), longitude (deg) and altitude (km) after the given seconds.

        Vectorised over ``seconds_since_departure``.
        """
        s = np.atleast_1d(np.asarray(seconds_since_departure, dtype=float))
        legs = self.leg_km
        ends = np.cumsum(legs)
        total = ends[-1]
        flown = np.clip(s, 0.0, None) * self.speed_kmh / 3600.0
        flown = np.mod(flown, total) if self.loop and total > 0 else np.minimum(flown, total)
        leg = np.minimum(np.searchsorted(ends, flown, side="right"), len(legs) - 1)
        starts = ends - legs
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(legs[leg] > 0, (flown - starts[leg]) / legs[leg], 0.0)
        frac = np.clip(frac, 0.0, 1.0)

        u = unit_vectors(self.lat_deg[leg], self.lon_deg[leg])
        v = unit_vectors(self.lat_deg[leg + 1], self.lon_deg[leg + 1])
        omega = legs[leg] / EARTH_MEAN_RADIUS_KM  # central angle of the leg
        sin_omega = np.sin(omega)
        with np.errstate(invalid="ignore", divide="ignore"):
            wu = np.where(sin_omega > 1e-12, np.sin((1 - frac) * omega) / sin_omega, 1 - frac)
            wv = np.where(sin_omega > 1e-12, np.sin(frac * omega) / sin_omega, frac)
        p = wu[:, None] * u + wv[:, None] * v  # spherical linear interpolation
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        lat = np.degrees(np.arcsin(np.clip(p[:, 2], -1, 1)))
        lon = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
        alt = self.altitude_km[leg] + frac * (self.altitude_km[leg + 1] - self.altitude_km[leg])
        return lat, lon, alt
