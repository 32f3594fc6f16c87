"""Machines simulated on one host: a network namespace each, joined by one bridge.

For tests and benchmarks of an emulation across machines on a single host. Each
simulated machine is a namespace ``netemu-<name>-machine.<k>`` whose ``eth0`` has
an address in 198.18.0.0/24 (RFC 2544's benchmarking range: no real network
uses it); their other ends are ports of one bridge in a namespace of its own,
``netemu-<name>-underlay.net``, which plays the machines' switch. A machine's
tunnels (:mod:`.tunnels`) send from its namespace as a real machine's send
from its own network, so the same code runs on both. Node names have no ``.``,
so these never collide with a run's nodes; deleting the namespaces removes
everything, and ``netemu clean`` finds them by the ``netemu-`` prefix.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from netemu.kernel import netns
from netemu.routes.addressing import NETNS_PREFIX

SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
#: The simulated network carries VXLAN's 50 bytes over 1,500-byte frames, as a
#: data-centre network with jumbo frames does.
MTU = 9000
#: Ray's session files of each simulated machine's node (its sockets must not be shared).
RAY_TEMP = Path("/tmp/netemu-ray")
#: Where the wire engine runs (engine.c); Ray's workers inherit their node's environment.
ENGINE_CPU = "NETEMU_ENGINE_CPU"
#: The share of its CPU an engine may spin (engine.c's SPIN_MAX_BUSY, the most).
SPIN_SHARE = "NETEMU_ENGINE_SPIN_SHARE"
SPIN_MAX_SHARE = 0.5


@dataclass(frozen=True)
class Machine:
    """A machine as its tunnels see it: a name, its address on the machines' network,
    and the namespace that network is in (``None``: the machine's own, a real one)."""

    name: str
    address: str
    netns: str | None = None


class SimulatedMachines:
    """``count`` machines on this host (see the module's docstring)."""

    def __init__(self, name: str, count: int) -> None:
        if not 1 <= count <= 250:
            raise ValueError(f"1 to 250 simulated machines, not {count}")
        self.name = name
        self.underlay = f"{NETNS_PREFIX}{name}-underlay.net"
        self.machines = [
            Machine(f"m{k}", str(SUBNET[k + 1]), f"{NETNS_PREFIX}{name}-machine.{k}")
            for k in range(count)
        ]

    def engine_env(self, k: int) -> dict[str, str]:
        """The environment for machine ``k``'s programs: its wire engine on a CPU of
        its own where the host has enough (the last for the first machine, and so on
        down), as each real machine's engine has one. Two engines at real-time
        priority on one CPU hold each other's releases back, and share its real-time
        budget: each spins toward due times at most its part of the half one may, or
        together they run the CPU into the kernel's RT throttling (tens of ms still)."""
        cpus = sorted(os.sched_getaffinity(0))
        slot = k % len(cpus)
        sharing = sum(1 for i in range(len(self.machines)) if i % len(cpus) == slot)
        return {
            **os.environ,
            ENGINE_CPU: str(cpus[-1 - slot]),
            SPIN_SHARE: f"{SPIN_MAX_SHARE / sharing:.3f}",
        }

    @property
    def namespaces(self) -> list[str]:
        return [self.underlay, *(m.netns for m in self.machines)]

    def make(self) -> None:
        """The namespaces, the bridge and each machine's link to it: a batch each."""
        netns.ip_batch([f"netns add {ns}" for ns in self.namespaces])
        try:
            netns.ip_batch(
                [
                    f"link add u{k} mtu {MTU} netns {self.underlay} type veth "
                    f"peer name eth0 mtu {MTU} netns {m.netns}"
                    for k, m in enumerate(self.machines)
                ]
            )
            ports = [f"link set u{k} master br0 up" for k in range(len(self.machines))]
            bridge = [f"link add br0 mtu {MTU} type bridge", *ports, "link set br0 up"]
            netns.ip_batch(bridge, self.underlay)
            for m in self.machines:
                netns.ip_batch(
                    [
                        f"address add {m.address}/{SUBNET.prefixlen} dev eth0",
                        "link set eth0 up",
                        "link set lo up",
                    ],
                    m.netns,
                )
        except BaseException:
            self.remove()
            raise

    def start_ray(self, cpus_each: int = 1) -> str:
        """A Ray node in each machine, the head in the first, each offering its
        machine's resource (:func:`netemu.cluster.agents.machine_resource`), as
        ``ray start`` on real machines does; returns the head's address. The nodes
        die with the machines' namespaces (:meth:`remove`)."""
        from netemu.cluster.agents import machine_resource

        ray = str(Path(sys.executable).with_name("ray"))
        head = f"{self.machines[0].address}:6379"
        for k, m in enumerate(self.machines):
            where = ["--head", "--port", "6379", "--include-dashboard=false"] if k == 0 else [
                "--address", head
            ]  # fmt: skip
            netns.run(
                [*enter(m), ray, "start", *where,
                 "--node-ip-address", m.address, "--num-cpus", str(cpus_each),
                 "--resources", json.dumps({machine_resource(m.name): 1}),
                 "--disable-usage-stats", "--temp-dir", str(RAY_TEMP / self.name / m.name)],
                env=self.engine_env(k),
            )  # fmt: skip
        return head

    def remove(self) -> None:
        """Delete the namespaces (what is in them, Ray's nodes too, goes with them)."""
        present = set(netns.namespaces(f"{NETNS_PREFIX}{self.name}-"))
        netns.delete([ns for ns in self.namespaces if ns in present])
        shutil.rmtree(RAY_TEMP / self.name, ignore_errors=True)
        with contextlib.suppress(OSError):  # another set's may still be there
            RAY_TEMP.rmdir()

    def __enter__(self) -> SimulatedMachines:
        self.make()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def enter(machine: Machine) -> list[str]:
    """The command prefix that runs a program in a simulated machine's network. Not
    ``ip netns exec``: that gives the program a mount namespace of its own, where the
    namespaces an agent makes (bind mounts under /run/netns) would stay unseen."""
    return ["nsenter", f"--net=/run/netns/{machine.netns}"] if machine.netns else []
