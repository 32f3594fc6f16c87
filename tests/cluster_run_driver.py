"""A driver for tests/test_cluster_ray.py: a topology's emulation over the cluster.

Run inside the first simulated machine (the Ray head's): it starts a
:class:`netemu.cluster.emulation.ClusterEmulation` of the topology (no controller:
the first epoch stays in force, as in tests/test_wire.py), prints one JSON line
(each node's machine, the links across machines, the clocks' offsets), then
answers each line from stdin until EOF:

- ``route SRC DST``: the current path, its delay and the machines it crosses;
- ``down A B``: the link A - B taken down by a fault, from the next epoch, which
  it applies; the link's state and the new path A -> B;
- ``check``: every machine's engine counters.

On EOF it stops the emulation and prints ``{"unreachable": [...]}``.

    python tests/cluster_run_driver.py TOPOLOGY RUN ADDRESS
"""

from __future__ import annotations

import json
import sys

from netemu.cluster.emulation import ClusterEmulation
from netemu.model.topology import load_topology


def main(topology: str, run: str, address: str) -> int:
    emu = ClusterEmulation(load_topology(topology), address, run_name=run)
    try:
        emu.start()
        print(json.dumps({
            "machine_of": {n: emu.machine_of(n) for n in emu.names},
            "across": emu.links_across(),
            "clocks": {m: vars(o) for m, o in emu.clock_offsets.items()},
            "timings": emu.timings,
        }), flush=True)  # fmt: skip
        for line in sys.stdin:
            word, *args = line.split()
            if word == "route":
                nodes = emu.route(*args)
                print(json.dumps({
                    "route": nodes, "delay_ms": emu.path_delay_ms(*args),
                    "machines": sorted({emu.machine_of(n) for n in nodes or []}),
                }), flush=True)  # fmt: skip
            elif word == "down":
                emu.inject("cut", "-".join(args))
                emu._advance()  # the controller's step, here on demand
                print(json.dumps({
                    "state": emu.link_state(*args), "route": emu.route(*args),
                    "delay_ms": emu.path_delay_ms(*args),
                }), flush=True)  # fmt: skip
            elif word == "check":
                print(json.dumps(emu.stats()), flush=True)
    finally:  # however the driver ends, every machine still reachable is cleaned
        print(json.dumps({"unreachable": emu.stop()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
