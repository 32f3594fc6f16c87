"""The wire shaper with real packets: what unmodified tools measure, GSO, jitter, overload.

The engine delays a packet before the receiving node's kernel sees it, so plain
``ping`` (kernel receive stamps), tcpdump inside a node and any application
measure the emulated delay. Runs on kepler.yaml with the controller stopped:
epoch 0's links and delays hold still, so the geometry is exact.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import time

import pytest

from netemu.capture import pcapng
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology
from netemu.native import CFLAGS
from netemu.routes import composition
from netemu.shaping import Shape, wire

from helpers import TOPOLOGIES, needs_root, stream


@pytest.mark.parametrize(
    "source, flags",
    [(wire.SOURCE, ["-lm"]), (composition.SOURCE, ["-O3", "-shared", "-fPIC"])],
    ids=["engine", "compose"],
)
def test_the_compiled_parts_build_without_warnings(tmp_path, source, flags):
    """What scripts/provision builds, with warnings as errors (no root needed)."""
    p = subprocess.run(
        ["cc", *CFLAGS, "-Werror", "-o", str(tmp_path / "out"), str(source), *flags],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def emu():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    topo = load_topology(TOPOLOGIES / "kepler.yaml")
    emulation = Emulation(topo, shaper="wire", run_name="twire")
    emulation.start()  # no controller: epoch 0 stays in force, shapes are ours to change
    yield emulation
    emulation.stop()


def direction_stats(emu, direction) -> dict:
    return emu.shaper_stats(full=True)["dirs"][str(emu.shaper.direction_id(direction))]


@needs_root
def test_plain_ping_reads_the_emulated_round_trip_over_five_hops(emu):
    """Kernel receive stamps are taken after the delay: no hop goes missing."""
    assert len(emu.route("kep0", "kep5")) == 6
    # Halfway round the ring: the reply may go the other way.
    geometric = emu.path_delay_ms("kep0", "kep5") + emu.path_delay_ms("kep5", "kep0")
    out = emu.host("kep0").cmd(f"ping -c 30 -i 0.05 {emu.address('kep5')}")
    # ping prints each round trip above 100 ms in whole ms; its summary to the microsecond.
    low, mean, high = (float(x) for x in re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", out).groups())
    assert " 0% packet loss" in out, out
    seen = f"min/mean/max {low}/{mean}/{high} ms, geometric {geometric:.3f} ms"
    assert low >= geometric - 0.01, f"faster than light: {seen}"
    # 10 engine passes and 10 kernel forwardings: exact within 0.3 ms when the machine
    # leaves the engine its CPU (the fastest of 30); a busy 2-core machine adds a
    # little to some (the engine counts the releases it made late).
    assert low <= geometric + 0.3, f"every round trip too long: {seen}"
    assert mean <= geometric + 1.0, f"round trips too long on average: {seen}"


@needs_root
def test_tcpdump_in_each_node_sees_the_link_between_them(emu):
    """The sender's capture sees a packet leave, the receiver's sees it arrive one
    link delay later (the engine sits between the two interfaces, like the wire)."""
    delay = emu.link("kep0", "kep1").delay_ms
    dumps = []
    for node, peer in (("kep0", "kep1"), ("kep1", "kep0")):
        path = f"/tmp/twire-{node}.pcap"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", emu.netns[emu.names.index(node)], "tcpdump", "-i",
             f"to-{peer}", "-w", path, "--immediate-mode", "-U", "-Z", "root", "-n",
             "--time-stamp-precision=nano", "icmp[icmptype] == icmp-echo"],
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        seen = b""
        while b"listening on" not in seen:
            seen += proc.stderr.read1(4096)
        dumps.append((proc, path))
    emu.host("kep0").cmd(f"ping -c 20 -i 0.02 {emu.address('kep1')}")
    time.sleep(0.1)
    for proc, _ in dumps:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)
    sent, arrived = ([r.time_ns for r in pcapng.read(path)[1]] for _, path in dumps)
    os.unlink(dumps[0][1])
    os.unlink(dumps[1][1])
    assert len(sent) == len(arrived) == 20
    latency = sorted((b - a) / 1e6 - delay for a, b in zip(sent, arrived, strict=True))
    assert latency[0] >= -0.01 and statistics.median(latency) <= 0.1, latency


@needs_root
def test_gso_packets_cross_whole_unless_the_link_loses_packets(emu):
    """TCP's 64 KB packets cross a loss-free link in one piece each (fewer packets than
    segments); on a lossy link the kernel hands the engine wire-sized packets, each
    lost on its own as on a real link."""
    link = emu.link("kep0", "kep1")
    base = link.shapes[0]

    def mean_packet_bytes() -> float:
        """Mean size of the frames that crossed kep0 -> kep1 during a 20 MB transfer."""
        before = direction_stats(emu, link.forward)
        server = emu.host("kep1").popen(
            ["iperf3", "-s", "-1", "-B", emu.address("kep1")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        emu.host("kep0").cmd(f"iperf3 -c {emu.address('kep1')} -B {emu.address('kep0')} -n 20M")
        server.wait(timeout=30)
        after = direction_stats(emu, link.forward)
        packets = after["out"] - before["out"]
        assert packets > 100
        return (after["out_bytes"] - before["out_bytes"]) / packets

    assert mean_packet_bytes() > 3000  # wire-sized frames are at most 1,514 bytes
    emu.shaper.apply({link.forward: Shape(base.delay_ms, base.rate_mbit, loss=0.001)})
    try:
        assert mean_packet_bytes() <= 1514
    finally:
        emu.shaper.apply({link.forward: base})


@needs_root
def test_jitter_spreads_the_delay_and_never_reorders(emu):
    link = emu.link("kep0", "kep1")
    base = link.shapes[0]
    emu.shaper.apply({link.forward: Shape(base.delay_ms, base.rate_mbit, jitter_ms=2.0)})
    try:
        got = stream(emu, "kep0", "kep1", count=600, interval=0.001)
    finally:
        emu.shaper.apply({link.forward: base})
    seqs = [p["seq"] for p in got]
    assert len(got) == 600 and seqs == sorted(seqs), "a packet overtook another"
    delays = [(p["recv_ns"] - p["sent_ns"]) / 1e6 - base.delay_ms for p in got]
    # delay +- a normal 2 ms (as netem's jitter), a packet held back where it would
    # overtake the one before (1 ms apart): spread, shifted up, never below -4 sigma.
    assert min(delays) >= -8.0
    assert 0.8 <= statistics.stdev(delays) <= 2.5, statistics.stdev(delays)
    assert 0.3 <= statistics.median(delays) <= 3.0, statistics.median(delays)


@needs_root
def test_emulator_overload_is_counted_apart_from_the_links_loss(emu):
    """Packets the engine has no room for are dropped and counted as overload, not as
    link loss, and the run's report names them."""
    direction = emu.link("kep0", "kep1").forward
    before = direction_stats(emu, direction)
    emu.shaper.engine.send([f"limit {64 * 2048}"])  # room for 64 small packets
    try:
        # 400 datagrams within ~40 ms over a 14 ms link: more than 64 in flight.
        stream(emu, "kep0", "kep1", count=400, interval=0.0001)
    finally:
        emu.shaper.engine.send([f"limit {1 << 30}"])
    after = direction_stats(emu, direction)
    assert after["overload"] - before["overload"] > 100
    assert after["lost"] == before["lost"]
    assert emu.shaping_late()["overload"] >= after["overload"] - before["overload"]


