"""Link physics against closed forms and the published reference values."""

import math

import numpy as np
import pytest

from netemu.model import physics
from netemu.model.physics import Terminal

SDA = Terminal(tx_power_w=2.5, divergence_urad=15, aperture_m=0.08)


def test_received_power_for_the_sda_reference_geometry():
    """Notes: SDA terminal numbers give ~1.15 uW at 5,500 km (lossless optics, 80 mm)."""
    ideal = Terminal(tx_power_w=2.5, divergence_urad=15, aperture_m=0.08, efficiency=1.0)
    assert physics.received_power_w(ideal, ideal, 5500) == pytest.approx(1.15e-6, rel=0.03)


def test_received_power_falls_with_the_square_of_range():
    p = physics.received_power_w(SDA, SDA, np.array([1000.0, 2000.0]))
    assert 10 * math.log10(p[0] / p[1]) == pytest.approx(20 * math.log10(2))


@pytest.mark.parametrize(
    ("modulation", "photons", "want"),
    [
        ("dpsk", 20.0, 0.5 * math.exp(-20)),  # ~1e-9 at 20 photons/bit (notes)
        ("bpsk", 9.0, 0.5 * math.erfc(math.sqrt(18))),
        ("ook", 38.4, 0.5 * math.erfc(6 / math.sqrt(2))),  # 1e-9 at the quantum limit
    ],
)
def test_bit_error_rate_per_modulation(modulation, photons, want):
    assert physics.bit_error_rate(photons, modulation) == pytest.approx(want, rel=1e-9)
    assert 5e-10 < physics.bit_error_rate(photons, modulation) < 2e-9


def test_packet_error_rates():
    # Notes: BER 1e-6 -> 1.2% loss for 1,500-byte packets.
    assert physics.packet_error_rate_uncoded(1e-6, 1500) == pytest.approx(1 - (1 - 1e-6) ** 12000)
    assert physics.packet_error_rate_uncoded(1e-6, 1500) == pytest.approx(0.012, abs=1e-3)
    # 12,000 bits need two 8,416-bit LDPC frames.
    assert physics.packet_error_rate_coded(1e-3, 1500) == pytest.approx(1 - (1 - 1e-3) ** 2)
    assert physics.packet_error_rate_uncoded(1e-30) == pytest.approx(1.2e-26, rel=1e-6)


def test_pointing_jitter_fades_match_a_monte_carlo():
    rng = np.random.default_rng(7)
    tx = Terminal(tx_power_w=1, divergence_urad=15, aperture_m=0.1, pointing_jitter_urad=4)
    err2 = rng.normal(0, 4, 200_000) ** 2 + rng.normal(0, 4, 200_000) ** 2
    loss = np.exp(-2 * err2 / 15**2)
    assert physics.mean_pointing_loss(tx) == pytest.approx(loss.mean(), rel=0.01)
    for x in (0.3, 0.6, 0.9):
        assert physics.pointing_fade_probability(tx, x) == pytest.approx(
            (loss < x).mean(), abs=0.005
        )


def test_slant_path_atmosphere():
    assert physics.atmosphere_transmittance(0.9, 90) == pytest.approx(0.9)
    assert physics.atmosphere_transmittance(0.9, 30) == pytest.approx(0.81)


def test_budget_loss_rises_with_range_and_fec_helps():
    ranges = np.array([2000.0, 20_000.0, 40_000.0])
    coded = physics.link_budget(SDA, SDA, ranges, 2.5)
    uncoded_rx = Terminal(2.5, 15, 0.08, fec=False)
    uncoded = physics.link_budget(SDA, uncoded_rx, ranges, 2.5)
    assert np.all(np.diff(coded.rx_power_dbm) < 0) and np.all(np.diff(coded.loss) >= 0)
    assert uncoded.loss[-1] > coded.loss[-1]
    assert coded.loss[0] < 1e-12  # a short ISL loses nothing


def test_plan_reports_budgets(tmp_path):
    from netemu.model.topology import load_topology
    from netemu.plan.planner import Planner

    topo = load_topology("topologies/kepler.yaml")
    epoch = next(Planner(topo).run(duration_s=0, step_s=1))
    out = epoch.to_json(topo)["links"]
    isl = next(x for x in out if x["kind"] == "isl")
    # Independently: an SDA-like ISL of that length with the default optics.
    p = physics.received_power_w(
        SDA, SDA, isl["distance_km"], l_point=physics.mean_pointing_loss(SDA)
    )
    assert isl["rx_power_dbm"] == pytest.approx(10 * math.log10(p * 1e3), abs=1e-3)
    air = next(x for x in out if x["kind"] == "space-air")
    assert air["rx_power_dbm"] > isl["rx_power_dbm"]  # shorter, and a 30 cm aircraft telescope
    assert all(x["loss"] is not None and 0 <= x["loss"] <= 1 for x in out if x["up"])


@pytest.mark.parametrize(
    ("h0_km", "zenith_deg", "want"),
    [(0, 0, 0.063), (0, 60, 0.224), (10, 0, 0.0069), (10, 60, 0.025)],  # notes [calc]
)
def test_rytov_variance_hufnagel_valley(h0_km, zenith_deg, want):
    assert physics.rytov_variance(1550, zenith_deg, h0_km) == pytest.approx(want, rel=0.02)


def test_lognormal_fades_match_a_monte_carlo():
    rng = np.random.default_rng(3)
    s2 = math.log1p(0.3)
    irradiance = np.exp(rng.normal(-s2 / 2, math.sqrt(s2), 400_000))
    assert irradiance.mean() == pytest.approx(1.0, abs=0.005)
    for x in (0.3, 0.6, 1.0):
        assert physics.lognormal_fade_probability(0.3, x) == pytest.approx(
            (irradiance < x).mean(), abs=0.003
        )


def test_photons_for_ber_inverts_the_ber():
    for modulation in ("ook", "dpsk", "bpsk"):
        n = physics.photons_for_ber(1e-3, modulation)
        assert physics.bit_error_rate(n, modulation) == pytest.approx(1e-3, rel=1e-6)


def test_fades_grow_toward_the_horizon_and_for_weak_receivers():
    weak = Terminal(tx_power_w=0.002, divergence_urad=15, aperture_m=0.08)
    budget = physics.link_budget(weak, weak, np.array([900.0, 2500.0]), 2.5)
    sigma = physics.rytov_variance(1553.33, np.array([10.0, 70.0]), 0.0)  # high, then low sky
    fade = physics.lognormal_fade_probability(
        sigma, physics.fade_threshold_ppb(weak) / budget.photons_per_bit
    )
    assert 0 <= fade[0] < fade[1] <= 1


def test_netem_gemodel_arguments():
    from netemu.shaping import Shape
    from netemu.shaping.netem import gilbert_elliott_per_packet, netem_args

    shape = Shape(delay_ms=3, rate_mbit=120, loss=0.01, fade_probability=0.1, fade_ms=5)
    p, r = gilbert_elliott_per_packet(shape)
    assert r == pytest.approx(1 / 50)  # 5 ms at 10,000 packets/s of 1,500 bytes
    assert p / (p + r) == pytest.approx(0.1)  # the chain's share of bad state
    assert f"loss gemodel {p * 100:.6g}% {r * 100:.6g}% 100% 1%" in netem_args(shape)
