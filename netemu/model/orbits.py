"""Orbits: SGP4 element records for Walker shells and sun-synchronous planes.

A Walker-delta shell i:T/P/F places ``T = P * S`` satellites on circular orbits
in P planes whose ascending nodes are spread evenly over ``raan_spread_deg``;
satellite ``slot`` of plane ``p`` has mean anomaly ``360 * slot / S + 360 * F * p / T``
degrees. The records are ordinary ``sgp4`` ``Satrec`` objects, so Walker and TLE
satellites propagate the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sgp4.api import WGS72, Satrec

from netemu.model.constants import (
    EARTH_J2,
    EARTH_MU_KM3_S2,
    SUN_SYNCHRONOUS_RATE_RAD_S,
)
from netemu.model.skydata import ephemeris, timescale

#: SGP4's epoch origin: 1949-12-31 00:00 UTC.
_SGP4_EPOCH0 = datetime(1949, 12, 31, tzinfo=UTC)
#: WGS72 equatorial radius, the one SGP4 uses.
_WGS72_RADIUS_KM = 6378.135


def sun_synchronous_inclination_deg(altitude_km: float) -> float:
    """Inclination whose J2 nodal precession follows the Sun (circular orbit).

    From dΩ/dt = -3/2 J2 (R/a)² n cos i  =  360°/year.
    """
    a = _WGS72_RADIUS_KM + altitude_km
    n = math.sqrt(EARTH_MU_KM3_S2 / a**3)
    cos_i = -SUN_SYNCHRONOUS_RATE_RAD_S / (1.5 * EARTH_J2 * (_WGS72_RADIUS_KM / a) ** 2 * n)
    if not -1 <= cos_i <= 1:
        raise ValueError(f"no sun-synchronous orbit exists at {altitude_km:g} km")
    return math.degrees(math.acos(cos_i))


def raan_for_ltan_deg(epoch: datetime, ltan_h: float) -> float:
    """Right ascension of the ascending node that puts it at local solar time ``ltan_h``.

    The node sits ``(ltan_h - 12) * 15`` degrees east of the Sun's apparent
    right ascension (true equinox of date, close to SGP4's TEME frame).
    """
    eph = ephemeris()
    t = timescale().from_datetime(epoch)
    ra, _dec, _dist = eph["earth"].at(t).observe(eph["sun"]).apparent().radec(epoch=t)
    return (ra._degrees + (ltan_h - 12.0) * 15.0) % 360.0


@dataclass(frozen=True)
class CircularOrbit:
    """Elements of one circular orbit at ``epoch``."""

    altitude_km: float
    inclination_deg: float
    raan_deg: float
    mean_anomaly_deg: float
    epoch: datetime


def _sgp4_epoch_days(epoch: datetime) -> float:
    return (epoch - _SGP4_EPOCH0).total_seconds() / 86400.0


def _mean_motion_rad_min(altitude_km: float, inclination_rad: float) -> float:
    """Kozai mean motion whose SGP4 mean semi-major axis is R + altitude.

    SGP4 turns the (Kozai) mean motion into a semi-major axis with J2 terms
    that depend on inclination; a few fixed-point steps undo that so the
    shell flies at the altitude the user asked for, not a few km off.
    """
    a_want = (_WGS72_RADIUS_KM + altitude_km) / _WGS72_RADIUS_KM  # Earth radii
    n = math.sqrt(EARTH_MU_KM3_S2 / (a_want * _WGS72_RADIUS_KM) ** 3) * 60.0
    for _ in range(4):
        rec = Satrec()
        rec.sgp4init(WGS72, "i", 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, inclination_rad, 0.0, n, 0.0)
        n *= (rec.a / a_want) ** 1.5
    return n


def altitude_for_mean_motion_km(rev_day: float, inclination_deg: float) -> float:
    """Altitude above the WGS72 equatorial radius of the circular orbit whose (Kozai)
    mean motion is ``rev_day``, as SGP4 turns it into a mean semi-major axis."""
    rec = Satrec()
    n = rev_day * 2 * math.pi / 1440.0  # rad/min
    rec.sgp4init(WGS72, "i", 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.radians(inclination_deg),
                 0.0, n, 0.0)  # fmt: skip
    return rec.a * _WGS72_RADIUS_KM - _WGS72_RADIUS_KM


def satrecs_for(orbits: list[CircularOrbit], first_satnum: int = 90000) -> list[Satrec]:
    """SGP4 records for circular orbits (no drag), numbered from ``first_satnum``."""
    records = []
    cache: dict[tuple[float, float], float] = {}
    for i, orbit in enumerate(orbits):
        inc = math.radians(orbit.inclination_deg)
        key = (orbit.altitude_km, orbit.inclination_deg)
        if key not in cache:
            cache[key] = _mean_motion_rad_min(orbit.altitude_km, inc)
        rec = Satrec()
        rec.sgp4init(
            WGS72,
            "i",
            (first_satnum + i) % 100000,
            _sgp4_epoch_days(orbit.epoch),
            0.0,  # bstar: no drag, so a shell keeps its geometry
            0.0,
            0.0,
            0.0,  # eccentricity
            0.0,  # argument of perigee
            inc,
            math.radians(orbit.mean_anomaly_deg),
            cache[key],
            math.radians(orbit.raan_deg),
        )
        records.append(rec)
    return records


def walker_orbits(
    altitude_km: float,
    inclination_deg: float,
    planes: int,
    per_plane: int,
    phasing: int,
    raan0_deg: float,
    epoch: datetime,
    raan_spread_deg: float = 360.0,
) -> list[CircularOrbit]:
    """Orbits of a Walker shell, plane by plane, slot by slot."""
    total = planes * per_plane
    plane = np.repeat(np.arange(planes), per_plane)
    slot = np.tile(np.arange(per_plane), planes)
    raan = (raan0_deg + raan_spread_deg * plane / planes) % 360.0
    anomaly = (360.0 * slot / per_plane + 360.0 * phasing * plane / total) % 360.0
    return [
        CircularOrbit(altitude_km, inclination_deg, float(r), float(m), epoch)
        for r, m in zip(raan, anomaly, strict=True)
    ]