@needs_root
def test_a_sample_the_engine_spoiled_is_measured_again(emu):
    """The engine stalled mid-measurement (SIGSTOP for 40 ms, as a host taking its CPU
    would): its late releases are counted, the assertion measures again and says so;
    without a stall a failing assertion is not measured again."""
    import threading
    import warnings

    from netemu.testing.network import EmulatorWarning, Network, NetworkAssertionError

    net = Network(emu)
    engine = emu.shaper.engine.pid
    delay = emu.link("kep0", "kep1").delay_ms

    first_done = threading.Event()

    def stall() -> None:  # all through the first measurement, none in the next
        while not first_done.wait(0.15):
            os.kill(engine, signal.SIGSTOP)
            time.sleep(0.04)
            os.kill(engine, signal.SIGCONT)

    one_way = net.one_way_delay

    def first_one_stalled(*args, **kwargs):
        try:
            return one_way(*args, **kwargs)
        finally:
            first_done.set()

    net.one_way_delay = first_one_stalled
    stalling = threading.Thread(target=stall)
    stalling.start()
    with pytest.warns(EmulatorWarning, match="measured again: the shaping engine released"):
        sample = net.assert_one_way_delay("kep0", "kep1", below_ms=delay + 5, count=100)
    stalling.join()
    assert sample.percentile(99) < delay + 5  # the clean one, measured after the stall

    measured = []
    net.one_way_delay = lambda *a, **k: measured.append(1) or one_way(*a, **k)
    late = emu.shaping_late().get("late", 0)
    with warnings.catch_warnings(record=True), pytest.raises(NetworkAssertionError):
        net.assert_one_way_delay("kep0", "kep1", below_ms=delay - 1, count=20)
    assert len(measured) == 1 or emu.shaping_late().get("late", 0) > late
