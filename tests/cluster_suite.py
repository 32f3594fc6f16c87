"""A network regression suite run over a cluster: train.yaml split over several machines.

Not collected by the main run: tests/test_cluster_ray.py runs it with
``pytest --netemu-cluster ADDRESS tests/cluster_suite.py`` from the first of three
simulated machines, as a user runs theirs against real ones. The plugin brings
each emulation up over the cluster's machines (the partition puts the train's
nodes on all three), and the tests measure it as on one machine: probes run in
the nodes on the nodes' machines, and each datagram's one-way delay is compared
with the geometry's delay in force when it flew.
"""

from __future__ import annotations

import statistics

import pytest

TRAIN = "topologies/train.yaml"
#: A handover's new access link carries after 2 s (break before make).
SLOW_ACQUISITION = {"link_defaults": {"space_ground": {"acquisition_s": 2, "reacquisition_s": 1}}}


def machines_on(network, route: list[str]) -> list[str]:
    return [network.emu.machine_of(n) for n in route]


# Speed 5: a sample measured three times (spoiled twice) still ends before gs_south
# loses t0 at 03:08:20 (200 orbital s from the start, 40 s wall).
@pytest.mark.netemu(TRAIN, speed=5, step=0.5, scope="module")
def test_one_way_delay_across_machines_follows_the_geometry(network):
    """gs_south -> gs_north crosses 5 links and three machine boundaries while their
    delays change every epoch: each datagram takes the geometry's delay in force when
    it flew, never less. Three simulated machines on 2 cores add what one host doing
    three machines' work adds: each pass through an engine (both ends of a crossing
    are one, the receiving end's carries at once) stamps an arrival when the engine
    wakes, ~0.05-0.07 ms on a fresh VM, so the 8 passes here sit 0.3-0.4 ms above
    the geometry at the median (0.19-0.23 ms at best, 5 runs, 2026-12-03): the median
    within 0.5 ms, every epoch's within 0.75 ms, 70% of datagrams within 0.5 ms and
    95% within 1 ms (docs/scaling.md)."""
    emu = network.emu
    route = network.route("gs_south", "gs_north")
    crossed = machines_on(network, route)
    assert len(set(crossed)) >= 2, f"route {route} on machines {crossed}"

    def errors_of(sample) -> dict[float, list[float]]:
        """Each datagram's delay less the geometry's in force, by that delay."""
        errors: dict[float, list[float]] = {}
        for delay, arrived in zip(sample.values_ms, sample.arrivals, strict=True):
            sent = arrived - delay / 1000
            want = emu.delay_in_force_ms("gs_south", "gs_north", sent, arrived)
            if want is not None:
                errors.setdefault(round(want, 3), []).append(delay - want)
        return errors

    def missed(sample) -> str | None:
        """Why the sample misses its bounds (None: it holds), with its figures."""
        errors = errors_of(sample)
        every = sorted(e for errs in errors.values() for e in errs)
        if sample.received != 400 or len(every) < 250:
            return f"{sample.describe()}; {len(every)} with a known delay in force"
        within = {b: sum(e <= b for e in every) / len(every) for b in (0.5, 1.0)}
        medians = [statistics.median(v) for v in errors.values() if len(v) >= 5]
        seen = (
            f"{sample.describe()}; {len(every)} with a known delay in force, error min "
            f"{every[0]:.3f}, median {statistics.median(every):.3f}, max {every[-1]:.3f} ms; "
            f"engines {emu.shaping_late() or 'none late'}; route {route} on {crossed}; "
            f"within 0.5 / 1 ms: {within[0.5]:.1%} / {within[1.0]:.1%}"
        )
        print(seen)  # the figures, for passing runs too (pytest -rA)
        if max(errors) - min(errors) <= 0.1:
            return f"the geometry did not change: {seen}"
        if every[0] < -0.05:
            return f"a datagram arrived before physics allows: {seen}"
        if statistics.median(every) > 0.5 or not all(0 <= m <= 0.75 for m in medians):
            return f"epochs' medians {medians}: {seen}"
        if within[0.5] < 0.70 or within[1.0] < 0.95:
            return seen
        return None

    # Measured again (at most twice) when it misses while the engines counted releases
    # late: the host, not the network, spoiled it (as the plugin's assertions do).
    verdict: dict[str, str | None] = {}

    def good(sample) -> bool:  # the verdict kept: unspoiled() judges every sample it returns
        verdict["why"] = missed(sample)
        return verdict["why"] is None

    network.unspoiled(
        lambda: network.one_way_delay("gs_south", "gs_north", count=400, interval_s=0.02), good
    )
    assert verdict["why"] is None, verdict["why"]


@pytest.mark.netemu(
    TRAIN, speed=10, step=0.2, start="2026-06-21T03:06:20Z", overrides=SLOW_ACQUISITION
)
def test_a_handover_across_machines_interrupts_traffic_for_the_acquisition_time(network):
    """gs_north hands over from t3 to t2 at 03:07:42 (8.2 s wall): the stream from
    gs_south, routed across machines, stops for the new link's 2 s of acquisition
    (within an epoch) and then takes t2."""
    before = network.route("gs_south", "gs_north")
    assert before[-2] == "t3", before
    ends = {network.emu.machine_of(n) for n in ("t3", "t2", "gs_north")}
    assert len(ends) >= 2, "the handover stays on one machine"
    assert len(set(machines_on(network, before))) >= 2, before

    def on_t2() -> bool:
        now = network.route("gs_south", "gs_north")
        return now is not None and now[-2] == "t2"

    sample = network.stream_until("gs_south", "gs_north", on_t2, timeout_s=20)
    handover = [e for e in network.emu.events if e["type"] == "handover"]
    assert any(e["node"] == "gs_north" and e["to"] == "t2" for e in handover), handover
    assert abs(sample.longest_gap_s - 2.0) <= 0.2 + 0.05, (
        f"outage {sample.longest_gap_s:.3f} s, acquisition 2 s; {sample.describe()}"
    )
    after = network.route("gs_south", "gs_north")
    assert after[-2] == "t2", after
    network.assert_reachable("gs_south", "gs_north")
