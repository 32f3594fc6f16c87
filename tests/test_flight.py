"""Aircraft positions along great-circle legs."""

from datetime import UTC, datetime

import numpy as np
import pytest

from netemu.model.constants import EARTH_MEAN_RADIUS_KM
from netemu.model.flight import FlightPath, great_circle_km
from netemu.model.schema import Aircraft

DEP = datetime(2026, 1, 1, tzinfo=UTC)
# Speed at which one degree of great circle takes one hour.
DEG_PER_HOUR_KMH = np.pi * EARTH_MEAN_RADIUS_KM / 180


def flight(waypoints, loop=False, speed=DEG_PER_HOUR_KMH):
    spec = Aircraft(
        name="a",
        speed_kmh=speed,
        loop=loop,
        waypoints=[dict(lat_deg=a, lon_deg=b, altitude_km=h) for a, b, h in waypoints],
    )
    return FlightPath.from_spec(spec, DEP)


def test_position_along_an_equatorial_leg():
    f = flight([(0, 0, 8), (0, 10, 12)])
    lat, lon, alt = f.position(np.array([0, 3600 * 2.5, 3600 * 5, 3600 * 10]))
    np.testing.assert_allclose(lat, 0, atol=1e-9)
    np.testing.assert_allclose(lon, [0, 2.5, 5, 10], atol=1e-9)
    np.testing.assert_allclose(alt, [8, 9, 10, 12], atol=1e-9)


def test_legs_are_great_circles_not_rhumb_lines():
    """(60N, 0) to (60N, 90E): the great circle bulges poleward, to ~65.8N midway."""
    f = flight([(60, 0, 10), (60, 90, 10)])
    half = f.route_km / f.speed_kmh * 3600 / 2
    lat, lon, _ = f.position(half)
    assert lon[0] == pytest.approx(45, abs=1e-6)
    want = np.degrees(np.arctan(np.tan(np.radians(60)) / np.cos(np.radians(45))))
    assert lat[0] == pytest.approx(want, abs=1e-6)  # 67.8 deg, well north of 60
    assert great_circle_km(60, 0, 60, 90) < np.radians(90) * np.cos(np.radians(60)) * (
        EARTH_MEAN_RADIUS_KM
    )


def test_over_the_pole():
    f = flight([(80, 0, 10), (80, 180, 10)])
    lat, _, _ = f.position(f.route_km / f.speed_kmh * 3600 / 2)
    assert lat[0] == pytest.approx(90, abs=1e-6)


def test_patrol_loops_and_open_routes_stop():
    loop = flight([(0, 0, 10), (0, 10, 10)], loop=True)  # 10 deg out, 10 back
    _, lon, _ = loop.position(np.array([-3600, 3600 * 15, 3600 * 21]))
    np.testing.assert_allclose(lon, [0, 5, 1], atol=1e-9)
    open_route = flight([(0, 0, 10), (0, 10, 10)], loop=False)
    _, lon, _ = open_route.position(np.array([3600 * 50]))
    assert lon[0] == pytest.approx(10)


def test_multi_leg_timing():
    f = flight([(0, 0, 10), (0, 4, 10), (4, 4, 10)])
    lat, lon, _ = f.position(np.array([3600 * 4, 3600 * 6]))
    np.testing.assert_allclose(lat, [0, 2], atol=1e-9)
    np.testing.assert_allclose(lon, [4, 4], atol=1e-9)
