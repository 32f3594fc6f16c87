"""A network regression suite for topologies/kepler.yaml: copy it for your constellation.

Runs against a live emulation (root; the ``network`` fixture comes from netemu's
pytest plugin). ``sudo .venv/bin/pytest tests/examples --junitxml=results/junit.xml``
"""

import pytest

KEPLER = "topologies/kepler.yaml"


@pytest.mark.netemu(KEPLER, start="2026-06-21T03:06:40Z", speed=10, scope="module")
class TestOverAPass:
    """patrol1 on kep1 and c2_bodo on kep1 (03:06:30-03:11:40): one emulation for the class,
    its orbital time running on from test to test."""

    def test_c2_to_aircraft_stays_below_15_ms(self, network):
        network.assert_reachable("c2_bodo", "patrol1")
        network.assert_one_way_delay("c2_bodo", "patrol1", below_ms=15, count=200)
        network.assert_rtt("c2_bodo", "patrol1", below_ms=30)

    def test_sensor_to_aircraft_stays_below_25_ms(self, network):
        for _ in range(4):  # every minute of orbital time
            network.assert_one_way_delay("kep0", "patrol1", below_ms=25, count=100)
            network.advance(60)


@pytest.mark.netemu(KEPLER, start="2026-06-21T03:05:00Z", speed=10)
def test_aircraft_handover_interrupts_traffic_for_the_acquisition_time(network):
    """patrol1 hands over from kep2 to kep1 at 03:05:20: break before make, 10 s to acquire."""
    network.assert_route("kep0", "patrol1", ["kep0", "kep1", "kep2", "patrol1"])
    handover = network.wait_for("handover", node="patrol1", timeout_s=60)
    assert (handover["from"], handover["to"]) == ("kep2", "kep1")
    stream = network.assert_interruption(
        "kep0", "patrol1",
        during=lambda: network.link_state("kep1", "patrol1") == "up",  # acquired
        below_s=10.5, timeout_s=30,
    )  # fmt: skip
    assert stream.longest_gap_s >= 9.0, "traffic flowed before the new terminal could acquire"
    network.assert_route("kep0", "patrol1", ["kep0", "kep1", "patrol1"])


@pytest.mark.netemu(KEPLER, overrides={"link_defaults": {"isl": {"data_rate_gbps": 0.05}}})
def test_throughput_across_a_50_mbit_isl(network):
    network.assert_throughput("kep0", "kep1", at_least_mbit=40, at_most_mbit=52, seconds=4)


@pytest.mark.netemu(KEPLER, overrides={"link_defaults": {"isl": {"loss_percent": 5}}})
def test_loss_on_a_degraded_isl(network):
    # 5% configured; 2,000 packets: binomial 4.5 sigma is +-2.2 points.
    network.assert_loss("kep0", "kep1", between=(0.028, 0.072), count=2000)
