"""A driver for tests/test_cluster_ray.py: nodes a - b - c on machines m0, m1, m2.

Run inside the first simulated machine (the Ray head's): it places an agent on
each machine, makes the chain (both links cross a machine boundary), shapes and
routes it, says ``ready``, then answers each ``check`` line from stdin with every
machine's stats and each ``clock`` line with their clocks' offsets until EOF, and
stops every agent. A lost machine: one line on stderr naming it, the others
stopped, exit status 1.

    python tests/cluster_driver.py RUN SIM ADDRESS [NODE]

With NODE, that node is captured (its machine's agent taps its links). With
ADDRESS ``here`` the agents run in this process without Ray (``agents_here``, as
the QEMU lane drives them: Ray under its software CPU would take minutes), netem
shaping, and the driver says ``ready`` and waits for EOF.
"""

from __future__ import annotations

import json
import sys

from netemu.capture.taps import CapturePoint
from netemu.cluster.agent import LinkEnd, MachineAgent
from netemu.cluster.agents import Agents, MachineLost
from netemu.cluster.underlay import Machine, SimulatedMachines
from netemu.shaping import Shape

NAMES = ["a", "b", "c"]
DELAYS_MS = {(0, 1): 3.0, (1, 2): 4.0}


def chain(where: list[Machine]) -> tuple[dict, dict, dict]:
    """What each machine's agent is told for the chain (node i on ``where[i]``): its
    link ends, its nodes' shapes and routes, by machine name."""
    ends: dict[str, list[LinkEnd]] = {m.name: [] for m in where}
    shapes: dict[str, dict] = {m.name: {} for m in where}
    for number, ((a, b), delay) in enumerate(DELAYS_MS.items()):
        for node, peer in ((a, b), (b, a)):
            ends[where[node].name].append(
                LinkEnd(number, node, peer, NAMES[peer], 1000.0, where[peer])
            )
            shapes[where[node].name][(node, peer)] = Shape(delay, 1000.0)
    hops = {0: [(1, 1), (2, 1)], 1: [(0, 0), (2, 2)], 2: [(0, 1), (1, 1)]}
    routes = {m.name: {i: hops[i]} for i, m in enumerate(where)}
    return ends, shapes, routes


def agents_here(run: str, where: list[Machine], shaper: str) -> list[MachineAgent]:
    """The chain made by three machines' agents in this process (node i on ``where[i]``),
    each started with ``shaper``; on a failure those started are stopped."""
    agents = [MachineAgent(run, m, {i: NAMES[i]}) for i, m in enumerate(where)]
    try:
        for agent in agents:
            agent.start(shaper)
        ends, shapes, routes = chain(where)
        for agent in agents:
            agent.make_links(ends[agent.machine.name])
        for agent in agents:
            agent.shape(shapes[agent.machine.name])
            agent.routes(routes[agent.machine.name])
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return agents


def main(run: str, sim_name: str, address: str, capture: str = "") -> int:
    where = SimulatedMachines(sim_name, 3).machines  # node i on machine i
    if address == "here":
        agents = agents_here(run, where, "netem")
        try:
            print("ready", flush=True)
            sys.stdin.read()
        finally:
            for agent in agents:
                agent.stop()
        return 0
    agents = Agents(run, where, {m.name: {i: NAMES[i]} for i, m in enumerate(where)}, address)
    try:
        agents.call("start")
        if capture:  # a node's taps, on its machine
            points = ([CapturePoint((capture,))],)
            agents.call("capture", {m.name: points for m in where})
        ends, shapes, routes = chain(where)
        agents.call("make_links", {m: (e,) for m, e in ends.items()})
        agents.call("shape", {m: (s,) for m, s in shapes.items()})
        agents.call("routes", {m: (r,) for m, r in routes.items()})
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "check":
                print(json.dumps(agents.call("check")), flush=True)
            elif line.strip() == "clock":
                offsets = {m: vars(o) for m, o in agents.clock_offsets().items()}
                print(json.dumps(offsets), flush=True)
    except MachineLost as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:  # however the driver ends, every machine still reachable is cleaned
        print(json.dumps({"unreachable": agents.stop()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
