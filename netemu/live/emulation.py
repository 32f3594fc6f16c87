"""Emulation: a topology brought to life, with real packets in real namespaces.

An :class:`Emulation` is a sequencer of parts, each owning one thing:

- :mod:`.run`: the run's name, folder, state file and who owns its files;
- :mod:`.machine`: what the machine must have, checked before anything is made;
- :mod:`.bringup`: namespaces and links, made in batches;
- :mod:`.linktable`: every link made and what it is now, as arrays (state,
  geometry, link budget, the shapes the shapers were given);
- :mod:`.controller`: the clock loop that applies each epoch when due;
- :mod:`.routes`: shortest-delay routes, aggregated, sent by netlink;
- :mod:`.runlog`: the JSON-lines run log; :mod:`.hosts`: Mininet hosts;

with the planner (:mod:`netemu.plan.planner`: links, budgets, events, the one
acquisition model), the shaper (:mod:`netemu.shaping`) and the router passed in
or chosen. Each epoch flows one way: planner -> link table -> shaper and routes
-> run log and listeners.

Time: orbital time runs ``speed`` times faster than the wall clock; packets,
propagation delays and acquisition times are never accelerated. ``step_s`` is
the wall-clock time between epochs, ``duration_s`` the orbital time to run.

Usage, as a context manager that always tears everything down::

    with Emulation(load_topology("topologies/kepler.yaml"), speed=10) as emu:
        emu.start_controller()              # epochs advance in a background thread
        print(emu.host("patrol1").cmd("ping -c1", emu.address("c2_bodo")))
        emu.capture("kep3")                 # pcapng files at stop (netemu.capture.taps)
        emu.wait(30)
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from netemu.capture.taps import CapturePoint, Captures, parse_points, run_comment
from netemu.errors import InputError, TeardownError, describe
from netemu.kernel import netns
from netemu.kernel.netlink.sockets import NamespaceSockets
from netemu.live import signals
from netemu.live.bringup import Builder, links_ahead
from netemu.live.controller import Controller
from netemu.live.hosts import Hosts
from netemu.live.linktable import ACQUIRING, UP, LinkTable, LinkView
from netemu.live.machine import check_memory, mem_available_mib, preflight
from netemu.live.queries import RunQueries
from netemu.live.routes import Routes, build_kernels
from netemu.live.run import Run
from netemu.live.runlog import RunLog, RunLogging
from netemu.live.workloads import Workloads, spec_from
from netemu.log import follow_mininet
from netemu.model import events as ev
from netemu.model.faults import Fault
from netemu.model.topology import NodeKind, Topology
from netemu.plan.planner import EpochPlan, Planner, iso_utc
from netemu.routes import addressing
from netemu.routes.routing import RouteChanges, RouteHistory, ShortestDelayRouter
from netemu.shaping import Shaper, ShaperError, choose

log = logging.getLogger(__name__)


def _no_huge_pages() -> None:
    """NumPy asks for transparent huge pages on large arrays; collapsing them, khugepaged
    runs for milliseconds at a time every 10 s, on any CPU and without preemption, and the
    wire engine's releases wait behind it. Live runs keep the controller's arrays small-paged."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)


_no_huge_pages()


#: An update leaves its routes to the next one (never two in a row) when it comes this
#: share of a step late for them: an epoch that far behind its due time, or a link that
#: finished acquiring that close before the next epoch's. The next update computes both
#: updates' changes at once: shaping keeps to the schedule through a burst of handovers
#: (a Starlink phase-1 handover's routes take 0.5-1.4 s of a 1 s step on 2 shared
#: cores), and the routes' lag (:attr:`.routes.Routes.in_force_ms`, counted from the
#: first update they waited for) grows by an epoch instead.
DEFER_ROUTES_SHARE = 0.25


def routes_wait(epoch: bool, behind_s: float, step_s: float) -> bool:
    """Whether an update leaves its routes to the next (``epoch``: a new epoch, else a
    link that finished acquiring between epochs; ``behind_s``: seconds past the due time
    of that epoch, or of the next one)."""
    share = DEFER_ROUTES_SHARE if epoch else -DEFER_ROUTES_SHARE
    return behind_s > share * step_s


