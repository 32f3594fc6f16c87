"""Geometry against independent values: published SGP4 vectors, closed forms, Skyfield."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from skyfield.api import EarthSatellite, wgs84
from skyfield.framelib import itrs

from netemu.model.constants import EARTH_RADIUS_KM, SPEED_OF_LIGHT_KM_S
from netemu.model.orbits import sun_synchronous_inclination_deg
from netemu.model.skydata import ephemeris, timescale
from netemu.model.tle import parse_tle
from netemu.model.topology import load_topology
from netemu.plan.geometry import (
    Geometry,
    delay_ms,
    elevation_deg,
    ellipsoid_normal,
    epochs,
    line_of_sight,
    max_isl_range_km,
)

from helpers import VANGUARD_L1 as L1
from helpers import VANGUARD_L2 as L2

TLE_EPOCH = datetime(2000, 6, 27, tzinfo=UTC) + timedelta(days=0.78495062)


def topology_with_tle(write_topology, tmp_path, lines: str):
    (tmp_path / "sats.tle").write_text(lines)
    return load_topology(
        write_topology(
            f"""
            name: t
            start: {TLE_EPOCH.isoformat()}
            satellites:
              - tle: {{file: sats.tle}}
                names: "s{{catnum}}"
            """
        )
    )


def test_published_sgp4_vectors_with_tle_epoch_respected(write_topology, tmp_path):
    """Vallado's tcppver.out for satellite 00005, TEME km at 0 and 360 minutes."""
    topo = topology_with_tle(write_topology, tmp_path, f"{L1}\n{L2}\n")
    geometry = Geometry(topo)
    t = epochs(TLE_EPOCH, 360 * 60, 360 * 60)
    teme, err = geometry.satellite_teme_km(t)
    assert not err.any()
    np.testing.assert_allclose(teme[0, 0], [7022.46529266, -1400.08296755, 0.03995155], atol=1e-3)
    np.testing.assert_allclose(
        teme[1, 0], [-7154.03120202, -3783.17682504, -3536.19412294], atol=1e-3
    )


def test_earth_fixed_positions_match_skyfield_one_satellite_at_a_time(write_topology, tmp_path):
    topo = load_topology(write_topology(_walker_yaml(planes=3, per_plane=5)))
    geometry = Geometry(topo)
    t = epochs(topo.start, 3000, 1000)
    ours = geometry.positions_km(t)
    ts = timescale()
    from sgp4.exporter import export_tle

    for i, rec in enumerate(topo.satrecs):
        sat = EarthSatellite.from_satrec(rec, ts)
        theirs = sat.at(t).frame_xyz(itrs).km.T
        np.testing.assert_allclose(ours[:, i], theirs, atol=1e-3)  # 1 m
        # The generated record is a valid TLE: our own parser checks every line.
        assert parse_tle("\n".join(export_tle(rec)))[0].catalog_number == rec.satnum


def test_ground_station_position_is_wgs84_geodetic():
    """Against the textbook geodetic-to-ECEF formula, computed here independently."""
    a, f = 6378.137, 1 / 298.257223563
    e2 = f * (2 - f)
    lat, lon, h = np.radians(78.2297), np.radians(15.4077), 0.5
    n = a / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    want = [
        (n + h) * np.cos(lat) * np.cos(lon),
        (n + h) * np.cos(lat) * np.sin(lon),
        (n * (1 - e2) + h) * np.sin(lat),
    ]
    topo = load_topology("topologies/kepler.yaml")
    pos = Geometry(topo).positions_km(epochs(topo.start, 0, 1))[0]
    np.testing.assert_allclose(pos[topo.by_name["svalbard"].index], want, atol=1e-6)


def _walker_yaml(planes: int, per_plane: int, altitude: float = 550, extra: str = "") -> str:
    return f"""
        name: w
        start: 2026-06-21T00:00:00Z
        satellites:
          - walker: {{altitude_km: {altitude}, inclination_deg: 53, planes: {planes},
                      per_plane: {per_plane}, phasing: 1}}
        {extra}
        """


@pytest.mark.parametrize("per_plane", [11, 22, 40])
def test_in_plane_neighbour_distance_is_the_chord(write_topology, per_plane):
    topo = load_topology(write_topology(_walker_yaml(2, per_plane)))
    pos = Geometry(topo).positions_km(epochs(topo.start, 600, 300))
    for p in pos:
        a, b = p[0], p[1]  # slots 0 and 1 of plane 0
        r = (np.linalg.norm(a) + np.linalg.norm(b)) / 2
        want = 2 * r * np.sin(np.pi / per_plane)
        # The closed form is two-body; SGP4's short-period J2 terms stretch the
        # angle between neighbours by ~0.1% (order J2 = 1.1e-3). A spacing slip
        # (N vs N-1 satellites) would be off by 2.5% or more.
        assert np.linalg.norm(a - b) == pytest.approx(want, rel=3e-3)


