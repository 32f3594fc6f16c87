"""The driver's side of a run over several machines: one agent per machine, as Ray actors.

Ray (an existing engine, not a home-made one) places each machine's
:class:`.agent.MachineAgent` on that machine: every Ray node of a netemu cluster
offers a custom resource named for its machine (:func:`machine_resource`,
``ray start --resources '{"netemu_machine_m1": 1}'``), and an agent asks for it.
Ray ships the code, carries the calls and their NumPy arrays, and reports a lost
actor or node; it carries no packet (the links are VXLAN tunnels, :mod:`.tunnels`).

Fail closed: a call that fails or does not answer within :data:`CALL_TIMEOUT_S`
(a machine lost: Ray has not declared its node dead yet) raises
:class:`MachineLost` naming the machine, and :meth:`Agents.stop` then removes
everything on every machine still reachable. On the lost machine ``netemu clean``
removes what its agent made (namespaces named for the run, as on one machine).

Ray has no authentication: its ports must be on a private control network
(docs/scaling.md, deployment).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netemu.cluster.agent import MachineAgent
from netemu.cluster.underlay import Machine
from netemu.errors import InputError

#: A call an agent does not answer in this long: its machine is taken as lost.
CALL_TIMEOUT_S = 30.0
#: The same for calls whose work grows with the machine's share of the topology
#: (making its namespaces and links: ~20 s for a third of Starlink's shell 1 with
#: three simulated machines on 2 cores). A machine lost meanwhile is still told
#: sooner: Ray declares its node dead after its health checks fail.
BRING_UP_TIMEOUT_S = 600.0
#: How long stopping waits for each agent still reachable.
STOP_TIMEOUT_S = 30.0


#: Clock readings per machine for its offset (the one with the shortest round trip counts).
CLOCK_SAMPLES = 20


@dataclass(frozen=True)
class ClockOffset:
    """A machine's clock against the driver's: ``offset_ms`` (theirs minus ours), known
    within ``uncertainty_ms`` (half the shortest round trip of the readings)."""

    offset_ms: float
    uncertainty_ms: float

    def within(self, bound_ms: float) -> bool:
        """Whether the offset is surely within ``bound_ms`` (uncertainty included)."""
        return abs(self.offset_ms) + self.uncertainty_ms <= bound_ms

    def beyond(self, bound_ms: float) -> bool:
        """Whether the offset is surely beyond ``bound_ms`` (uncertainty included)."""
        return abs(self.offset_ms) - self.uncertainty_ms > bound_ms


def clock_offset(readings: list[tuple[int, int, int]]) -> ClockOffset:
    """The offset from (sent, remote clock, received) readings, ns: as NTP does, the
    remote reading is taken to be halfway through the shortest round trip."""
    sent, remote, received = min(readings, key=lambda r: r[2] - r[0])
    return ClockOffset((remote - (sent + received) / 2) / 1e6, (received - sent) / 2e6)


#: How far the machines' clocks may disagree by default: a tenth of the 0.5 ms to
#: which one-way delays are held (PTP keeps a LAN within microseconds, chrony with
#: hardware stamps within tens of them).
CLOCK_BOUND_MS = 0.05


class ClockError(RuntimeError):
    """The machines' clocks disagree more than a run allows: one-way delays measured
    across them would be off by as much."""


def check_clocks(
    offsets: Mapping[str, ClockOffset], bound_ms: float = CLOCK_BOUND_MS, sure: bool = True
) -> None:
    """Raise :class:`ClockError` naming the machines whose clocks are not surely
    within ``bound_ms`` of the driver's (uncertainty included); with ``sure=False``
    only those surely beyond it (a driver's round trips to its agents, a fraction of a
    millisecond over Ray, cannot certify clocks closer than that: PTP's own figures do)."""
    off = {
        m: o for m, o in offsets.items() if (not o.within(bound_ms) if sure else o.beyond(bound_ms))
    }
    if off:
        told = ", ".join(
            f"{m} {o.offset_ms:+.3f} ms (within {o.uncertainty_ms:.3f})" for m, o in off.items()
        )
        raise ClockError(
            f"clocks off by more than {bound_ms} ms from this machine's: {told}; "
            "synchronise the machines (PTP, or chrony with hardware stamps)"
        )


class MachineLost(RuntimeError):
    """A machine's agent (or the whole machine) stopped answering: the run ends."""

    def __init__(self, machine: str, why: str) -> None:
        super().__init__(f"machine {machine} lost: {why}")
        self.machine = machine


#: The prefix of the Ray custom resource that makes a Ray node a netemu machine.
MACHINE_RESOURCE = "netemu_machine_"


def machine_resource(machine: str) -> str:
    """The Ray custom resource a netemu machine's node offers."""
    return f"{MACHINE_RESOURCE}{machine}"


def connect(address: str | None) -> bool:
    """This process connected to the Ray cluster at ``address`` (None: ``RAY_ADDRESS``
    or the one already connected); whether it connected now (then it disconnects at
    the end). Refused with one line when no cluster answers there."""
    import ray  # only runs across machines need it

    if ray.is_initialized():
        return False
    # Ray's core installs its own SIGTERM handler (it kills the process at once):
    # the run's handlers (a signal stops the run and everything is removed) come back.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {sig: signal.getsignal(sig) for sig in stops}
    try:
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(
            f"--cluster {address or 'auto'}: no Ray cluster answers there ({exc}); start "
            "one with 'ray start --head' on the first machine (docs/scaling.md)"
        ) from None
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return True


def cluster_machines(address: str | None) -> list[Machine]:
    """The netemu machines of the Ray cluster this process is connected to (at
    ``address``, for messages): its live nodes that offer a :func:`machine_resource`,
    each with the address Ray knows it by (the machines' network, where their tunnels
    meet), in name order."""
    import ray

    found = [
        Machine(r.removeprefix(MACHINE_RESOURCE), node["NodeManagerAddress"])
        for node in ray.nodes()
        if node.get("Alive")
        for r in node.get("Resources", {})
        if r.startswith(MACHINE_RESOURCE)
    ]
    if not found:
        raise InputError(
            f"--cluster {address or 'auto'}: no Ray node offers a netemu machine resource; "
            "start each machine's node with ray start --resources "
            "'{\"netemu_machine_<name>\": 1}' (docs/scaling.md)"
        )
    return sorted(found, key=lambda m: m.name)


class Agents:
    """An agent on each of ``machines`` for run ``run_name``; ``nodes``: the
    topology's indices and names on each machine, by machine name."""

    def __init__(
        self,
        run_name: str,
        machines: list[Machine],
        nodes: Mapping[str, dict[int, str]],
        address: str | None = None,
    ) -> None:
        import ray  # only runs across machines need it

        self._ray = ray
        #: Whether this driver connected to the cluster (and disconnects at stop).
        self.connected = connect(address)
        remote = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(MachineAgent)
        self.machines = {m.name: m for m in machines}
        self.handles = {
            m.name: remote.options(resources={machine_resource(m.name): 0.01}).remote(
                run_name, m, nodes[m.name]
            )
            for m in machines
        }
        self.lost: set[str] = set()

    def call(
        self,
        method: str,
        args: Mapping[str, tuple] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        """``method`` on every agent at once (``args`` per machine; none: no arguments;
        a machine missing from ``args`` is skipped); their answers by machine."""
        ray = self._ray
        todo = self.handles if args is None else {m: self.handles[m] for m in args}
        refs = {m: getattr(h, method).remote(*(args or {}).get(m, ())) for m, h in todo.items()}
        out = {}
        for m, ref in refs.items():
            try:
                out[m] = ray.get(ref, timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                self.lost.add(m)
                raise MachineLost(m, f"no answer to {method} in {timeout_s:.0f} s") from None
            except ray.exceptions.RayActorError as exc:
                self.lost.add(m)
                raise MachineLost(m, f"its agent died ({type(exc).__name__})") from None
            except ray.exceptions.RayTaskError as exc:  # the agent raised: still reachable
                raise RuntimeError(f"machine {m}: {exc.cause}") from None
        return out

    def clock_offsets(self, samples: int = CLOCK_SAMPLES) -> dict[str, ClockOffset]:
        """Each machine's clock against this one's. One-way delays across machines are
        only as good as the machines' clocks agree (PTP or chrony keep them within
        microseconds on a LAN); a run reports these and may refuse beyond a bound."""
        readings: dict[str, list[tuple[int, int, int]]] = {m: [] for m in self.handles}
        for _ in range(samples):
            for m in self.handles:
                sent = time.time_ns()
                remote = self.call("clock_ns", {m: ()})[m]
                readings[m].append((sent, remote, time.time_ns()))
        return {m: clock_offset(r) for m, r in readings.items()}

    def stop(self) -> list[str]:
        """Remove everything on every machine still reachable; the machines that were not."""
        ray = self._ray
        refs = {m: h.stop.remote() for m, h in self.handles.items() if m not in self.lost}
        unreachable = sorted(self.lost)
        for m, ref in refs.items():
            try:
                ray.get(ref, timeout=STOP_TIMEOUT_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                unreachable.append(m)
            except ray.exceptions.RayTaskError:  # its own clean-up failed part-way
                unreachable.append(m)
        for h in self.handles.values():
            with contextlib.suppress(Exception):
                ray.kill(h)
        if self.connected:
            ray.shutdown()
        return sorted(set(unreachable))