def run_status(emu, late_epochs: int, shaper: str) -> dict:
    """A live run's figures for its status line (one machine's or a cluster's)."""
    wall0 = emu.controller.wall0
    return {
        "time": emu.epoch.time if emu.epoch else emu.start_time,
        "wall_s": time.monotonic() - wall0 if wall0 else 0.0,
        "epoch": emu.epoch_index,
        "links_up": emu.table.count(UP),
        "links_acquiring": emu.table.count(ACQUIRING),
        "links": len(emu.table),
        "handovers": emu.handovers,
        "late_epochs": late_epochs,
        "shaper": shaper,
    }


def check_pace(step_s: float, speed: float) -> None:
    """Refuse a wall-clock step or an orbital speed a run cannot keep."""
    if not 0.1 <= step_s <= 3600:
        raise InputError(f"--step must be between 0.1 and 3600 s, got {step_s}")
    if not 0 < speed <= 100_000:
        raise InputError(f"--speed must be above 0 and at most 100000, got {speed}")


class Emulation(RunQueries, RunLogging):
    def __init__(
        self,
        topology: Topology,
        *,
        start: datetime | None = None,
        duration_s: float | None = None,
        step_s: float = 1.0,
        speed: float = 1.0,
        shaper: str | Shaper = "auto",
        router: ShortestDelayRouter | None = None,
        run_name: str | None = None,
        folder: str | Path | None = None,
        log_path: str | Path | bool | None = None,
        keep_history: bool = False,
        capture: list[str] = (),
        capture_dir: str | Path | None = None,
        faults: list[Fault] = (),
    ):
        """``run_name``, ``folder``, ``log_path`` and ``capture_dir`` make the run
        (:meth:`.run.Run.make`: ``log_path=True`` keeps ``run.jsonl`` in the run's
        folder); ``keep_history``: every update's routes, for :meth:`delay_in_force_ms`."""
        check_pace(step_s, speed)
        addressing.check_size(len(topology.nodes))
        check_memory(len(topology.nodes))
        self.topology = topology
        self.this_run = Run.make(
            topology.name, run_name, folder=folder, log=log_path, captures=capture_dir
        )
        self.run_name = self.this_run.name
        #: The environment of every process the run starts (netns.RUN_ENV).
        self.env = self.this_run.env
        self.start_time = start or topology.start
        self.duration_s = duration_s
        self.step_s = step_s
        self.speed = speed
        self.shaper = choose(shaper) if isinstance(shaper, str) else shaper
        self.planner = Planner(topology)
        for fault in faults:
            self.planner.faults.add(fault)
        self.names = [n.name for n in topology.nodes]
        self.netns = [self.this_run.namespace(n) for n in self.names]
        self.sockets = NamespaceSockets()  # one netlink socket per namespace, shared
        self.table = LinkTable()
        hubs = [n.index for n in topology.nodes if n.kind is not NodeKind.SATELLITE]
        self.routes = Routes(self.netns, self.sockets, router, keep_history, step_s, hubs)
        self.builder = Builder(
            topology, self.netns, self.shaper, self.sockets, self.table, self._links_made
        )
        self.controller = Controller(step_s, self._advance, self._acquired, self._next_ready)
        self.captures = self._captures(capture)
        #: Users' containers on the nodes (the topology's, and emu.add_container's).
        self.workloads = Workloads(
            self.run_name, self.this_run.folder,
            topology.file.parent if topology.file else Path.cwd(), self.names, self.netns,
            [addressing.service_address(i) for i in range(len(self.names))],
            {n.name: n.gpus for n in topology.nodes}, self.env, self._tell,
        )  # fmt: skip
        self.workloads.add(topology.containers)
        #: The pcapng files written at stop (one per capture point, and all.pcapng).
        self.capture_files: list[Path] = []
        #: Called with each event as it happens (deployments stop and restart services).
        self.listeners: list[Callable[[dict], None]] = [self.workloads.on_event, _log_event]
        self.events: list[dict] = []
        self.epoch: EpochPlan | None = None
        self.epoch_index = -1
        self.handovers = 0
        self.hosts: Hosts | None = None
        self._cuts: dict[tuple[int, int], Fault] = {}  # made by link_status
        self._log: RunLog | None = None
        self._unlogged: list[dict] = []  # events from outside the updates, not yet logged
        self._epochs: Iterator[EpochPlan] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._error: BaseException | None = None
        self.started = False
        self.finished = threading.Event()
        #: Seconds spent in each bring-up phase, and the memory each took (MiB of the
        #: machine's MemAvailable: kernel objects and processes), for benchmarks and the curious.
        self.timings: dict[str, float] = {}
        self.memory_mib: dict[str, float] = {}
        self.last_update: dict[str, float] = {}
        #: Updates whose routes were left to the next one (:func:`routes_wait`),
        #: and when the first of those still waiting began (unix time).
        self.routes_deferred = 0
        self._routes_since: float | None = None
        #: The last updates' costs (epochs and links that finished acquiring), newest last.
        self.updates: collections.deque[dict] = collections.deque(maxlen=10_000)

    @property
    def router(self) -> ShortestDelayRouter:
        return self.routes.router

    @property
    def prefixes(self):
        """Each node's aggregated routes (:class:`netemu.routes.aggregation.PrefixRoutes`)."""
        return self.routes.prefixes

    @property
    def history(self) -> RouteHistory | None:
        """With keep_history: (unix time, {link: delay_ms} carrying, next hops) per update."""
        return self.routes.history

    @property
    def late_epochs(self) -> int:
        return self.controller.late_epochs

    def _captures(self, points: list[str]) -> Captures:
        """Captures in the run's captures folder (see :mod:`netemu.capture.taps`)."""
        return Captures(
            parse_points(points, self.topology.by_name),
            self.this_run.captures,
            env=self.env,
            comment=run_comment(self.run_name, self.topology.name, self.shaper.name, self.speed),
        )

    def capture(self, point: str) -> None:
        """Capture a node (``sat3``) or a link (``link:sat3-sat4``) from now on."""
        parsed = CapturePoint.parse(point, self.names, option="capture")
        with self._lock:
            self.captures.add_point(parsed, self._capture_links(self.table.keys))

    def _capture_links(self, keys) -> list[tuple[str, str, dict]]:
        """(a, b, {node: (namespace, its interface toward the other)}) for links ``keys``."""
        out = []
        for a, b in keys:
            na, nb = self.names[a], self.names[b]
            where = {
                na: (self.netns[a], addressing.interface_name(nb)),
                nb: (self.netns[b], addressing.interface_name(na)),
            }
            out.append((na, nb, where))
        return out

    def _links_made(self, keys: list[tuple[int, int]]) -> None:
        """New links: their ends become the hosts' interfaces, and are captured."""
        for a, b in keys:
            self.hosts.link_made(a, b)
            self.hosts.link_made(b, a)
        self.captures.add_links(self._capture_links(keys))

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Emulation:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Build the network and apply the first epoch. Tears down again on failure."""
        preflight(("tcpdump",) if self.captures.points else ())
        self.this_run.check_unused()
        self.workloads.prepare()  # every image here before anything is made
        signals.install_for_library()  # a SIGTERM now still tears down
        self.started = True
        try:
            self._bring_up()
        except BaseException as exc:  # the run log's end says why (a signal, a failure)
            self._error = exc
            self.stop()
            raise

    def _bring_up(self) -> None:
        t0 = began = time.perf_counter()
        memory = mem_available_mib()

        def phase(name: str) -> None:
            nonlocal t0, memory
            now, left = time.perf_counter(), mem_available_mib()
            self.timings[name] = round(now - t0, 3)
            self.memory_mib[name] = round(memory - left, 1)
            t0, memory = now, left

        # Two pty descriptors per Mininet host and a netlink socket per namespace.
        netns.raise_open_files_limit()
        build_kernels()  # the routes' compiled loops, if their source was never built
        captures = bool(self.captures.points)
        self.this_run.record(captures=captures)  # what `netemu clean` needs after a kill -9
        self._open_log(self.shaper.name)
        # Links the run will need: plan ahead (cheap: no namespaces touched).
        first_links = links_ahead(
            self.planner, self.start_time, self.duration_s, self.step_s * self.speed
        )
        phase("plan")
        # Each host made when first asked for.
        self.hosts = Hosts(self.names, self.netns, self.env, self._carrying_pairs, self.link_status)
        self.builder.make_namespaces()
        phase("namespaces")
        # The shaper first: with the wire shaper, its engine makes the links' interfaces.
        self.shaper.start(self.netns, self.env, self.sockets)
        self.this_run.record(self.shaper.pids, captures=captures)
        phase("shaper")
        self.builder.links(first_links, new_namespaces=self.netns)
        phase("configure")
        # Acquisition on the wall clock (network time), read as each epoch is planned.
        self._epochs = self.planner.run(
            self.start_time,
            self.duration_s if self.duration_s is not None else 1e12,
            self.step_s * self.speed,
            network_clock=time.monotonic,
        )
        self.controller.started()
        self._advance()
        self.routes.settle()  # every node's first routes are in the kernel: the network is up
        self.routes.installer.most_pending = 0  # what waited in the run, not at bring-up
        # The schedule starts once the network is up: the first epoch's set-up (routes
        # for every node) is bring-up, not an epoch that came late.
        self.controller.started()
        self.workloads.start()  # the network is up: users' containers join it
        phase("containers")
        # Bring-up's large temporary arrays leave the heap fragmented: give it back.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
        # What bring-up made lives as long as the run: out of the collector's sweeps, so
        # a full collection during an epoch does not walk it (~0.1-0.2 s at full shell).
        gc.collect()
        gc.freeze()
        phase("first_epoch")
        log.info(
            "run %s up: %d nodes, %d links (%d carrying) with the %s shaper in %.1f s",
            self.run_name, len(self.names), len(self.table), self.table.count(UP),
            self.shaper.name, time.perf_counter() - began,
        )  # fmt: skip

    # -- the controller ----------------------------------------------------------------
    def start_controller(self) -> threading.Thread:
        """Advance epochs in a background thread (for scripts and tests)."""
        self._thread = threading.Thread(
            target=self._run_guarded, name="netemu-controller", daemon=True
        )
        self._thread.start()
        return self._thread

    def run(self, on_epoch: Callable[[Emulation], None] | None = None) -> None:
        """Advance epochs in this thread until the duration is over or :meth:`stop`."""
        try:
            self._loop(on_epoch)
        except BaseException as exc:  # the run log's end says why the run stopped
            self._error = exc
            raise

    def _run_guarded(self) -> None:
        signals.only_for_the_main_thread()
        try:
            self._loop(None)
        except BaseException as exc:  # surfaces in wait() and stop()
            self._error = exc
        finally:
            self.finished.set()

    def _loop(self, on_epoch) -> None:
        def after_epoch() -> None:
            netns.check_present(self.netns)
            if on_epoch:
                on_epoch(self)

        self.controller.run(after_epoch)
        self.finished.set()

    def _advance(self, events: list[dict] = ()) -> bool:
        """Apply the next epoch (with ``events`` of the controller's own); False when
        the run's duration is over."""
        with self._lock, self.shaper.elsewhere():  # planning too: it allocates, page faults
            t0 = time.perf_counter()
            epoch = next(self._epochs, None)  # planned now: acquisition reads the clock
            if epoch is None:
                return False
            planned = time.perf_counter()
            self.epoch = epoch
            self.epoch_index += 1
            self.builder.links(self.table.missing(epoch.up))
            self.table.update(epoch.up, epoch.budget)
            self.handovers += sum(1 for e in epoch.events if e["type"] == "handover")
            carrying = self.planner.acquisition.carrying
            self._apply(time.monotonic(), carrying, [*events, *epoch.events], refresh=True)
        # The whole epoch as the schedule sees it: planning, new links, shaping, routes, log.
        done = time.perf_counter()
        self.updates[-1].update(plan_ms=(planned - t0) * 1000, epoch_ms=(done - t0) * 1000)
        return True

    def _acquired(self, now: float) -> None:
        """Between epochs: links that finished acquiring carry from now on."""
        with self._lock, self.shaper.elsewhere():
            acquisition = self.planner.acquisition
            acquisition.update(now, self.epoch.up.keys())
            ready = self.planner.ready_events(acquisition.became_ready)
            self._apply(now, acquisition.carrying, ready, refresh=False)

    def _next_ready(self) -> float | None:
        return self.planner.acquisition.next_ready()

    def _apply(self, now: float, carrying: set, events: list[dict], refresh: bool) -> None:
        """Apply link states, shapes and routes for the current epoch at wall time ``now``
        (``refresh``: a new epoch, not just a link that finished acquiring)."""
        t0, began = time.perf_counter(), time.time()
        self.table.set_carrying(carrying)
        changes = self.table.changes(self.epoch.broken.degraded)
        if changes:
            self.shaper.apply(changes)
            if self.hosts is not None:
                self.hosts.links_changed()
        self.shaper.check()
        t_links = time.perf_counter()
        deferred = (
            self._routes_since is None
            and self.epoch_index > 0
            and routes_wait(refresh, self.controller.behind_s(), self.step_s)
        )
        if deferred:
            self._routes_since = began
            self.routes_deferred += 1
            route_changes, prefix_changes = RouteChanges.none(), ()
        else:
            since, self._routes_since = self._routes_since or began, None
            route_changes, prefix_changes = self.routes.update(
                *self.table.carrying(), refresh, since
            )
        t_routes = time.perf_counter()
        #: How long the last update took: link shaping, routing (ms).
        self.last_update = {
            "links_ms": (t_links - t0) * 1000,
            "routes_ms": (t_routes - t_links) * 1000,
            "shape_changes": len(changes),
            "route_changes": len(route_changes),
            "prefix_changes": len(prefix_changes),
            "trees_recomputed": 0 if deferred else self.router.recomputed,
            "routes_deferred": deferred,
        }
        self.updates.append(
            {"epoch": self.epoch_index, "refresh": refresh, "unix_s": began, **self.last_update}
        )
        if route_changes and self.epoch_index > 0:
            events = [*events, ev.routes(len(route_changes))]
        wall = round(time.time(), 6)
        stamped = [{"time": iso_utc(self.epoch.time), "unix_s": wall, **e} for e in events]
        self.events += stamped
        for event in stamped:
            for listener in self.listeners:
                listener(event)
        logged, self._unlogged = [*self._unlogged, *stamped], []
        self._write_log(
            now, logged, len(changes), len(route_changes), (time.perf_counter() - t0) * 1000
        )

    # -- what users and tests ask ------------------------------------------------------
    def host(self, name: str):
        """The Mininet host of a node (made on first use: a shell in its namespace)."""
        with self._lock:
            index = self.topology.by_name[name].index
            peers = [b if index == a else a for a, b in self.table.keys if index in (a, b)]
            return self.hosts.host(index, peers)

    def mininet(self):
        """The Mininet network with a host for every node (made now if not yet); from
        now on Mininet's ``setLogLevel`` sets netemu's log level too."""
        follow_mininet()
        for name in self.names:
            self.host(name)
        return self.hosts.net

    def _carrying_pairs(self) -> set[tuple[int, int]]:
        a, b, _ = self.table.carrying()
        return set(zip(a.tolist(), b.tolist(), strict=True))

    def status(self) -> dict:
        return run_status(self, self.late_epochs, self.shaper.name)

    def add_container(
        self, name: str, image: str | None = None, *, where: str = "add_container", **options
    ) -> list[str]:
        """Run a container on nodes, as the topology's ``containers:`` does (the same
        keys: ``nodes=`` or ``replicas=``, ``command``, ``env``, ``volumes``, ``gpus``,
        ``ready``, ``engine``, ...; docs/topology.md); started now if the run is up (and
        returns once its instances have started). Its instances' names. ``where``
        names it in errors (the command line: its file and entry)."""
        spec = spec_from({"name": name, "image": image, **options}, where)
        return [i.name for i in self.workloads.add([spec], where)]

    def remove_container(self, *names: str) -> None:
        """Stop these containers' instances together and forget them (their names and
        GPU slots free again)."""
        self.workloads.remove(list(names))

    def containers(self) -> list[dict]:
        """Each container instance: name, container, node, state (waiting, running,
        exited, stopped), restarts, exit status, GPU slots, its output and stderr files,
        pid (its process; a container's podman client)."""
        return self.workloads.states()

    def _tell(self, events: list[dict]) -> None:
        """Events from outside the epochs (containers): stamped, logged as the epoch's."""
        with self._lock:
            epoch = self.epoch
            stamped = [
                {"time": iso_utc(epoch.time if epoch else self.start_time),
                 "unix_s": round(time.time(), 6), **e}
                for e in events
            ]  # fmt: skip
            self.events += stamped
            self._unlogged += stamped  # in the next update's line of the run log
        for event in stamped:
            for listener in self.listeners:
                listener(event)

    def shaper_stats(self, full: bool = False) -> dict:
        """The shaper's counters now (the wire engine's: packets held, late, overload,
        with ``full`` its timing too; {} with netem), between two updates."""
        with self._lock:
            return self.shaper.stats(full)

    @contextlib.contextmanager
    def between_updates(self) -> Iterator[Emulation]:
        """Hold the controller between two updates while the block reads several things
        that must agree (routes, the kernel's tables, link states)."""
        with self._lock:
            self._catch_up_routes()
            self.routes.settle()  # the kernel's routes are the table's
            yield self

    def _catch_up_routes(self) -> None:
        """Compute the routes an epoch left to the next update, if one did (lock held)."""
        if self._routes_since is not None and self.epoch is not None:
            with self.shaper.elsewhere():
                self._apply(time.monotonic(), self.planner.acquisition.carrying, [], False)

    def stop_controller(self) -> None:
        """Stop advancing epochs (the network stays as it is) and wait for the
        controller to finish its update."""
        self.controller.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def shaping_late(self) -> dict:
        """Packets the wire engine released late or could not carry ({"late": count,
        "worst_late_ms", "overload": count}), {} when none (or with netem, which the
        kernel runs on time)."""
        try:
            stats = self.shaper_stats(full=True)
        except (ShaperError, OSError):
            return {}
        return (
            {k: stats[k] for k in ("late", "worst_late_ms", "overload")}
            if stats.get("late") or stats.get("overload")
            else {}
        )

    # -- teardown ----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the controller and remove everything this run created. Idempotent.
        Every step is tried even when one fails (out of memory, say); then
        :class:`TeardownError` names the first failure and how to remove the rest."""
        if not self.started:
            return
        with signals.deferred():  # a signal now is raised once all is removed
            log.info("run %s: stopping, everything it made removed", self.run_name)
            self.stop_controller()
            failed = None
            for step in (self.routes.close, self.workloads.stop, self.shaper.stop,
                         self._stop_captures, self.sockets.close, self._stop_hosts,
                         self._remove_namespaces, self._end_log,
                         self.this_run.hand_over):  # fmt: skip
                try:
                    step()
                except Exception as exc:  # said once all steps were tried
                    failed = failed or exc
            self.started = False
            gc.unfreeze()  # what bring-up made is garbage now
            if failed is not None:
                raise TeardownError(
                    f"removing run {self.run_name} failed: {describe(failed)}; "
                    f"netemu clean --run {self.run_name} removes what is left"
                ) from failed

    def _stop_captures(self) -> None:
        self.capture_files = self.captures.stop(self.events)

    def _stop_hosts(self) -> None:
        if self.hosts is not None:
            self.hosts.stop()

    def _remove_namespaces(self) -> None:
        """The namespaces (with their links, qdiscs and rules), then the state file."""
        netns.delete(netns.namespaces(self.this_run.namespace("")))
        self.this_run.forget()


__all__ = ["Emulation", "LinkView", "preflight"]


def _log_event(event: dict) -> None:
    """Faults and containers at INFO, a late epoch as a WARNING, the links' and routes'
    events at DEBUG."""
    level = _EVENT_LEVELS.get(event["type"], logging.DEBUG)
    if log.isEnabledFor(level):
        said = {k: v for k, v in event.items() if k not in ("type", "time", "unix_s")}
        fields = " ".join(f"{k}={v}" for k, v in said.items())
        log.log(level, "%s %s: %s", event["time"], event["type"], fields)


_EVENT_LEVELS = {"fault": logging.INFO, "fault-cleared": logging.INFO,
                 "container": logging.INFO, "late": logging.WARNING}  # fmt: skip
