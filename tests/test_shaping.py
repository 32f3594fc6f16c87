"""Shaper command generation: units, netem limits, in-place changes, naming."""

import numpy as np

from netemu.routes import addressing
from netemu.shaping import BLOCKED, Shape, htb_rate
from netemu.shaping.netem import netem_args, netem_limit


def test_htb_rates_are_megabits_not_megabytes():
    assert htb_rate(2500).startswith("rate 2500mbit ceil 2500mbit")
    assert "burst 78125" in htb_rate(2500)  # 0.25 ms at 2.5 Gbit/s
    assert "burst 3028" in htb_rate(1)  # never below two full frames


def test_netem_limit_holds_the_bandwidth_delay_product():
    assert netem_limit(10, 5) == 1000  # small: netem's default is enough
    # 2.5 Gbit/s x 18 ms = 5.6 MB in flight = 11,250 packets of 500 bytes.
    assert netem_limit(2500, 18) == 11250
    assert netem_limit(2500, 18, jitter_ms=1) > netem_limit(2500, 18)


def test_netem_arguments_keep_microseconds():
    args = netem_args(Shape(delay_ms=14.3524, rate_mbit=2500, loss=0.05))
    assert args.startswith("delay 14352.4us loss 5% limit ")
    assert "loss 100%" in netem_args(BLOCKED)
    jitter = netem_args(Shape(delay_ms=1, rate_mbit=10, jitter_ms=0.5))
    assert "delay 1000.0us 500.0us distribution normal" in jitter


def test_shapes_compare_to_the_microsecond():
    a = Shape(delay_ms=10.0, rate_mbit=100)
    assert a.close_to(Shape(delay_ms=10.0004, rate_mbit=100))
    assert not a.close_to(Shape(delay_ms=10.002, rate_mbit=100))
    assert not a.close_to(Shape(delay_ms=10.0, rate_mbit=100, blocked=True))


def test_names_and_addresses():
    assert len(addressing.interface_name("a" * 12)) == 15
    assert addressing.service_address(0) == "172.16.0.1"
    assert addressing.mac_address(3, 5) == "02:00:00:30:00:05"
    assert addressing.mac_address(5, 3) == "02:00:00:50:00:03"
    big = addressing.MAX_NODES - 1  # Starlink phase 1 and far beyond: ends stay distinct
    assert addressing.mac_address(big, 4419) == "02:ff:ff:d0:11:43"
    ends = [(i, j) for i in (0, 1, 4419, big) for j in (0, 1, 4419, big) if i != j]
    macs = addressing.mac_bytes(*np.array(ends).T)
    assert len({m.tobytes() for m in macs}) == len(ends)
    assert addressing.service_address(big) == "172.31.255.254"
