"""netemu's public API in one import, for scripts, scenarios, notebooks and benchmarks::

    from netemu.api import Emulation, Planner, load_topology

    topology = load_topology("topologies/kepler.yaml")
    for epoch in Planner(topology).run(duration_s=60):      # the plan: no root
        ...
    with Emulation(topology, speed=10) as emu:              # live: root
        emu.start_controller()
        print(emu.route("patrol1", "c2_bodo"))

Only names: each lives in the module that owns it (see docs/design.md).
"""

from netemu.cluster.emulation import ClusterEmulation
from netemu.errors import InputError
from netemu.live.emulation import Emulation
from netemu.live.linktable import LinkView
from netemu.live.run import Run
from netemu.live.signals import Stopped
from netemu.model.faults import Fault
from netemu.model.topology import Topology, load_topology
from netemu.plan.planner import EpochPlan, Planner
from netemu.testing.network import Network

__all__ = [
    "ClusterEmulation",
    "Emulation",
    "EpochPlan",
    "Fault",
    "InputError",
    "LinkView",
    "Network",
    "Planner",
    "Run",
    "Stopped",
    "Topology",
    "load_topology",
]
