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

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netemu.cluster.agents import ClockOffset, check_clocks
from netemu.cluster.underlay import SimulatedMachines, enter
from netemu.kernel import netns
from netemu.routes import addressing

from helpers import leftovers, needs_root, one_way_ms, run_netemu

ray = pytest.importorskip("ray", reason="Ray is not installed (scripts/provision installs it)")

RUN = "tclray"
SIM = "tclraym"
DRIVER = Path(__file__).with_name("cluster_driver.py")
RUN_DRIVER = Path(__file__).with_name("cluster_run_driver.py")
KEPLER = Path(__file__).parents[1] / "topologies" / "kepler.yaml"


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
        netns.delete(netns.namespaces(f"netemu-{RUN}-"))
        netns.delete(netns.namespaces(f"netemu-{RUN}k-"))
        netns.delete(netns.namespaces(f"netemu-{RUN}c-"))


def start_driver(sim, address) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*enter(sim.machines[0]), sys.executable, str(DRIVER), RUN, SIM, address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=DRIVER.parent,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + proc.stderr.read()
    return proc


def node_to_node_ms(src: int, dst: int, count: int = 200) -> list[float]:
    ns = [addressing.netns_name(RUN, n) for n in ("a", "b", "c")]
    return one_way_ms(ns[src], ns[dst], addressing.service_address(dst), count, 0.01)


@needs_root
def test_a_route_across_three_machines_takes_the_sum_of_its_links_delays(machines):
    sim, address = machines
    driver = start_driver(sim, address)
    try:
        delays = node_to_node_ms(0, 2)
        back = node_to_node_ms(2, 0)
        driver.stdin.write("check\nclock\n")
        driver.stdin.flush()
        stats = json.loads(driver.stdout.readline())
        clocks = json.loads(driver.stdout.readline())
    finally:
        out, err = driver.communicate(input="", timeout=120)
    assert driver.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"unreachable": []}
    assert sorted(stats) == ["m0", "m1", "m2"]
    assert len(delays) == 200 and len(back) == 200
    late = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - 7.0) > 0.5]
    seen = f"a -> c: min {min(delays):.3f} ms, outside 0.5 ms (index, ms): {late}; {stats}"
    assert min(delays) >= 7.0 - 0.05, seen
    assert sum(abs(d - 7.0) <= 0.5 for d in delays) >= 0.99 * len(delays), seen
    # The bound a run holds packets to: 99% within 0.5 ms (one engine release in a
    # hundred may be held back on 2 cores shared by three engines and Ray).
    assert min(back) >= 7.0 - 0.05, back
    assert sum(abs(d - 7.0) <= 0.5 for d in back) >= 0.99 * len(back), back
    assert netns.namespaces(f"netemu-{RUN}-") == [], "the agents left namespaces behind"
    # One host, one clock: each estimate is within its own uncertainty of zero.
    assert sorted(clocks) == ["m0", "m1", "m2"]
    for c in clocks.values():
        assert abs(c["offset_ms"]) <= c["uncertainty_ms"] < 5.0, clocks
    check_clocks({m: ClockOffset(**c) for m, c in clocks.items()}, bound_ms=10.0)


def held_to(delays: list[float], want: float, engines_late: int) -> str | None:
    """Why one-way ``delays`` (ms) over many hops miss ``want``: all arrive, none
    early, 85% within 0.5 ms, and any more than 1 ms late counted late by the
    engines. On this 2-core VM even an idle real-time task is held up to ~5 ms
    now and then, and three engines plus Ray share the two CPUs: bursts of up to
    12% of 200 datagrams held 5-20 ms were seen on a 9-hop path (docs/scaling.md);
    the engines report each such release."""
    late = [(i, round(d, 2)) for i, d in enumerate(delays) if abs(d - want) > 0.5]
    if (
        len(delays) == 200
        and min(delays) >= want - 0.05
        and len(late) <= 0.15 * len(delays)
        and (engines_late > 0 or all(d <= want + 1.0 for d in delays))
    ):
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
        there = one_way("kep0", "kep5")
        cut = ask("down kep0 kep9")
        assert cut["state"] == "down"
        assert cut["route"] == [f"kep{i}" for i in range(10)], cut
        around = one_way("kep0", "kep9")
        stats = ask("check")
        engines = {m: (s["late"], s["worst_late_ms"]) for m, s in stats.items()}
        late = sum(s["late"] for s in stats.values())
        seen = f"engines' (late, worst ms): {engines}"
        assert (why := held_to(there, route["delay_ms"], late)) is None, f"{why}; {seen}"
        assert (why := held_to(around, cut["delay_ms"], late)) is None, f"{why}; {seen}"
    finally:
        out, err = driver.communicate(input="", timeout=120)
    assert driver.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"unreachable": []}
    assert sorted(stats) == ["m0", "m1", "m2"]
    assert leftovers(run) == [], "the run left something on a machine"


@needs_root
def test_netemu_run_cluster_runs_kepler_over_the_machines_and_leaves_nothing(machines):
    """``netemu run --cluster`` from the head's machine: up over the three machines,
    five epochs at ten a second, done, nothing left anywhere."""
    sim, address = machines
    run = f"{RUN}c"
    p = subprocess.run(
        [*enter(sim.machines[0]), sys.executable, "-m", "netemu.cli", "run", str(KEPLER),
         "--cluster", address, "--name", run, "--duration", "5", "--step", "0.1",
         "--speed", "10"],
        capture_output=True, text=True, timeout=300, cwd=DRIVER.parents[1],
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "up over 3 machines (nodes: m0 " in p.stderr, p.stderr
    assert "3 links across machines" in p.stderr, p.stderr
    assert re.search(r"done after \d+ epochs, .*; everything removed", p.stderr), p.stderr
    assert leftovers(run) == []


def test_netemu_run_cluster_refuses_what_it_cannot_do_yet_in_one_line():
    p = run_netemu("run", KEPLER, "--cluster", "auto", "--cli")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip() == "netemu: --cli does not run over a cluster yet (docs/scaling.md)"
    assert "Traceback" not in p.stderr


@needs_root
def test_a_driver_killed_takes_its_agents_with_it_and_clean_removes_the_rest(machines):
    """kill -9 of the driver: Ray ends the actors it owned (their engines die with
    them), and ``netemu clean`` removes the namespaces they made on every machine."""
    sim, address = machines
    driver = start_driver(sim, address)
    assert netns.run_pids(RUN), "the agents' engines carry the run's NETEMU_RUN"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)
    deadline = time.monotonic() + 60
    while netns.run_pids(RUN) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert netns.run_pids(RUN) == [], "agents or engines outlived their driver"
    assert len(netns.namespaces(f"netemu-{RUN}-")) == 6  # 3 nodes, 3 tunnel namespaces
    netns.clean(RUN)
    assert leftovers(RUN) == []


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
