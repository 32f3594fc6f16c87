"""One emulation over three simulated machines with Ray: agents, tunnels, a machine lost.

Each simulated machine (a namespace on the bridge underlay) runs a Ray node
offering its machine's resource; a driver in the head's machine places an agent
on each and makes a - b - c with a node per machine, so both links and every
route cross machine boundaries. The one-way delay a -> c is the sum of the two
links' (7 ms) within 0.5 ms; a machine whose processes are all killed (Ray node,
agent, engine) ends the run closed: the driver names it, the others are cleaned
up by their agents, and ``netemu clean`` removes what the lost one left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netemu.capture import pcapng
from netemu.cluster.agent import CAPTURE_SPOOL
from netemu.cluster.agents import ClockOffset, check_clocks
from netemu.cluster.underlay import SimulatedMachines, enter
from netemu.kernel import netns
from netemu.routes import addressing
from netemu.shaping.netem import netem_available

from helpers import leftovers, measured, needs_root, one_way_ms, run_netemu

ray = pytest.importorskip("ray", reason="Ray is not installed (scripts/provision installs it)")

RUN = "tclray"
SIM = "tclraym"
DRIVER = Path(__file__).with_name("cluster_driver.py")
RUN_DRIVER = Path(__file__).with_name("cluster_run_driver.py")
REPO = Path(__file__).parents[1]
KEPLER = REPO / "topologies" / "kepler.yaml"
SUITE = Path(__file__).with_name("cluster_suite.py")


@pytest.fixture(scope="module")
def machines():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    sim = SimulatedMachines(SIM, 3)
    try:
        sim.make()
        yield sim, sim.start_ray()
    finally:
        sim.remove()
        netns.delete(netns.namespaces(f"netemu-{RUN}"))  # every run of these tests


def start_driver(sim, address, *capture: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*enter(sim.machines[0]), sys.executable, str(DRIVER), RUN, SIM, address, *capture],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=DRIVER.parent,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + proc.stderr.read()
    return proc


def node_to_node_ms(src: int, dst: int, count: int = 200) -> list[float]:
    ns = [addressing.netns_name(RUN, n) for n in ("a", "b", "c")]
    return one_way_ms(ns[src], ns[dst], addressing.service_address(dst), count, 0.01)


def within_half_ms(delays: list[float], want: float) -> str | None:
    """Why ``delays`` miss ``want``: all 200 arrive, none early, 90% within 0.5 ms."""
    late = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - want) > 0.5]
    if len(delays) == 200 and min(delays) >= want - 0.05 and len(late) <= 0.10 * len(delays):
        return None
    return f"{len(delays)} arrived, min {min(delays, default=0):.3f} ms, outside 0.5 ms: {late}"


@needs_root
def test_a_route_across_three_machines_takes_the_sum_of_its_links_delays(machines):
    """Both ways, 90% of datagrams within 0.5 ms of the links' 7 ms and none early.
    Three engines, three agents and Ray on 2 cores: a stall of the host (this VM
    holds even an idle real-time task up to ~5-20 ms now and then) is counted by the
    engines as late releases, and such a sample is measured again, at most twice, as
    the pytest plugin's assertions do; a fresh VM also delays an engine's wake-up for
    a packet now and then, uncounted (after two retries 94.5% within 0.5 ms was seen,
    5 runs in a row, 2026-12-03)."""
    sim, address = machines
    driver = start_driver(sim, address)

    def ask(line: str) -> dict:
        driver.stdin.write(line + "\n")
        driver.stdin.flush()
        return json.loads(driver.stdout.readline())

    def late() -> int:
        return sum(s["late"] + s["overload"] for s in ask("check").values())

    def seven_ms(delays: list[float], _late: int) -> str | None:
        return within_half_ms(delays, 7.0)

    try:
        there, spoiled_there = measured(lambda: node_to_node_ms(0, 2), seven_ms, late)
        back, spoiled_back = measured(lambda: node_to_node_ms(2, 0), seven_ms, late)
        stats = ask("check")
        clocks = ask("clock")
    finally:
        out, err = driver.communicate(input="", timeout=120)
    assert driver.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"unreachable": []}
    assert sorted(stats) == ["m0", "m1", "m2"]
    assert there is None, f"a -> c: {there}; spoiled before: {spoiled_there}; {stats}"
    assert back is None, f"c -> a: {back}; spoiled before: {spoiled_back}; {stats}"
    assert netns.namespaces(f"netemu-{RUN}-") == [], "the agents left namespaces behind"
    # One host, one clock: each estimate is within its own uncertainty of zero.
    assert sorted(clocks) == ["m0", "m1", "m2"]
    for c in clocks.values():
        assert abs(c["offset_ms"]) <= c["uncertainty_ms"] < 5.0, clocks
    check_clocks({m: ClockOffset(**c) for m, c in clocks.items()}, bound_ms=10.0)


def held_to(delays: list[float], want: float) -> str | None:
    """Why one-way ``delays`` (ms) over many hops miss ``want``: all arrive, none
    early, 85% within 0.5 ms. On this 2-core VM even an idle real-time task is held
    up to ~5 ms now and then, three engines plus Ray share the two CPUs, and a fresh
    VM delays an engine's wake-up for a packet now and then (1-9 ms, uncounted):
    bursts of up to 16% of 200 datagrams held 5-20 ms were seen on a 9-hop path
    (docs/scaling.md); such a sample, when the engines counted it, is measured again."""
    late = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - want) > 0.5]
    if len(delays) == 200 and min(delays) >= want - 0.05 and len(late) <= 0.15 * len(delays):
        return None
    return f"{len(delays)} arrived, min {min(delays, default=0):.3f} ms, want {want:.3f}: {late}"


@needs_root
def test_kepler_split_over_three_machines_routes_and_reroutes_across_them(machines):
    """The kepler ring split by the partition (a ring cut into three arcs): a route
    through all three machines takes its geometric delay; a cut of a link between
    two machines reroutes the long way round, and the packets follow; the stop
    leaves nothing on any machine."""
    sim, address = machines
    run = f"{RUN}k"
    driver = subprocess.Popen(
        [*enter(sim.machines[0]), sys.executable, str(RUN_DRIVER), str(KEPLER), run, address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=DRIVER.parent,
    )  # fmt: skip

    def ask(line: str) -> dict:
        driver.stdin.write(line + "\n")
        driver.stdin.flush()
        return json.loads(driver.stdout.readline())

    def one_way(src: str, dst: str) -> list[float]:
        ns = addressing.netns_name(run, src), addressing.netns_name(run, dst)
        index = [n.removeprefix("kep") for n in (src, dst)]
        return one_way_ms(*ns, addressing.service_address(int(index[1])), 200, 0.01)

    def late() -> int:
        return sum(s["late"] + s["overload"] for s in ask("check").values())

    def held(src: str, dst: str, want: float) -> tuple[str | None, list[str]]:
        return measured(lambda: one_way(src, dst), lambda d, _: held_to(d, want), late)

    try:
        line = driver.stdout.readline()
        assert line.startswith('{"machine_of"'), line + driver.stderr.read()
        info = json.loads(line)
        assert sorted(set(info["machine_of"].values())) == ["m0", "m1", "m2"]
        across = {tuple(sorted(k)) for k in info["across"]}
        assert len(across) == 3, across  # the ring cut three times, nowhere else
        assert ("kep0", "kep9") in across, across
        route = ask("route kep0 kep5")
        assert route["machines"] == ["m0", "m1", "m2"], route
        there, spoiled_there = held("kep0", "kep5", route["delay_ms"])
        cut = ask("down kep0 kep9")
        assert cut["state"] == "down"
        assert cut["route"] == [f"kep{i}" for i in range(10)], cut
        around, spoiled_around = held("kep0", "kep9", cut["delay_ms"])
        stats = ask("check")
        seen = f"engines: {stats}"
        assert there is None, f"kep0 -> kep5: {there}; spoiled before: {spoiled_there}; {seen}"
        assert around is None, f"kep0 -> kep9: {around}; spoiled: {spoiled_around}; {seen}"
    finally:
        out, err = driver.communicate(input="", timeout=120)
    assert driver.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"unreachable": []}
    assert sorted(stats) == ["m0", "m1", "m2"]
    assert leftovers(run) == [], "the run left something on a machine"


@needs_root
def test_netemu_run_cluster_runs_kepler_over_the_machines_and_leaves_nothing(machines, tmp_path):
    """``netemu run --cluster`` from the head's machine: up over the three machines,
    five epochs at ten a second, done, nothing left anywhere."""
    sim, address = machines
    run = f"{RUN}c"
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "netemu.cli", "run", str(KEPLER),
         "--cluster", address, "--name", run, "--duration", "5", "--step", "0.1",
         "--speed", "10", "--log", str(tmp_path / "run.jsonl")],
        capture_output=True, text=True, timeout=300, cwd=DRIVER.parents[1],
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "up over 3 machines (nodes: m0 " in p.stderr, p.stderr
    assert "3 links across machines" in p.stderr, p.stderr
    assert re.search(r"done after \d+ epochs, .*; everything removed", p.stderr), p.stderr
    assert leftovers(run) == []
    # The driver's run log, as one machine's: the run, an update per epoch, the end.
    log = [json.loads(line) for line in Path(tmp_path / "run.jsonl").read_text().splitlines()]
    # auto: netem where every machine's kernel has it (then these tests run netem).
    shaper = "netem" if netem_available() else "wire"
    assert log[0]["run"] == run and log[0]["shaper"] == f"{shaper} on 3 machines", log[0]
    updates = [r for r in log[1:-1] if "epoch" in r]
    assert [r["epoch"] for r in updates][:3] == [0, 1, 2] and len(updates) >= 5, updates
    first = {(r["a"], r["b"]): r for r in updates[0]["links"]}  # every link made, first
    assert first[("kep0", "kep9")]["state"] == "up", first  # one across machines
    assert log[-1]["end"] and log[-1]["complete"], log[-1]


@needs_root
def test_a_pytest_suite_runs_over_the_cluster_as_on_one_machine(machines, tmp_path):
    """tests/cluster_suite.py with ``--netemu-cluster``, from the head's machine: a
    route and a handover across machines, delays checked against the geometry with
    the controller running; every emulation gone from every machine after it."""
    sim, address = machines
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         "-rA", "--netemu-cluster", address, "--netemu-name", f"{RUN}p",
         "--netemu-results", str(tmp_path / "res"), str(SUITE)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert "2 passed" in p.stdout, p.stdout[-3000:]
    print(*(line for line in p.stdout.splitlines() if "within 0.5 / 1 ms" in line), sep="\n")
    assert "over the Ray cluster at" in p.stdout  # the header says so
    assert leftovers(f"{RUN}p", prefix=True) == [], "the suite left emulations behind"


def kepler_up(sim, address: str, run: str, *options: str) -> tuple[subprocess.Popen, list]:
    """``netemu run`` of kepler over the machines, from the head's machine, in a session
    of its own (epochs of 0.1 s at speed 10), once it says it is up: the process and
    what it printed so far."""
    proc = subprocess.Popen(
        [*enter(sim.machines[0]), sys.executable, "-m", "netemu.cli", "run", str(KEPLER),
         "--cluster", address, "--name", run, "--step", "0.1", "--speed", "10", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "up over 3 machines" in line:
            break
    assert proc.poll() is None, "".join(seen)
    return proc, seen


def captured_hops(path: Path) -> dict:
    from netemu.capture import analysis

    return analysis.hops(analysis.load([path]))


@needs_root
def test_netemu_run_cluster_captures_a_link_across_machines_on_one_timeline(machines, tmp_path):
    """``--capture link:kep0-kep9`` (kep0 on m0, kep9 on m2): each machine taps its own
    node's end, the driver writes one pcapng; every probe datagram is in it with its
    latency on the hop, the tx stamp from one machine and the rx stamp from the other,
    as the probe measured it end to end (one host, one clock); nothing is left."""
    sim, address = machines
    run = f"{RUN}t"
    proc, seen = kepler_up(
        sim, address, run, "--capture", "link:kep0-kep9", "--capture-dir", str(tmp_path)
    )
    kep0, kep9 = (addressing.netns_name(run, n) for n in ("kep0", "kep9"))
    delays = one_way_ms(kep0, kep9, addressing.service_address(9), 100, 0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = "".join(seen) + err
    assert proc.returncode == 128 + signal.SIGINT, err
    assert f"netemu: capture {tmp_path / 'link-kep0-kep9.pcapng'}" in err, err
    hops = captured_hops(tmp_path / "link-kep0-kep9.pcapng")
    hop = hops[("kep0", "kep9")]
    assert len(delays) == 100 and hop.arrived >= 100 and hop.lost == 0, (hop, len(delays))
    # The probe's own stamps are the kernel's at the same two points, about.
    gap = statistics.median(hop.latencies_ms) - statistics.median(delays)
    assert abs(gap) < 0.2, (gap, sorted(hop.latencies_ms)[:5], sorted(delays)[:5])
    assert leftovers(run) == []


@needs_root
def test_a_pytest_suite_over_the_cluster_keeps_its_captures(machines, tmp_path):
    """A marker's captures over the cluster, kept with the test's artifacts."""
    sim, address = machines
    (tmp_path / "test_capture.py").write_text(
        "import pytest\n\n"
        f"@pytest.mark.netemu({str(KEPLER)!r}, capture=['link:kep0-kep9'])\n"
        "def test_it(network):\n"
        "    assert network.one_way_delay('kep0', 'kep9', count=50, interval_s=0.01).received"
        " == 50\n"
    )
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         "-q", "--netemu-cluster", address, "--netemu-name", f"{RUN}q", "--netemu-keep",
         "--netemu-results", str(tmp_path / "res"), str(tmp_path / "test_capture.py")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    (path,) = (tmp_path / "res").rglob("link-kep0-kep9.pcapng")
    hop = captured_hops(path)[("kep0", "kep9")]
    assert hop.arrived >= 50 and hop.lost == 0, hop
    assert leftovers(f"{RUN}q", prefix=True) == []


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_netemu_run_cluster_stopped_by_a_signal_to_its_group_leaves_nothing(machines, sig):
    """As a terminal's Ctrl-C, ``kill -- -PGID`` or a closed terminal deliver it, to
    the driver's whole process group while the run is up over the three machines:
    torn down on every machine, one line, 128 + signal."""
    sim, address = machines
    run = f"{RUN}s{int(sig)}"
    proc, seen = kepler_up(sim, address, run)
    assert leftovers(run), "the run is up"
    time.sleep(1.0)  # a few epochs applied
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    err = "".join(seen) + err
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {sig.name} after" in err and "everything removed" in err, err
    assert "Traceback" not in err, err
    assert leftovers(run) == []


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_pytest_suite_over_the_cluster_stopped_by_a_signal_leaves_nothing(
    machines, tmp_path, sig
):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it), SIGTERM or SIGHUP
    (a closed terminal) while a test's emulation is up over the three machines: pytest
    stops as interrupted and the emulation is gone from every machine (Ray's own
    SIGTERM handler, which would kill the driver at once, is replaced by the run's)."""
    sim, address = machines
    name = f"{RUN}i{int(sig)}"
    up = tmp_path / "up"
    (tmp_path / "test_waits.py").write_text(
        "import pathlib, time\nimport pytest\n\n"
        f"@pytest.mark.netemu({str(KEPLER)!r})\n"
        f"def test_waits(network):\n    pathlib.Path({str(up)!r}).touch()\n    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [*enter(sim.machines[0]), sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         "-q", "--netemu-cluster", address, "--netemu-name", name,
         "--netemu-results", str(tmp_path / "res"), str(tmp_path / "test_waits.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not up.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert up.exists() and leftovers(name, prefix=True), "the emulation is up"
        time.sleep(1.0)  # a few epochs applied, the test waiting
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:] + err[-2000:]
    assert leftovers(name, prefix=True) == [], out[-3000:] + err[-2000:]


@needs_root
@pytest.mark.skipif(netem_available(), reason="every simulated machine's kernel has netem here")
def test_netemu_run_cluster_with_netem_where_a_machine_lacks_it_fails_in_one_line(machines):
    """The shaper is one for all machines (their tunnels' ends must match): netem asked
    where a machine's kernel has none ends the run before anything is made there."""
    sim, address = machines
    run = f"{RUN}n"
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "netemu.cli", "run", str(KEPLER),
         "--cluster", address, "--name", run, "--duration", "1", "--shaper", "netem"],
        capture_output=True, text=True, timeout=300, cwd=DRIVER.parents[1],
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == (
        f"netemu: run {run} failed: --shaper netem: the kernel of m0, m1, m2 has no sch_netem "
        "(use --shaper wire or auto, or a kernel with netem on every machine); "
        "everything removed"
    ), p.stderr
    assert "Traceback" not in p.stderr
    assert leftovers(run) == []


