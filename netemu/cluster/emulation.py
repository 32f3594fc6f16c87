"""An emulation over several machines: the driver plans and routes, each machine's agent applies.

:class:`ClusterEmulation` is the sequencer of a run spread over the machines of
a Ray cluster (:mod:`.agents`), as :class:`netemu.live.emulation.Emulation` is
of one on a single machine, with the same parts where the work is pure: the
planner (links, budgets, events, the one acquisition model), the link table
(each direction's shape, computed once), the controller (the clock loop),
the router and the route aggregation. What lives in a kernel is the agents':
the driver sends each machine its slice of every update (the shapes of the
directions its nodes send on, its nodes' encoded netlink route messages) in
one call per machine, all machines at once.

The nodes are split by :func:`netemu.plan.partition.partition` over the plan's
first minutes (by orbital plane for Walker shells, ground stations and
aircraft with the satellites they link to most). The machines are the Ray
cluster's nodes that offer a netemu machine resource; their clocks are
checked against the driver's before anything is made (:func:`.agents.check_clocks`)
and reported. A machine lost at any point ends the run (:class:`.agents.MachineLost`,
naming it) and :meth:`ClusterEmulation.stop` removes everything on every
machine still reachable.

The shaper is one for all machines (their tunnels' ends must match,
:mod:`.tunnels`): ``auto`` is netem when every machine's kernel has sch_netem,
else the wire engine. The driver writes the run log (:mod:`netemu.live.runlog`),
as one machine does, and the captures: each machine's agent records the taps at
its nodes, and at stop the driver writes their recordings as the run's pcapng
files, on one timeline (the machines' clocks synchronised). Not yet here (the
single-machine run has them): Mininet hosts, containers.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from netemu.capture.taps import CapturePoint, Captures, parse_points, run_comment
from netemu.cluster.agent import LinkEnd
from netemu.cluster.agents import (
    BRING_UP_TIMEOUT_S,
    CLOCK_BOUND_MS,
    Agents,
    ClockOffset,
    MachineLost,
    check_clocks,
    cluster_machines,
    connect,
)
from netemu.cluster.processes import RemoteHost
from netemu.cluster.underlay import Machine
from netemu.errors import InputError
from netemu.live.bringup import links_ahead
from netemu.live.controller import Controller
from netemu.live.linktable import LinkTable
from netemu.live.queries import RunQueries
from netemu.live.routes import route_messages
from netemu.live.run import Run
from netemu.live.runlog import RunLogging
from netemu.model.faults import Fault
from netemu.model.topology import NodeKind, Topology
from netemu.plan.links import KINDS
from netemu.plan.partition import Partition, count_link_epochs, partition
from netemu.plan.planner import EpochPlan, Planner, iso_utc
from netemu.routes import addressing
from netemu.routes.aggregation import PrefixRoutes
from netemu.routes.routing import WORK_PER_SECOND, RouteHistory, ShortestDelayRouter
from netemu.shaping import Direction, ShaperError

log = logging.getLogger(__name__)


class ClusterEmulation(RunQueries, RunLogging):
    """A topology live over the machines of the Ray cluster at ``address``; what it
    answers (paths, delays, links, faults, waiting) is one machine's
    (:class:`netemu.live.queries.RunQueries`)."""

    def __init__(
        self,
        topology: Topology,
        address: str | None,
        *,
        start: datetime | None = None,
        duration_s: float | None = None,
        step_s: float = 1.0,
        speed: float = 1.0,
        run_name: str | None = None,
        faults: list[Fault] = (),
        clock_bound_ms: float = CLOCK_BOUND_MS,
        keep_history: bool = False,
        log_path: str | Path | bool | None = None,
        shaper: str = "auto",
        capture: list[str] = (),
        capture_dir: str | Path | None = None,
    ) -> None:
        """``address``: the Ray cluster's (``host:6379``; None: the one this process
        is connected to, or ``RAY_ADDRESS``); ``shaper``: ``auto``, ``netem`` (every
        machine's kernel must have it) or ``wire``; ``clock_bound_ms``: a machine whose clock
        is surely further than this from the driver's is refused (one closer than the
        measurement can tell is logged); ``keep_history``: every update's routes, for
        :meth:`delay_in_force_ms`; ``log_path``: the run log, as on one machine
        (:meth:`netemu.live.run.Run.make`; written by the driver); ``capture``, ``capture_dir``:
        capture points and where their pcapng files go, as on one machine (each machine
        records the taps at its nodes; the driver writes the files on one timeline)."""
        from netemu.live.emulation import check_pace

        check_pace(step_s, speed)
        addressing.check_size(len(topology.nodes))
        self.topology = topology
        #: The Ray cluster's address (None: this process's, or RAY_ADDRESS).
        self.cluster_address = address
        self.this_run = Run.make(topology.name, run_name, log=log_path, captures=capture_dir)
        self.run_name = self.this_run.name
        self.start_time = start or topology.start
        self.duration_s = duration_s
        self.step_s = step_s
        self.speed = speed
        self.clock_bound_ms = clock_bound_ms
        if shaper not in ("auto", "netem", "wire"):
            raise InputError(f"shaper {shaper!r}: auto, netem or wire")
        #: The shaper asked for; once started, the one every machine runs.
        self.shaper_kind = shaper
        self.planner = Planner(topology)
        for fault in faults:
            self.planner.faults.add(fault)
        self.names = [n.name for n in topology.nodes]
        #: The run's captures, written here from every machine's recordings at stop.
        self.captures = Captures(parse_points(capture, self.names), self.this_run.captures)
        #: The pcapng files written at stop (one per capture point, and all.pcapng).
        self.capture_files: list[Path] = []
        self.netns = [self.this_run.namespace(n) for n in self.names]
        self.table = LinkTable()
        hubs = [n.index for n in topology.nodes if n.kind is not NodeKind.SATELLITE]
        self.router = ShortestDelayRouter(
            len(self.names), work_per_update=round(WORK_PER_SECOND * step_s), hubs=hubs
        )
        self.prefixes = PrefixRoutes(len(self.names))
        self.controller = Controller(step_s, self._advance, self._acquired, self._next_ready)
        self.machines: list[Machine] = []
        self.partition: Partition | None = None
        self.agents: Agents | None = None
        #: Each machine's clock against the driver's, measured at start.
        self.clock_offsets: dict[str, ClockOffset] = {}
        self.events: list[dict] = []
        self.epoch: EpochPlan | None = None
        self.epoch_index = -1
        self.handovers = 0
        self.timings: dict[str, float] = {}
        #: The last updates' costs, newest last (as on one machine).
        self.updates: collections.deque[dict] = collections.deque(maxlen=10_000)
        #: With keep_history: (unix time, {link: delay_ms} carrying, next hops) per update.
        self.history: RouteHistory | None = RouteHistory() if keep_history else None
        self._cuts: dict[tuple[int, int], Fault] = {}  # made by link_status
        self._epochs: Iterator[EpochPlan] | None = None
        self._lock = threading.RLock()  # an update, or a question about the network
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.finished = threading.Event()
        self.started = False
        self._connected = False

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> ClusterEmulation:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Place an agent on every machine, check their clocks, make the links the
        plan's first minutes need and apply the first epoch. Tears down on failure."""
        t0 = time.perf_counter()

        def phase(name: str) -> None:
            nonlocal t0
            now = time.perf_counter()
            self.timings[name] = round(now - t0, 3)
            t0 = now

        self._connected = connect(self.cluster_address)
        self.started = True  # from here on, stop() disconnects and removes
        try:
            self.machines = cluster_machines(self.cluster_address)
            if len(self.machines) > len(self.names):
                raise InputError(
                    f"the cluster has {len(self.machines)} netemu machines for "
                    f"{len(self.names)} nodes: use a smaller cluster or a larger topology"
                )
            orbital_step = self.step_s * self.speed
            first_links = links_ahead(self.planner, self.start_time, self.duration_s, orbital_step)
            link_epochs, _ = count_link_epochs(
                self.planner.run(self.start_time, self._ahead_s(), max(orbital_step, 10.0))
            )
            self.partition = partition(self.topology, len(self.machines), link_epochs)
            nodes = {
                m.name: {i: self.names[i] for i in self.partition.nodes_of(k).tolist()}
                for k, m in enumerate(self.machines)
            }
            phase("plan")
            self.agents = Agents(self.run_name, self.machines, nodes, self.cluster_address)
            self.clock_offsets = self.agents.clock_offsets()
            check_clocks(self.clock_offsets, self.clock_bound_ms, sure=False)
            unsure = [m for m, o in self.clock_offsets.items() if not o.within(self.clock_bound_ms)]
            if unsure:
                log.warning(
                    "clocks of %s not measurably within %s ms of this one's over Ray "
                    "(uncertainty %s ms): one-way delays across machines are as good as "
                    "their synchronisation (PTP, chrony)",
                    ", ".join(unsure), self.clock_bound_ms,
                    max(self.clock_offsets[m].uncertainty_ms for m in unsure),
                )  # fmt: skip
            self.shaper_kind = self._shaper_for_all()
            self._open_log(self.shaper_name)
            kind = (self.shaper_kind,)
            self.agents.call("start", dict.fromkeys(self.agents.handles, kind), BRING_UP_TIMEOUT_S)
            if self.captures.points:  # each machine taps its nodes' link ends as they are made
                self.agents.call(
                    "capture", dict.fromkeys(self.agents.handles, (self.captures.points,))
                )
            phase("agents")
            self._make_links(first_links)
            phase("links")
            self._epochs = self.planner.run(
                self.start_time,
                self.duration_s if self.duration_s is not None else 1e12,
                orbital_step,
                network_clock=time.monotonic,
            )
            self.controller.started()
            self._advance()
            self.controller.started()  # the schedule starts once the network is up
            phase("first_epoch")
        except BaseException:
            self.stop()
            raise
        log.info(
            "run %s up over %d machines: %d nodes, %d links in %.1f s",
            self.run_name, len(self.machines), len(self.names), len(self.table),
            sum(self.timings.values()),
        )  # fmt: skip

    def _shaper_for_all(self) -> str:
        """The shaper every machine runs: netem needs it in every machine's kernel."""
        if self.shaper_kind == "wire":
            return "wire"
        has = self.agents.call("kernel_has_netem")
        lacking = sorted(m for m, yes in has.items() if not yes)
        if self.shaper_kind == "auto":
            return "wire" if lacking else "netem"
        if lacking:
            raise ShaperError(
                f"--shaper netem: the kernel of {', '.join(lacking)} has no sch_netem "
                "(use --shaper wire or auto, or a kernel with netem on every machine)"
            )
        return "netem"

    def capture(self, point: str) -> None:
        """Capture a node (``sat3``) or a link (``link:sat3-sat4``) from now on."""
        parsed = CapturePoint.parse(point, self.names, option="capture")
        with self._lock:
            if parsed not in self.captures.points:
                self.captures.points.append(parsed)
            self.agents.call("capture", dict.fromkeys(self.agents.handles, ([parsed],)))

    def _write_captures(self) -> None:
        """Every reachable machine's recordings, written as the run's pcapng files."""
        for m in self.agents.handles:
            if m not in self.agents.lost:
                with contextlib.suppress(MachineLost, RuntimeError):  # said by the stop
                    self.captures.adopt(self.agents.call("stop_captures", {m: ()})[m])
        self.captures.comment = run_comment(
            self.run_name, self.topology.name, self.shaper_name, self.speed
        )
        self.capture_files = self.captures.write(self.events)

    def _ahead_s(self) -> float:
        return min(self.duration_s if self.duration_s is not None else 600.0, 600.0)

    def machine_of(self, node: str) -> str:
        """The machine that runs a node."""
        return self.machines[int(self.partition.machine[self.topology.by_name[node].index])].name

    # -- links -----------------------------------------------------------------------
    def _make_links(self, keys_kinds: list[tuple[tuple[int, int], int]]) -> None:
        """New links: each end made by its machine's agent (a link within a machine
        by that machine's, one across by both), then into the table, down."""
        new = [(k, kind) for k, kind in keys_kinds if k not in self.table]
        if not new:
            return
        where = self.partition.machine
        ends: dict[str, list[LinkEnd]] = {}
        rows = []
        for number, ((a, b), kind) in enumerate(new, start=len(self.table)):
            nodes = self.topology.nodes
            params = self.topology.link_params(KINDS[kind], nodes[a], nodes[b])
            rate = params.data_rate_gbps * 1000
            for node, peer in ((a, b), (b, a)):
                here, there = self.machines[where[node]], self.machines[where[peer]]
                cross = there if there != here else None
                end = LinkEnd(number, node, peer, self.names[peer], rate, cross)
                ends.setdefault(here.name, []).append(end)
            ia, ib = (
                addressing.interface_name(self.names[b]),
                addressing.interface_name(self.names[a]),
            )
            fwd = Direction((a, b), self.netns[a], ia, self.netns[b], ib)
            bwd = Direction((a, b), self.netns[b], ib, self.netns[a], ia)
            rows.append(((a, b), kind, params, (fwd, bwd)))
        self.agents.call("make_links", {m: (e,) for m, e in ends.items()}, BRING_UP_TIMEOUT_S)
        self.table.add(rows)

    # -- the controller ----------------------------------------------------------------
    def run(self, on_epoch: Callable[[ClusterEmulation], None] | None = None) -> None:
        """Advance epochs in this thread until the duration is over or :meth:`stop`."""
        try:
            self.controller.run(lambda: on_epoch(self) if on_epoch else None)
        except BaseException as exc:  # surfaces in wait() too
            self._error = exc
            raise
        finally:
            self.finished.set()

    def start_controller(self) -> threading.Thread:
        """Advance epochs in a background thread (for scripts and tests); its failure
        (a machine lost) is raised by :meth:`wait`."""

        def guarded() -> None:
            from netemu.live import signals

            signals.only_for_the_main_thread()
            with contextlib.suppress(BaseException):  # kept in _error: wait() says it
                self.run()

        self._thread = threading.Thread(target=guarded, name="netemu-controller", daemon=True)
        self._thread.start()
        return self._thread

    def _advance(self, events: list[dict] = ()) -> bool:
        with self._lock:
            return self._advance_locked(events)

    def _advance_locked(self, events: list[dict]) -> bool:
        t0 = time.perf_counter()
        epoch = next(self._epochs, None)
        if epoch is None:
            return False
        self.epoch = epoch
        self.epoch_index += 1
        self._make_links(self.table.missing(epoch.up))
        self.table.update(epoch.up, epoch.budget)
        self.handovers += sum(1 for e in epoch.events if e["type"] == "handover")
        carrying = self.planner.acquisition.carrying
        self._apply(carrying, [*events, *epoch.events], refresh=True)
        self.updates[-1]["epoch_ms"] = (time.perf_counter() - t0) * 1000
        return True

    def _acquired(self, now: float) -> None:
        with self._lock:
            acquisition = self.planner.acquisition
            acquisition.update(now, self.epoch.up.keys())
            ready = self.planner.ready_events(acquisition.became_ready)
            self._apply(acquisition.carrying, ready, refresh=False)

    def _next_ready(self) -> float | None:
        return self.planner.acquisition.next_ready()

    def _apply(self, carrying: set, events: list[dict], refresh: bool) -> None:
        """Every machine's slice of this update: the shapes of the directions its
        nodes send on, and its nodes' changed routes; one call each, all at once."""
        t0, began = time.perf_counter(), time.time()
        self.table.set_carrying(carrying)
        changes = self.table.changes(self.epoch.broken.degraded)
        a, b, delay = self.table.carrying()
        routes = self.router.update(a, b, delay, refresh)
        prefixes = self.prefixes.update(self.router.hops, routes.node, a, b, routes.dest)
        slices: dict[str, tuple[dict, dict]] = {m.name: ({}, {}) for m in self.machines}
        for d, shape in changes.items():
            node = d.link[0] if d.src_netns == self.netns[d.link[0]] else d.link[1]
            peer = d.link[1] if node == d.link[0] else d.link[0]
            slices[self._machine(node)][0][(node, peer)] = shape
        for node, messages in route_messages(prefixes):
            slices[self._machine(node)][1][node] = messages
        busy = {m: s for m, s in slices.items() if s[0] or s[1]}
        self.agents.call("apply", busy)
        if self.history is not None:  # in force once every machine has applied it
            keys = zip(a.tolist(), b.tolist(), strict=True)
            carrying_ms = dict(zip(keys, delay.tolist(), strict=True))
            self.history.append(time.time(), carrying_ms, self.router.hops, routes, began)
        self.updates.append(
            {"epoch": self.epoch_index, "refresh": refresh, "unix_s": began,
             "shape_changes": len(changes), "prefix_changes": len(prefixes),
             "apply_ms": (time.perf_counter() - t0) * 1000}
        )  # fmt: skip
        wall = round(time.time(), 6)
        stamped = [{"time": iso_utc(self.epoch.time), "unix_s": wall, **e} for e in events]
        self.events += stamped
        self._write_log(
            self.controller.clock(), stamped, len(changes), len(prefixes),
            self.updates[-1]["apply_ms"],
        )  # fmt: skip

    def _machine(self, node: int) -> str:
        return self.machines[int(self.partition.machine[node])].name

    # -- what users and tests ask ------------------------------------------------------
    def host(self, name: str) -> RemoteHost:
        """A node, to start programs in on its machine (``host(n).popen(argv)``:
        :mod:`netemu.cluster.processes`), as a Mininet host on one machine."""
        index = self.topology.by_name[name].index
        machine = self._machine(index)
        return RemoteHost(lambda method, *a: self.agents.call(method, {machine: a})[machine], index)

    def links_across(self) -> list[tuple[str, str]]:
        """The links made so far whose ends are on different machines (VXLAN tunnels)."""
        where = self.partition.machine
        return [(self.names[a], self.names[b]) for a, b in self.table.keys if where[a] != where[b]]

    def stats(self) -> dict[str, dict]:
        """Every machine's engine counters (late, worst late, overload); raises
        :class:`.agents.MachineLost` for a machine gone."""
        return self.agents.call("check")

    def shaping_late(self) -> dict:
        """Packets the machines' engines released late or could not carry, summed
        ({"late", "worst_late_ms", "overload"}), {} when none or not known now."""
        try:
            stats = list(self.stats().values())
        except (RuntimeError, AttributeError):  # a machine lost or not yet up
            return {}
        late = {
            "late": sum(s["late"] or 0 for s in stats),
            "worst_late_ms": max((s["worst_late_ms"] or 0 for s in stats), default=0),
            "overload": sum(s["overload"] or 0 for s in stats),
        }
        return late if late["late"] or late["overload"] else {}

    def status(self) -> dict:
        from netemu.live.emulation import run_status

        return run_status(self, self.controller.late_epochs, self.shaper_name)

    @property
    def shaper_name(self) -> str:
        return f"{self.shaper_kind} on {len(self.machines)} machines"

    # -- teardown ----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the controller and remove everything on every machine still reachable;
        the machines that were not (``netemu clean`` there removes what is left)."""
        self.controller.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        if not self.started:
            return []
        self.started = False
        unreachable: list[str] = []
        try:
            if self.agents is not None:
                try:
                    if self.captures.points:
                        self._write_captures()
                finally:
                    unreachable = self.agents.stop()
        finally:
            try:
                self._end_log()
                self.this_run.hand_over()
            finally:
                if self._connected:
                    import ray

                    ray.shutdown()
        return unreachable
