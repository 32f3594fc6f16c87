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

from netemu.emulation import Emulation
from netemu.errors import InputError
from netemu.faults import Fault
from netemu.plan import EpochPlan, Planner
from netemu.signals import Stopped
from netemu.testing import Network
from netemu.topology import Topology, load_topology

__all__ = [
    "Emulation",
    "EpochPlan",
    "Fault",
    "InputError",
    "Network",
    "Planner",
    "Stopped",
    "Topology",
    "load_topology",
]