@needs_root
@pytest.mark.parametrize("kind", ["pingall", "iperf"])
def test_netemu_run_cluster_test_checks_the_network_across_the_machines(machines, kind):
    """``--test`` as ``mn --test``, over the machines: pingall pings every pair from
    its node's machine (each answers exactly when the routes connect it), iperf runs
    TCP between the first and last connected nodes; exit 0, nothing left."""
    sim, address = machines
    run = f"{RUN}x"
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "netemu.cli", "run", str(KEPLER),
         "--cluster", address, "--name", run, "--test", kind],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    if kind == "pingall":  # svalbard has no link at kepler's start: its pairs stay silent
        assert "every ping as the routes say" in p.stderr, p.stderr
    else:
        assert re.search(r"\*\*\* Results: \w+ -> \w+: [\d.]+ Mbits/sec", p.stderr), p.stderr
    assert leftovers(run) == []


def test_netemu_run_cluster_refuses_what_it_cannot_do_yet_in_one_line():
    p = run_netemu("run", KEPLER, "--cluster", "auto", "--cli")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip() == "netemu: --cli does not run over a cluster yet (docs/scaling.md)"
    assert "Traceback" not in p.stderr


@needs_root
def test_a_driver_killed_takes_its_agents_with_it_and_clean_removes_the_rest(machines):
    """kill -9 of the driver (node a captured): Ray ends the actors it owned (their
    engines die with them; a's recorders are left, as on one machine), and ``netemu
    clean`` removes what they made on every machine and keeps what a's machine
    recorded, as one pcapng."""
    sim, address = machines
    driver = start_driver(sim, address, "a")
    assert netns.run_pids(RUN), "the agents' engines carry the run's NETEMU_RUN"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)

    def not_recorders() -> list[int]:
        return [p for p in netns.run_pids(RUN) if b"tcpdump" not in _cmdline(p)]

    deadline = time.monotonic() + 60
    while not_recorders() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not_recorders() == [], "agents or engines outlived their driver"
    assert len(netns.namespaces(f"netemu-{RUN}-")) == 6  # 3 nodes, 3 tunnel namespaces
    p = run_netemu("clean", "--run", RUN)
    kept = CAPTURE_SPOOL / f"{RUN}@m0" / "all.pcapng"
    assert f"removed (kept) captures of run {RUN} in {kept}" in p.stdout, p.stdout + p.stderr
    found, records = pcapng.read(kept)
    list(records)  # the interfaces come with the records
    interfaces = {i.name for i in found}
    assert {"a>b tx", "b>a rx"} <= interfaces, interfaces
    shutil.rmtree(kept.parent)
    assert leftovers(RUN) == []


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


@needs_root
def test_a_lost_machine_ends_the_run_closed_and_clean_removes_what_it_left(machines):
    sim, address = machines
    driver = start_driver(sim, address)
    lost = sim.machines[2]
    netns.kill_processes([lost.netns])  # its Ray node, its agent, its engine: the machine is gone
    try:
        driver.stdin.write("check\n")
        driver.stdin.flush()
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1, out + err
    assert "machine m2 lost" in err, err
    assert json.loads(out.splitlines()[-1]) == {"unreachable": ["m2"]}
    # What the agents on m0 and m1 made is gone; m2's node and tunnels are what is left.
    assert netns.namespaces(f"netemu-{RUN}-") == [
        f"netemu-{RUN}-c", f"netemu-{RUN}-tunnels.{lost.name}"
    ]  # fmt: skip
    removed = netns.clean(RUN)
    assert f"namespace netemu-{RUN}-c" in removed
    assert netns.namespaces(f"netemu-{RUN}-") == []
