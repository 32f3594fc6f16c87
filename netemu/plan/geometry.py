"""Geometry: where every node is, and what each can see, at any UTC time.

Positions are Earth-fixed (ITRS) Cartesian kilometres, one row per node in
:attr:`Topology.nodes` order, computed for all nodes at once:

- satellites with ``sgp4``'s :class:`~sgp4.api.SatrecArray` (each record
  propagated from its own epoch), rotated from TEME to ITRS with Skyfield's
  frame matrices, which is what Skyfield's ``EarthSatellite`` does one
  satellite at a time;
- ground stations from their WGS84 coordinates (fixed);
- aircraft along their great-circle flight paths (:mod:`netemu.model.flight`).

The helper functions below (range, elevation, line of sight) are vectorised
numpy over node pairs. Nothing here needs root or runs a program.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from sgp4.api import SatrecArray
from skyfield.api import wgs84
from skyfield.framelib import itrs
from skyfield.sgp4lib import TEME
from skyfield.timelib import Time

from netemu.model.constants import EARTH_RADIUS_KM, SPEED_OF_LIGHT_KM_S
from netemu.model.skydata import timescale
from netemu.model.topology import Topology

DAY_S = 86400.0
_WGS84_A_KM = 6378.137
_WGS84_B_KM = _WGS84_A_KM * (1 - 1 / 298.257223563)
_INV_AXES_SQUARED = np.array([_WGS84_A_KM**-2, _WGS84_A_KM**-2, _WGS84_B_KM**-2])


def epoch_count(duration_s: float, step_s: float) -> int:
    """Epochs from a start to start + duration inclusive, every step."""
    return int(np.floor(duration_s / step_s + 1e-9)) + 1


def epochs(start: datetime, duration_s: float, step_s: float) -> Time:
    """Skyfield times from ``start`` to ``start + duration_s`` inclusive, every ``step_s``."""
    count = epoch_count(duration_s, step_s)
    offsets = np.arange(count) * step_s
    return timescale().from_datetimes([start + timedelta(seconds=float(s)) for s in offsets])


def delay_ms(distance_km):
    """One-way propagation delay in vacuum, milliseconds."""
    return np.asarray(distance_km) / SPEED_OF_LIGHT_KM_S * 1000.0


def ellipsoid_normal(p_km) -> np.ndarray:
    """Local zenith (WGS84 geodetic normal) at Earth-fixed points, shape (..., 3).

    The gradient of the ellipsoid through the point: for points within tens of
    kilometres of the surface it differs from the exact geodetic normal by a
    few arcseconds.
    """
    g = np.asarray(p_km, dtype=float) * _INV_AXES_SQUARED
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def elevation_deg(observer_km, up, target_km) -> np.ndarray:
    """Elevation of ``target`` above the horizon plane of ``observer``.

    Arrays broadcast: observers (..., 3) with their zenith vectors ``up``.
    """
    d = target_km - observer_km
    rng = np.linalg.norm(d, axis=-1)
    return np.degrees(np.arcsin(np.clip(np.sum(d * up, axis=-1) / rng, -1.0, 1.0)))


def min_radius_along_km(a_km, b_km) -> np.ndarray:
    """Smallest distance from the Earth's centre to the segment a-b (vectorised)."""
    d = b_km - a_km
    dd = np.sum(d * d, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(dd > 0, -np.sum(a_km * d, axis=-1) / dd, 0.0)
    t = np.clip(t, 0.0, 1.0)
    closest = a_km + t[..., None] * d
    return np.linalg.norm(closest, axis=-1)


def angular_rate_deg_s(a_km, b_km, va_km_s, vb_km_s) -> np.ndarray:
    """How fast the line of sight a-b turns: |r x v| / |r|^2 (vectorised)."""
    r = np.asarray(b_km) - np.asarray(a_km)
    v = np.asarray(vb_km_s) - np.asarray(va_km_s)
    cross = np.linalg.norm(np.cross(r, v), axis=-1)
    return np.degrees(cross / np.sum(r * r, axis=-1))


def line_of_sight(a_km, b_km, grazing_altitude_km: float) -> np.ndarray:
    """True where the straight line a-b stays above the grazing altitude."""
    return min_radius_along_km(a_km, b_km) > EARTH_RADIUS_KM + grazing_altitude_km


def max_isl_range_km(altitude_km: float, grazing_altitude_km: float) -> float:
    """Longest line of sight between two satellites at one altitude (closed form)."""
    r, g = EARTH_RADIUS_KM + altitude_km, EARTH_RADIUS_KM + grazing_altitude_km
    return 2.0 * np.sqrt(r * r - g * g)


class Geometry:
    """Positions of all of a topology's nodes, vectorised over nodes and times."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.n_sat = len(topology.satrecs)
        self.n_nodes = len(topology.nodes)
        self._sats = SatrecArray(topology.satrecs) if topology.satrecs else None
        gs = topology.ground_sites
        self._ground_idx = np.array([n.index for n in topology.ground_stations], dtype=int)
        self._aircraft_idx = np.array([n.index for n in topology.aircraft], dtype=int)
        lat = np.array([g.lat_deg for g in gs], dtype=float)
        lon = np.array([g.lon_deg for g in gs], dtype=float)
        alt = np.array([g.altitude_km for g in gs], dtype=float)
        self._ground_km = (
            wgs84.latlon(lat, lon, elevation_m=alt * 1000.0).itrs_xyz.km.T
            if len(gs)
            else np.zeros((0, 3))
        )

    def satellite_teme_km(self, t: Time) -> tuple[np.ndarray, np.ndarray]:
        """SGP4 TEME positions, shape (T, S, 3), and error codes (T, S)."""
        jd = np.atleast_1d(t.whole)
        fr = np.atleast_1d(t.tai_fraction - t._leap_seconds() / DAY_S)
        err, r, _v = self._sats.sgp4(jd, fr)  # (S, T), (S, T, 3)
        return np.swapaxes(r, 0, 1), err.T

    def positions_km(self, t: Time) -> np.ndarray:
        """ITRS positions of all nodes: (N, 3) for a scalar time, (T, N, 3) for an array.

        Satellites whose SGP4 propagation fails (decayed orbits) come out as NaN:
        every test against NaN is False, so they hold no link.
        """
        scalar = t.shape == ()
        times = t if not scalar else timescale().tt_jd(np.atleast_1d(t.tt))
        count = len(times.tt)
        out = np.empty((count, self.n_nodes, 3))
        if self.n_sat:
            teme, err = self.satellite_teme_km(times)
            # TEME -> GCRS -> ITRS, one 3x3 matrix per time.
            rot = np.einsum(
                "ijt,kjt->tik", itrs.rotation_at(times), TEME.rotation_at(times)
            )  # (T, 3, 3) = R_itrs @ R_teme^T
            sat = np.einsum("tij,tsj->tsi", rot, teme)
            sat[err != 0] = np.nan
            out[:, : self.n_sat] = sat
        if len(self._ground_idx):
            out[:, self._ground_idx] = self._ground_km
        if len(self._aircraft_idx):
            out[:, self._aircraft_idx] = self._aircraft_km(times)
        return out[0] if scalar else out

    def _aircraft_km(self, times: Time) -> np.ndarray:
        """(T, A, 3) positions of the aircraft along their flight paths."""
        tt = np.atleast_1d(times.tt)
        cols = []
        for flight in self.topology.flights:
            dep = timescale().from_datetime(flight.departure).tt
            lat, lon, alt = flight.position((tt - dep) * DAY_S)
            cols.append(wgs84.latlon(lat, lon, elevation_m=alt * 1000.0).itrs_xyz.km.T)
        return np.stack(cols, axis=1)


def geocentric_lat_deg(p_km) -> np.ndarray:
    """Geocentric latitude of Earth-fixed points (enough for cut-off latitudes)."""
    p = np.asarray(p_km)
    return np.degrees(np.arcsin(p[..., 2] / np.linalg.norm(p, axis=-1)))
