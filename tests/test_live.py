"""Live emulation with real packets: delays, handovers, loss, throughput, clean-up.

Runs on this machine's kernel with the wire shaper (no sch_netem here).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netemu.capture import pcapng
from netemu.capture.taps import logged_events
from netemu.errors import InputError
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology
from netemu.routes.routing import UNREACHABLE

from helpers import (
    REPO,
    TOPOLOGIES,
    cli_run,
    leftovers,
    needs_root,
    received,
    send,
    start_receiver,
    stream,
    train_topology,
    wait_up,
)

pytestmark = needs_root


def test_one_way_delay_follows_the_geometry_over_a_multi_hop_path(tmp_path):
    """gs_south -> gs_north crosses 4-5 links whose delays change every epoch.

    Each packet's one-way delay (application timestamps; all namespaces share
    one clock) is compared with the sum of the link delays in force when it
    flew. The emulated delay must match within 0.5 ms in every epoch; single
    packets may also wait for the scheduler on this 2-core machine, so the
    tail is bounded separately.
    """
    topo = train_topology(tmp_path)
    with Emulation(
        topo, shaper="wire", speed=10, step_s=0.5, keep_history=True, run_name="tdelay"
    ) as emu:
        emu.start_controller()
        got = stream(emu, "gs_south", "gs_north", count=400, interval=0.02)
        stamps = emu.history.times
        by_epoch: dict[int, list[float]] = {}
        expected = set()
        for pkt in got:
            sent, recv = pkt["sent_ns"] / 1e9, pkt["recv_ns"] / 1e9
            want = emu.delay_in_force_ms("gs_south", "gs_north", sent, recv)
            if want is not None:
                epoch = bisect.bisect_right(stamps, sent)
                by_epoch.setdefault(epoch, []).append((recv - sent) * 1000 - want)
                expected.add(round(want, 3))
        route = emu.route("gs_south", "gs_north")
    errors = sorted(e for errs in by_epoch.values() for e in errs)
    assert len(got) >= 390  # no loss configured
    assert len(errors) >= 250 and len(by_epoch) >= 8
    assert max(expected) - min(expected) > 0.3  # the geometry did change
    medians = {k: statistics.median(v) for k, v in by_epoch.items() if len(v) >= 5}
    assert all(0 <= m <= 0.5 for m in medians.values()), medians
    assert errors[0] >= -0.05, "a packet arrived before physics allows"
    within = sum(e <= 0.5 for e in errors) / len(errors)
    assert within >= 0.97, (
        f"{within:.1%} within 0.5 ms; median {statistics.median(errors):.3f} ms, "
        f"p95 {errors[int(0.95 * len(errors))]:.3f} ms, max {errors[-1]:.3f} ms"
    )
    assert route[0] == "gs_south" and route[-1] == "gs_north" and len(route) >= 4


def test_handover_outage_matches_the_acquisition_time(tmp_path):
    """gs_north hands over from t3 to t2; the new link carries nothing for 2 s."""
    topo = train_topology(
        tmp_path,
        "link_defaults:\n  space_ground: {acquisition_s: 2, reacquisition_s: 1}\n",
        start="2026-06-21T03:06:20Z",  # gs_north on t3; t3 sets at 03:07:42 (8.2 s wall)
    )
    step = 0.2
    with Emulation(topo, shaper="wire", speed=10, step_s=step, run_name="thand") as emu:
        assert emu.route("gs_south", "gs_north")[-2] == "t3"
        emu.start_controller()
        # Listen until 11.5 s only: gs_south itself loses t0 at 03:08:20 (12 s).
        rx = start_receiver(emu, "gs_north", duration=11.5)
        tx = send(emu, "gs_south", "gs_north", count=2200, interval=0.005)
        got = received(rx)
        tx.wait()
        after = emu.route("gs_south", "gs_north")
        events = [e for e in emu.events if e["type"] in ("handover", "link-ready")]
    arrivals = [p["recv_ns"] / 1e9 for p in got]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    outage = max(gaps)
    assert any(e["type"] == "handover" and e["node"] == "gs_north" for e in events)
    assert any(e["type"] == "link-ready" and {e["a"], e["b"]} == {"t2", "gs_north"} for e in events)
    assert abs(outage - 2.0) <= step + 0.01, f"outage {outage:.3f} s, acquisition 2 s"
    # Apart from the handover the stream flowed: one long gap, the rest short.
    assert sorted(gaps)[-2] < 0.1
    assert after[-2] == "t2"  # traffic now takes the new satellite


def test_every_node_is_an_ipv4_router_without_ipv6(tmp_path):
    """What each namespace's sysctls must say, read back from the kernel in every node
    (netemu writes only those that differ from a new namespace's defaults)."""

    def read(ns: str, *keys: str) -> list[str]:
        paths = [f"/proc/sys/{k}" for k in keys]
        out = subprocess.run(["ip", "netns", "exec", ns, "cat", *paths], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        return [" ".join(line.split()) for line in out.splitlines()]

    with Emulation(train_topology(tmp_path), shaper="wire", run_name="tsysctl") as emu:
        for node, ns in zip(emu.names, emu.netns, strict=True):
            peer = next(b if a == node else a for a, b in ((v.a, v.b) for v in emu.links_now())
                        if node in (a, b))  # fmt: skip
            link = f"net/ipv4/conf/to-{peer}/forwarding"
            assert read(
                ns, "net/ipv4/ip_forward", link, "net/ipv4/conf/all/rp_filter",
                f"net/ipv4/conf/to-{peer}/rp_filter", "net/ipv6/conf/all/disable_ipv6",
                "net/ipv6/conf/default/disable_ipv6", f"net/ipv6/conf/to-{peer}/disable_ipv6",
                "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem",
            ) == ["1", "1", "0", "0", "1", "1", "1", "4096 131072 67108864",
                  "4096 16384 67108864"], node  # fmt: skip


def test_configured_loss_is_measured_within_statistical_bounds(tmp_path):
    topo = train_topology(tmp_path, "link_defaults:\n  isl: {loss_percent: 5}\n")
    count = 4000
    with Emulation(topo, shaper="wire", run_name="tloss") as emu:
        emu.start_controller()
        assert emu.route("t0", "t1") == ["t0", "t1"]
        got = stream(emu, "t0", "t1", count=count, interval=0.001)
    loss = 1 - len({p["seq"] for p in got}) / count
    sigma = math.sqrt(0.05 * 0.95 / count)
    assert abs(loss - 0.05) <= 4.5 * sigma, f"measured {loss:.4f}, configured 0.05"


def test_tcp_reaches_the_bottleneck_rate_across_hops(tmp_path):
    topo = train_topology(
        tmp_path,
        "link_defaults:\n  isl: {data_rate_gbps: 0.02}\n  space_ground: {data_rate_gbps: 0.1}\n",
    )
    with Emulation(topo, shaper="wire", run_name="ttcp") as emu:
        emu.start_controller()
        assert len(emu.route("gs_south", "gs_north")) >= 5  # >= 2 rate-limited ISLs
        server = emu.host("gs_north").popen(
            ["iperf3", "-s", "-1", "-B", emu.address("gs_north")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)
        out = emu.host("gs_south").cmd(
            f"iperf3 -c {emu.address('gs_north')} -B {emu.address('gs_south')} -t 6 -O 1 -J"
        )
        server.wait(timeout=20)
    import json

    result = json.loads(out)
    mbit = result["end"]["sum_received"]["bits_per_second"] / 1e6
    assert abs(mbit - 20) / 20 <= 0.15, f"{mbit:.2f} Mbit/s through a 20 Mbit/s bottleneck"


def test_nothing_is_left_after_a_run(tmp_path):
    topo = train_topology(tmp_path)
    emu = Emulation(topo, shaper="wire", run_name="tclean")
    with emu:
        assert leftovers("tclean")  # it did create namespaces and processes
        engine = emu.shaper.pids[0]
    assert leftovers("tclean") == []
    assert not os.path.exists(f"/proc/{engine}")


def test_an_error_during_the_run_still_cleans_up(tmp_path):
    topo = train_topology(tmp_path)
    with (
        pytest.raises(RuntimeError, match="boom"),
        Emulation(topo, shaper="wire", run_name="tcrash"),
    ):
        raise RuntimeError("boom")
    assert leftovers("tcrash") == []


def test_sigkill_then_netemu_clean(tmp_path):
    """kill -9 mid-run, then `netemu clean`: nothing left, partial results readable,
    the captures' raw recordings merged into a pcapng with the logged events."""
    run = "tkill"
    caps = tmp_path / "caps"
    proc = cli_run(run, "--capture", "link:t0-t1", "--capture-dir", str(caps))
    wait_up(proc, run)
    t1 = load_topology(TOPOLOGIES / "train.yaml").by_name["t1"].index
    ping = subprocess.run(
        ["ip", "netns", "exec", f"netemu-{run}-t0", "ping", "-c", "5", "-i", "0.05",
         f"172.16.0.{t1 + 1}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert " 0% packet loss" in ping.stdout, ping.stdout
    proc.kill()
    proc.wait()
    time.sleep(0.3)
    left = leftovers(run)
    assert any(n.startswith(f"netemu-{run}-") for n in left)  # kill -9 leaves namespaces
    # What it wrote until then is readable, and says the run did not complete.
    records = [json.loads(line) for line in Path(f"/tmp/{run}.jsonl").read_text().splitlines()]
    assert records[0]["complete"] is False and records[1]["epoch"] == 0
    assert not any(r.get("end") for r in records)
    # A new run with the same name refuses to start over them, and says how to clean.
    with pytest.raises(InputError, match=f"netemu clean --run {run}"):
        Emulation(train_topology(tmp_path), shaper="wire", run_name=run).start()
    result = subprocess.run(
        [sys.executable, "-m", "netemu.cli", "clean", "--run", run],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "removed namespace" in result.stdout
    assert leftovers(run) == []
    assert f"(kept) captures of run {run} in {caps / 'all.pcapng'}" in result.stdout
    assert not (caps / ".raw").exists()
    interfaces, records = pcapng.read(caps / "all.pcapng")
    names = [interfaces[r.interface].name for r in records]
    assert names.count("t0>t1 tx") >= 5 and names.count("t1>t0 rx") >= 5  # echo, reply
    # The events the run log had are there too.
    assert names.count("netemu events") == len(logged_events(f"/tmp/{run}.jsonl"))
    assert "netemu events" in [i.name for i in interfaces]


def test_two_runs_with_different_names_coexist(tmp_path):
    """Two users' runs of the same topology on one machine: separate namespaces, both work."""
    topo = train_topology(tmp_path)
    with (
        Emulation(topo, shaper="wire", run_name="tco1") as one,
        Emulation(topo, shaper="wire", run_name="tco2") as two,
    ):
        one.start_controller()
        two.start_controller()
        got_one = stream(one, "gs_south", "gs_north", count=50, interval=0.01)
        got_two = stream(two, "gs_south", "gs_north", count=50, interval=0.01)
        assert len(got_one) == len(got_two) == 50
    assert leftovers("tco1") == leftovers("tco2") == []


def test_link_budget_loss_is_what_the_shaper_applies(tmp_path):
    """A weak ISL transmitter (uncoded OOK) loses ~10% of packets: planned, then measured."""
    from netemu.model import physics
    from netemu.plan.planner import Planner

    # Photons per bit at 1 W over the t0-t1 ISL; then the power for a 10% PER.
    base = train_topology(tmp_path)
    first = next(Planner(base).run(duration_s=0, step_s=1))
    dist = float(first.up.distance_km[first.up.keys().index((0, 1))])
    one_watt = physics.Terminal(tx_power_w=1.0, divergence_urad=15, aperture_m=0.08)
    n_1w = physics.link_budget(one_watt, one_watt, dist, 2.5).photons_per_bit
    q = 4.3  # BER 8.5e-6: 1 - (1 - BER)^12000 ~ 10%
    power = float(38.4 * (q / 6) ** 2 / n_1w)
    topo = train_topology(
        tmp_path, f"link_defaults:\n  isl: {{tx_power_w: {power:.6g}, fec: false}}\n"
    )
    epoch = next(Planner(topo).run(duration_s=0, step_s=1))
    planned = float(epoch.budget["loss_ab"][epoch.up.keys().index((0, 1))])
    assert 0.05 < planned < 0.2
    count = 3000
    with Emulation(topo, shaper="wire", run_name="tbudget") as emu:
        emu.start_controller()
        assert emu.link("t0", "t1").shapes[0].loss == pytest.approx(planned)
        got = stream(emu, "t0", "t1", count=count, interval=0.001)
    loss = 1 - len({p["seq"] for p in got}) / count
    sigma = math.sqrt(planned * (1 - planned) / count)
    assert abs(loss - planned) <= 4.5 * sigma, f"measured {loss:.4f}, planned {planned:.4f}"


def test_the_run_log_reports_the_plans_shapes(tmp_path):
    """Epoch by epoch, each link's loss, fade share and jitter in the run log (what the
    shapers were given) are the plan's: configured loss and jitter, the link budget's
    loss and a degrade fault's, composed once (netemu.plan.shapes)."""
    from netemu.plan.planner import Planner, iso_utc

    topo = train_topology(tmp_path, """
link_defaults:
  isl: {loss_percent: 10, jitter_ms: 0.5}
faults:
  - {kind: degrade, target: t1-t2, at_s: 2, for_s: 3, loss_percent: 50, jitter_ms: 2}
""")  # fmt: skip
    log = tmp_path / "run.jsonl"
    with Emulation(topo, shaper="wire", run_name="tshapes", log_path=log, duration_s=7) as emu:
        emu.run()
    fields = ("loss", "fade_probability", "jitter_ms")
    planned = {
        iso_utc(epoch.time): {
            (x["a"], x["b"]): tuple(x[f] for f in fields)
            for x in epoch.to_json(topo)["links"] if x["up"]
        }
        for epoch in Planner(topo).run(duration_s=7, step_s=1)
    }  # fmt: skip
    applied: dict[tuple[str, str], tuple] = {}
    degraded = set()
    for record in map(json.loads, log.read_text().splitlines()):
        if "epoch" not in record:
            continue
        applied |= {(x["a"], x["b"]): tuple(x[f] for f in fields) for x in record["links"]}
        plan = planned[record["time"]]
        assert {k: applied[k] for k in plan} == plan, record["time"]
        degraded |= {record["time"] for k, v in plan.items() if k == ("t1", "t2") and v[2] == 2.5}
    assert len(degraded) == 3  # the fault's three epochs were among those compared


def test_a_broken_engine_stops_traffic_and_the_run(tmp_path):
    """Fail closed: an engine that dies (here: killed) stops traffic; the run says so."""
    from netemu.shaping import ShaperError

    topo = train_topology(tmp_path)
    with Emulation(topo, shaper="wire", run_name="tengine") as emu:
        emu.start_controller()
        dst = emu.address("t1")
        assert "1 received" in emu.host("t0").cmd(f"ping -c1 -W1 {dst}")
        emu.shaper.engine.process.kill()
        assert "0 received" in emu.host("t0").cmd(f"ping -c1 -W1 {dst}")
        with pytest.raises(ShaperError, match="engine exited"):
            emu.wait(3)
    assert leftovers("tengine") == []


def test_turbulence_fades_are_burst_loss(tmp_path):
    """Fades (30% of the time, 5 ms each) drop whole runs of packets, not single ones.

    Simulating the chain for this stream 2,000 times: the share lost was 0.25-0.35
    (standard deviation 0.015; the bound is 5 of them), runs of losses averaged
    4.8-7.0 packets (independent 30% loss would give 1.4)."""
    from netemu.shaping import Shape

    topo = train_topology(tmp_path)
    count, interval = 6000, 0.001
    with Emulation(topo, shaper="wire", run_name="tfade") as emu:
        link = emu.link("t0", "t1")
        t0_t1, base = link.forward, link.shapes[0]
        emu.shaper.apply(
            {t0_t1: Shape(base.delay_ms, base.rate_mbit, fade_probability=0.3, fade_ms=5.0)}
        )
        got = stream(emu, "t0", "t1", count=count, interval=interval)
    lost = np.ones(count, dtype=bool)
    lost[[p["seq"] for p in got]] = False
    assert abs(lost.mean() - 0.3) <= 0.075, lost.mean()
    edges = np.diff(np.r_[0, lost.astype(int), 0])
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert runs.mean() >= 4, runs.mean()


def _kernel_next_hops(emu, node: str) -> dict[str, str | None]:
    """Where node's kernel sends each other node's service address: the neighbour
    (from the interface name) or None (unreachable), one `ip route get` each."""
    others = [n for n in emu.names if n != node]
    lines = "".join(f"route get {emu.address(n)}\n" for n in others)
    ns = emu.netns[emu.names.index(node)]
    out = subprocess.run(
        ["ip", "-n", ns, "-force", "-batch", "-"], input=lines, capture_output=True, text=True
    )
    dev = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if "dev" in fields:
            dev[fields[0]] = fields[fields.index("dev") + 1].removeprefix("to-")
    # Unreachable routes answer on stderr ("No route to host"), one each.
    assert len(dev) + out.stderr.count("No route to host") == len(others), out.stderr
    return {n: dev.get(emu.address(n)) for n in others}


@pytest.mark.parametrize("background", [False, True], ids=["in-epoch", "background"])
def test_kernel_routes_follow_the_router_for_every_pair(write_topology, background):
    """A 4x10 +Grid shell: every node's aggregated kernel routes (checked with
    `ip route get`, i.e. the kernel's own longest-prefix match) send every other
    node's address to the next hop the router chose, also when trees refresh a
    few at a time; a rebooting satellite is unreachable from everywhere at once,
    and reachable again when its links are back; packets still cross the shell.
    Also when every update is sent by the background installer (as Starlink
    phase 1's handovers are): between updates the kernel has what was computed."""
    topo = load_topology(
        write_topology(
            """
            name: routes
            start: 2026-06-21T03:00:00Z
            satellites:
              - walker: {altitude_km: 550, inclination_deg: 53, planes: 4, per_plane: 10,
                         phasing: 1, raan_spread_deg: 60}
                names: "s{plane}_{slot}"
                terminals: {count: 4}
            link_defaults:
              isl: {data_rate_gbps: 1, max_range_km: 8000, acquisition_s: 0}
            isl: {policy: plus-grid}
            """
        )
    )
    name = "troutesbg" if background else "troutes"
    with Emulation(topo, shaper="wire", speed=20, run_name=name) as emu:
        emu.router.work_per_update = 2 * 80 * 3  # three trees an update, in turn
        if background:
            emu.routes.background_prefixes = 0
        emu.start_controller()
        emu.wait(3)
        with emu.between_updates():
            hops = emu.router.hops.copy()
            prefixes = len(emu.prefixes)
            kernel = {n: _kernel_next_hops(emu, n) for n in emu.names}
            # Every update so far is in the kernel, and says when it got there.
            in_force = emu.routes.in_force_ms
            assert len(in_force) == len(emu.updates) and min(in_force) >= 0, in_force
        n = len(emu.names)
        assert prefixes < n * (n - 1) / 2  # aggregated
        for i, src in enumerate(emu.names):
            for j, dst in enumerate(emu.names):
                if i != j:
                    want = None if hops[i, j] == UNREACHABLE else emu.names[hops[i, j]]
                    assert kernel[src][dst] == want, (src, dst)
        assert emu.router.refresh_updates > 10
        far = emu.route("s0_0", "s2_5")
        assert len(far) >= 4
        lost = far[2]
        emu.inject("reboot", lost, for_s=40)  # 2 s at speed 20
        assert emu.wait_until(lambda: emu.link_state(far[1], lost) == "down", timeout=10)
        with emu.between_updates():
            toward_lost = {n: _kernel_next_hops(emu, n)[lost] for n in emu.names if n != lost}
            assert all(v is None for v in toward_lost.values()), toward_lost
            assert lost not in emu.route("s0_0", "s2_5")
        # Back up: the unreachable routes give way to real ones again.
        assert emu.wait_until(lambda: emu.link_state(far[1], lost) == "up", timeout=10)
        with emu.between_updates():
            back = {n: _kernel_next_hops(emu, n)[lost] for n in emu.names if n != lost}
            want = {n: emu.route(n, lost)[1] for n in back}
        assert back == want
        rx = start_receiver(emu, "s2_5", duration=3)
        send(emu, "s0_0", "s2_5", count=50, interval=0.02).wait()
        assert len(received(rx)) >= 48
        assert (emu.routes.installer.sent > 10) is background


def test_an_epoch_behind_schedule_is_reported_not_hidden(tmp_path):
    """An update that overruns (here: one made to take 0.5 s with 0.2 s epochs)
    leaves a `late` event and counts late epochs; the run then catches up."""
    topo = train_topology(tmp_path)
    with Emulation(topo, shaper="wire", step_s=0.2, speed=10, run_name="tlate") as emu:
        apply = emu.shaper.apply
        slow = {"left": 1}

        def overrun(changes):
            if slow["left"] and emu.epoch_index >= 3:
                slow["left"] -= 1
                time.sleep(0.5)
            apply(changes)

        emu.shaper.apply = overrun
        emu.start_controller()
        emu.wait(2.5)
        late = [e for e in emu.events if e["type"] == "late"]
        assert emu.late_epochs >= 1 and late and late[0]["late_s"] > 0.1
        # Caught up: the epoch in force is the one the wall clock says.
        assert abs((emu.epoch_index + 1) * 0.2 - emu.status()["wall_s"]) < 0.3


def test_an_epoch_behind_schedule_leaves_its_routes_to_the_next_update(tmp_path):
    """Epochs made to run 0.1 s behind (0.2 s epochs) before their routes leave them to
    the next update, never two in a row: shaping keeps the schedule (no late epoch),
    the update after computes both epochs' changes, its lag counted from the epoch
    that waited, and between updates the kernel has the router's routes."""
    topo = train_topology(tmp_path)
    with Emulation(topo, shaper="wire", step_s=0.2, speed=10, run_name="tdefer") as emu:
        links = emu.builder.links

        def behind(*args, **kwargs):  # each epoch, after planning, before it is applied
            if 3 <= emu.epoch_index < 9:
                time.sleep(0.1)  # past routes_wait's 0.05 s, short of late (0.1 s)
            links(*args, **kwargs)

        emu.builder.links = behind
        emu.start_controller()
        assert emu.wait_until(lambda: emu.epoch_index >= 11, timeout=10)
        epochs = [u for u in emu.updates if u["refresh"] and 3 <= u["epoch"] < 11]
        deferred = [u["routes_deferred"] for u in epochs]
        assert deferred.count(True) >= 3
        assert sum(u["routes_deferred"] for u in emu.updates) == emu.routes_deferred
        assert not any(a and b for a, b in itertools.pairwise(deferred)), deferred
        assert all(u["route_changes"] == 0 for u in epochs if u["routes_deferred"])
        assert emu.late_epochs == 0
        # The update after a deferred epoch (one in_force_ms each one not deferred) is in
        # force no sooner than an epoch after the deferred one began.
        lags, waiting, sent = [], False, 0
        for u in list(emu.updates):
            if u["routes_deferred"]:
                waiting = True
                continue
            if waiting and sent < len(emu.routes.in_force_ms):
                lags.append(emu.routes.in_force_ms[sent])
            waiting, sent = False, sent + 1
        assert len(lags) >= 3 and min(lags) >= 150, lags
        with emu.between_updates():
            hops = emu.router.hops.copy()
            kernel = _kernel_next_hops(emu, emu.names[0])
        want = {
            n: None if hops[0, j] == UNREACHABLE else emu.names[hops[0, j]]
            for j, n in enumerate(emu.names) if j
        }  # fmt: skip
        assert kernel == want