def test_walker_shell_flies_at_the_requested_altitude(write_topology):
    topo = load_topology(write_topology(_walker_yaml(4, 10, altitude=1200)))
    pos = Geometry(topo).positions_km(epochs(topo.start, 6000, 60))
    alt = np.linalg.norm(pos, axis=-1) - 6378.135
    assert alt.mean() == pytest.approx(1200, abs=3)  # J2 short-period terms: a few km


def test_maximum_isl_length_for_the_grazing_altitude():
    r, g = EARTH_RADIUS_KM + 550, EARTH_RADIUS_KM + 80
    want = 2 * np.sqrt(r**2 - g**2)
    assert max_isl_range_km(550, 80) == pytest.approx(want)
    assert want == pytest.approx(5017, abs=1)  # the notes' figure

    # Two satellites at 550 km, symmetric about the x axis, at chord lengths just
    # under and over the limit: the Earth's limb must cut only the second.
    def pair(chord):
        half = np.arcsin(chord / (2 * r))
        return (
            r * np.array([np.cos(half), np.sin(half), 0.0]),
            r * np.array([np.cos(half), -np.sin(half), 0.0]),
        )

    assert line_of_sight(*pair(want - 1.0), 80)
    assert not line_of_sight(*pair(want + 1.0), 80)
    # The endpoints themselves are far above the limit: only the segment test sees it.
    a, b = pair(want + 1.0)
    assert np.linalg.norm(a) > g and np.linalg.norm(b) > g


def test_delay_is_distance_over_c():
    assert delay_ms(299_792.458) == pytest.approx(1000.0)
    assert delay_ms(5017.0) == pytest.approx(5017.0 / SPEED_OF_LIGHT_KM_S * 1000)


def test_elevation_of_a_satellite_straight_overhead_is_90_degrees():
    lat, lon = 45.0, 7.0
    station = wgs84.latlon(lat, lon, elevation_m=300).itrs_xyz.km
    up = ellipsoid_normal(station)
    overhead = station + 550 * up
    assert elevation_deg(station, up, overhead) == pytest.approx(90.0, abs=1e-3)
    # Along the geocentric radius instead, the satellite is *not* at the zenith
    # (geodetic vs geocentric latitude differ by ~0.19 deg at 45 deg).
    radial = station * (1 + 550 / np.linalg.norm(station))
    assert 89.5 < elevation_deg(station, up, radial) < 89.95
    # On the horizon plane: 0 deg.
    east = np.cross([0, 0, 1], up)
    assert elevation_deg(station, up, station + 1000 * east) == pytest.approx(0.0, abs=1e-9)


def test_sun_synchronous_inclination_matches_published_values():
    # Widely quoted: ~97.8 deg at 600 km, ~98.6 deg at 800 km (circular SSO).
    assert sun_synchronous_inclination_deg(600) == pytest.approx(97.79, abs=0.05)
    assert sun_synchronous_inclination_deg(800) == pytest.approx(98.60, abs=0.05)


def test_dawn_dusk_plane_faces_the_sun():
    """LTAN 6 h: the orbit normal points (anti-)sunward, within the season's tilt."""
    topo = load_topology("topologies/kepler.yaml")
    t = epochs(topo.start, 0, 1)
    geometry = Geometry(topo)
    teme, _ = geometry.satellite_teme_km(t)
    normal = np.cross(teme[0, 0], teme[0, 2])
    normal /= np.linalg.norm(normal)
    eph = ephemeris()
    sun = eph["earth"].at(t[0]).observe(eph["sun"]).position.km
    sun /= np.linalg.norm(sun)
    # TEME and GCRS differ by precession/nutation (< 0.5 deg): ignore here.
    angle = np.degrees(np.arccos(abs(np.dot(normal, sun))))
    assert angle < 25  # solstice: the Sun is 23.4 deg off the equator


def test_decayed_satellites_have_no_position(write_topology, tmp_path):
    """A heavy-drag satellite at ~190 km decays under SGP4: NaN position, so no links."""
    import math

    from sgp4.api import WGS72, Satrec
    from sgp4.exporter import export_tle

    rec = Satrec()
    epoch_days = (TLE_EPOCH - datetime(1949, 12, 31, tzinfo=UTC)).total_seconds() / 86400
    rec.sgp4init(
        WGS72, "i", 1, epoch_days, 0.05, 0, 0, 0.001, 0, math.radians(51), 0, 2 * math.pi / 88.5, 0
    )
    l1, l2 = export_tle(rec)
    topo = topology_with_tle(write_topology, tmp_path, f"{L1}\n{L2}\n{l1}\n{l2}\n")
    geometry = Geometry(topo)
    pos = geometry.positions_km(epochs(TLE_EPOCH, 86400, 86400))
    assert np.isfinite(pos[0]).all()  # at epoch both are fine
    assert np.isfinite(pos[1, 0]).all() and np.isnan(pos[1, 1]).all()  # a day later
