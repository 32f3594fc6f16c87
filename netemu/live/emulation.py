"""Emulation: a topology brought to life, with real packets in real namespaces.

An :class:`Emulation` makes one Mininet host per satellite, ground station and
aircraft (each in a network namespace named ``netemu-<run>-<node>``, acting
as an IP router), one veth pair per link the topology's policies make
feasible, and then runs the *controller*: every epoch it asks the planner
(:mod:`netemu.plan.planner`) which links are up, lets new links acquire
(:mod:`netemu.plan.acquisition`), shapes each link direction's delay, loss and
rate (:mod:`netemu.shaping`) and installs shortest-delay routes
(:mod:`netemu.routes.routing`), changing only what changed.

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

import bisect
import collections
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from netemu.capture.taps import CapturePoint, Captures
from netemu.errors import InputError, TeardownError, describe
from netemu.kernel import netns
from netemu.kernel.netlink import (
    NamespaceSockets,
    encode_addresses,
    encode_deletes,
    encode_links_up,
    encode_neighbours,
    encode_replaces,
    encode_unreachables,
    send_all,
    send_requests,
)
from netemu.live import signals
from netemu.live.runlog import RunLog, link_row
from netemu.model import events as ev
from netemu.model.faults import Fault, parse_target
from netemu.model.topology import LinkParams, Topology
from netemu.plan.acquisition import Acquisition
from netemu.plan.geometry import delay_ms
from netemu.plan.links import KINDS
from netemu.plan.planner import EpochPlan, Planner, iso_utc
from netemu.plan.shapes import Applied, fault_arrays, link_shapes, total_loss
from netemu.routes import addressing
from netemu.routes.aggregation import PrefixChanges, PrefixRoutes
from netemu.routes.routing import UNREACHABLE, RouteHistory, ShortestDelayRouter, path
from netemu.shaping import Direction, Port, Shape, Shaper, ShaperError, choose


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

#: Orbital time planned ahead at bring-up (sampled every PLAN_AHEAD_STEP_S at
#: least) to create the links a run will need; links the sampling misses or
#: that come later are created when they first appear (they acquire anyway).
PLAN_AHEAD_S = 600.0
PLAN_AHEAD_STEP_S = 10.0
#: bash: the hosts' shells; grep: Mininet counts the CPUs with it.
REQUIRED_TOOLS = ("mnexec", "ip", "tc", "iptables", "bash", "grep")
#: Every node is a router without IPv6.
ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": 1,
    "net/ipv4/conf/all/rp_filter": 0,  # paths need not be symmetric
    "net/ipv4/conf/default/rp_filter": 0,
    "net/ipv6/conf/all/disable_ipv6": 1,  # no IPv6 chatter on the links
    "net/ipv6/conf/default/disable_ipv6": 1,
    # TCP buffers up to 64 MiB, as a host tuned for a long fat link has: one stream can
    # fill 2.5 Gbit/s over 100 ms of round trip (Linux's defaults stop at 4-6 MiB).
    "net/ipv4/tcp_rmem": "4096 131072 67108864",
    "net/ipv4/tcp_wmem": "4096 16384 67108864",
}


@dataclass
class Link:
    """One point-to-point link (veth pair) and what it is now."""

    a: int
    b: int
    kind: int
    params: LinkParams
    forward: Direction  # a -> b
    backward: Direction  # b -> a
    distance_km: float = 0.0
    delay_ms: float = 0.0  # one-way propagation delay at distance_km
    state: str = "down"  # "up" (carrying), "acquiring" or "down"
    budget_loss: tuple[float, float] = (0.0, 0.0)  # link-budget packet loss a->b, b->a
    fade: tuple[float, float] = (0.0, 0.0)  # share of time in turbulence fades a->b, b->a


#: What a live node costs the machine (namespace, links, qdiscs, routes, controller
#: state): ~0.6 MiB measured at 1,590 nodes (benchmarks/results-live_scale.json), of
#: which ~0.2 MiB a bare namespace and ~86 KiB a veth pair; with room for other kernels.
MIB_PER_NODE = 2.0
MIB_BASE = 64.0


def preflight(extra_tools: tuple[str, ...] = ()) -> None:
    """What a live run needs from the machine, checked before anything is created."""
    if os.geteuid() != 0:
        raise InputError("netemu run needs root for network namespaces (try: sudo netemu run ...)")
    missing = [t for t in (*REQUIRED_TOOLS, *extra_tools) if shutil.which(t) is None]
    if missing:
        raise InputError(
            f"missing system tools: {', '.join(missing)} (run scripts/provision to install them)"
        )
    # OpenBLAS allocates its work buffer at the first matrix product and exit()s the
    # process if it cannot (under ulimit -v): let that happen before anything is made.
    np.ones((2, 2)) @ np.ones((2, 2))


def check_memory(n_nodes: int, available: tuple[float, str] | None = None) -> None:
    """Refuse a topology the machine cannot hold live (before anything is created)."""
    need = MIB_BASE + MIB_PER_NODE * n_nodes
    have, where = available or available_mib()
    if need > have:
        raise InputError(
            f"{n_nodes:,} nodes need about {need / 1024:.1f} GiB to emulate live, and "
            f"{where} has {have / 1024:.1f} GiB available: use a machine with more memory, "
            "or 'netemu plan' (no namespaces) for the schedule alone"
        )


def available_mib() -> tuple[float, str]:
    """Memory a run can still take, and what limits it: the machine's available memory,
    or the tighter limit of a memory cgroup this process is in (a container's, a
    systemd unit's MemoryMax) above which the kernel's OOM killer ends the run."""
    have, where = float("inf"), "this machine"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                have = int(line.split()[1]) / 1024
    for cgroup, headroom in _cgroup_headroom_mib():
        if headroom < have:
            have, where = headroom, f"memory cgroup {cgroup}"
    return have, where


def _cgroup_headroom_mib() -> list[tuple[str, float]]:
    """(cgroup, limit minus use) for each memory-limited cgroup above this process,
    cgroup v2 (memory.max) or v1 (memory.limit_in_bytes)."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                root, limit, use = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
            elif "memory" in controllers.split(","):
                root = Path("/sys/fs/cgroup/memory")
                limit, use = "memory.limit_in_bytes", "memory.usage_in_bytes"
            else:
                continue
            group = root / path.lstrip("/")
            while group.is_relative_to(root):
                with contextlib.suppress(OSError, ValueError):  # no such file, "max"
                    free = int((group / limit).read_text()) - int((group / use).read_text())
                    found.append(("/" + str(group.relative_to(root)).strip("."), free / 2**20))
                if group == root:
                    break
                group = group.parent
    return found


class Emulation:
    def __init__(
        self,
        topology: Topology,
        *,
        start: datetime | None = None,
        duration_s: float | None = None,
        step_s: float = 1.0,
        speed: float = 1.0,
        shaper: str | Shaper = "auto",
        run_name: str | None = None,
        log_path: str | Path | None = None,
        keep_history: bool = False,
        capture: list[str] = (),
        capture_dir: str | Path | None = None,
        faults: list[Fault] = (),
    ):
        if not 0.1 <= step_s <= 3600:
            raise InputError(f"--step must be between 0.1 and 3600 s, got {step_s}")
        if not 0 < speed <= 100_000:
            raise InputError(f"--speed must be above 0 and at most 100000, got {speed}")
        addressing.check_size(len(topology.nodes))
        check_memory(len(topology.nodes))
        self.topology = topology
        self.start_time = start or topology.start
        self.duration_s = duration_s
        self.step_s = step_s
        self.speed = speed
        self.run_name = run_name or addressing.default_run_name(topology.name)
        #: The environment of every process the run starts (netns.RUN_ENV).
        self.env = netns.run_env(self.run_name)
        if not all(c.isalnum() or c in "_." for c in self.run_name) or len(self.run_name) > 40:
            raise InputError(f"run name {self.run_name!r}: use letters, digits, '_' or '.'")
        self.shaper = choose(shaper) if isinstance(shaper, str) else shaper
        self.log_path = Path(log_path) if log_path else None
        self.captures = self._captures(capture, capture_dir)
        #: The pcapng files written at stop (one per capture point, and all.pcapng).
        self.capture_files: list[Path] = []
        #: With keep_history: (unix time, {link: delay_ms} carrying, next hops) per update.
        self.history: RouteHistory | None = RouteHistory() if keep_history else None

        self.planner = Planner(topology)
        for fault in faults:
            self.planner.faults.add(fault)
        #: Called with each event as it happens (deployments stop and restart services).
        self.listeners: list[Callable[[dict], None]] = []
        self.names = [n.name for n in topology.nodes]
        self.netns = [addressing.netns_name(self.run_name, n) for n in self.names]
        self.router = ShortestDelayRouter(len(self.names))
        self.prefixes = PrefixRoutes(len(self.names))
        self.acquisition = Acquisition(
            self._acquisition_times,
            lambda key: self.links[key].params.acquisition_spread_s,
            topology.seed,
        )
        self.links: dict[tuple[int, int], Link] = {}
        self.shapes: dict[Direction, Shape] = {}
        self._applied = Applied()  # the shapes last applied, per link direction
        self.events: list[dict] = []
        self.epoch: EpochPlan | None = None
        self.epoch_index = -1
        self.late_epochs = 0
        self.handovers = 0
        self.net = None
        self.sockets = NamespaceSockets()  # one netlink socket per namespace, shared
        self._log: RunLog | None = None
        self._wall0 = 0.0
        self._epochs = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._error: BaseException | None = None
        self.started = False
        self.finished = threading.Event()
        #: Seconds spent in each bring-up phase (for benchmarks and the curious).
        self.timings: dict[str, float] = {}
        self.last_update: dict[str, float] = {}
        #: The last updates' costs (epochs and links that finished acquiring), newest last.
        self.updates: collections.deque[dict] = collections.deque(maxlen=10_000)

    def _captures(self, points: list[str], directory) -> Captures:
        """Captures beside the run's log unless told where (see :mod:`netemu.capture.taps`)."""
        if directory is None:
            results = self.log_path.parent if self.log_path else Path("results") / self.run_name
            directory = results / "captures"
        return Captures(
            [
                CapturePoint.parse(p, self.topology.by_name)
                for arg in points  # "sat3,link:sat3-sat4" as the command line gives them
                for p in arg.split(",")
                if p.strip()
            ],
            directory,
            env=self.env,
            comment=f"netemu run {self.run_name} of {self.topology.name}, shaper "
            f"{self.shaper.name}, speed {self.speed}. Interfaces 'A>B tx' show what A sends "
            "to B as it leaves A, 'A>B rx' the same packets as they reach B, after the "
            "emulated propagation; 'netemu events' the run's events, as comments.",
        )

    def capture(self, point: str) -> None:
        """Capture a node (``sat3``) or a link (``link:sat3-sat4``) from now on."""
        parsed = CapturePoint.parse(point, self.names, option="capture")
        with self._lock:
            self.captures.add_point(parsed, self._capture_links(self.links))

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

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Emulation:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Build the network and apply the first epoch. Tears down again on failure."""
        preflight(("tcpdump",) if self.captures.points else ())
        leftovers = netns.namespaces(addressing.netns_name(self.run_name, ""))
        if leftovers:
            raise InputError(
                f"run {self.run_name!r} left {len(leftovers)} namespaces behind "
                f"(e.g. {leftovers[0]}): remove them with 'sudo netemu clean --run "
                f"{self.run_name}' or choose another --name"
            )
        signals.install_for_library()  # a SIGTERM now still tears down
        self.started = True
        try:
            self._bring_up()
        except BaseException:
            self.stop()
            raise

    def _bring_up(self) -> None:
        from mininet.net import Mininet

        t0 = time.perf_counter()

        def phase(name: str) -> None:
            nonlocal t0
            now = time.perf_counter()
            self.timings[name] = round(now - t0, 3)
            t0 = now

        # Two pty descriptors per Mininet host and a netlink socket per namespace.
        netns.raise_open_files_limit()
        # What `netemu clean` needs after a kill -9: whom to kill, what to salvage.
        state = {
            "log": str(self.log_path) if self.log_path else None,
            "captures": str(self.captures.directory) if self.captures.points else None,
        }
        netns.write_state(self.run_name, {**state, "controller_pid": os.getpid()})
        self._open_log()
        # Links the run will need: plan ahead (cheap: no namespaces touched).
        ahead = min(self.duration_s if self.duration_s is not None else PLAN_AHEAD_S, PLAN_AHEAD_S)
        first_links = set()
        ahead_step = max(self.step_s * self.speed, PLAN_AHEAD_STEP_S)
        for epoch in self.planner.run(self.start_time, ahead, ahead_step):
            first_links.update(zip(epoch.up.keys(), epoch.up.kind.tolist(), strict=True))

        phase("plan")
        # A named network namespace per node, all in one batch. The node's
        # Mininet host (a shell inside it) is made when first asked for.
        self.net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
        netns.ip_batch([f"netns add {ns}" for ns in self.netns])
        phase("namespaces")
        # The shaper first: with the wire shaper, its engine makes the links' interfaces.
        self.shaper.start(self.netns, self.env, self.sockets)
        netns.write_state(
            self.run_name, {**state, "controller_pid": os.getpid(), "shaper_pids": self.shaper.pids}
        )
        phase("shaper")
        # Links, addresses, neighbours, limiters, sysctls: netlink batches per namespace.
        self._create_links(sorted(first_links), new_namespaces=self.netns)
        phase("configure")
        self._epochs = self.planner.run(
            self.start_time,
            self.duration_s if self.duration_s is not None else 1e12,
            self.step_s * self.speed,
        )
        self._wall0 = time.monotonic()
        self._advance()
        # The schedule starts once the network is up: the first epoch's set-up (routes
        # for every node) is bring-up, not an epoch that came late.
        self._wall0 = time.monotonic()
        # Bring-up's large temporary arrays leave the heap fragmented: give it back.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
        phase("first_epoch")

    def _create_links(
        self, keys_kinds: list[tuple[tuple[int, int], int]], new_namespaces: list[str] = ()
    ) -> None:
        """veth pairs straight into both namespaces, addressed, up, with rate limiters.

        Namespaces in ``new_namespaces`` get their own set-up in the same batches,
        so each namespace costs one round of programs.
        """
        new = [(k, kind) for k, kind in keys_kinds if k not in self.links]
        if not new and not new_namespaces:
            return
        n = len(self.names)
        pairs, per_ns, sends, found = [], {}, {}, {}
        for (a, b), kind in new:
            ia = addressing.interface_name(self.names[b])
            ib = addressing.interface_name(self.names[a])
            index_a, index_b = addressing.interface_index(b), addressing.interface_index(a)
            addr_a, addr_b = addressing.link_addresses(a, b, n)
            pairs.append(
                (
                    Port(self.netns[a], ia, index_a, addressing.mac_address(addr_a)),
                    Port(self.netns[b], ib, index_b, addressing.mac_address(addr_b)),
                )
            )
            u32_a, u32_b = addressing.link_address_u32([a, b], [b, a], n).tolist()
            per_ns.setdefault(a, []).append((index_a, u32_a, u32_b))
            per_ns.setdefault(b, []).append((index_b, u32_b, u32_a))
            fwd = Direction((a, b), self.netns[a], ia, self.netns[b], ib)
            bwd = Direction((a, b), self.netns[b], ib, self.netns[a], ia)
            params = self.topology.link_params(
                KINDS[kind], self.topology.nodes[a], self.topology.nodes[b]
            )
            rate = params.data_rate_gbps * 1000
            sends.setdefault(self.netns[a], []).append((fwd, rate))
            sends.setdefault(self.netns[b], []).append((bwd, rate))
            self.links[(a, b)] = Link(a, b, kind, params, fwd, bwd)
            found[(self.netns[a], ia)] = index_a
            found[(self.netns[b], ib)] = index_b
        self.shaper.make_links(pairs)
        position = {ns: i for i, ns in enumerate(self.netns)}
        fresh = {position[ns] for ns in new_namespaces}
        # A new node: a router without IPv6, its service address on its loopback.
        netns.write_sysctls({self.netns[i]: ROUTER_SYSCTLS for i in fresh})
        self.shaper.add_interfaces(found)
        for node in sorted(fresh | set(per_ns)):
            limiters = self.shaper.rate_limiters(sends.get(self.netns[node], []))
            self._configure_interfaces(node, node in fresh, per_ns.get(node, []), limiters)
        netns.run_all(
            [
                *netns.tc_jobs(
                    {ns: self.shaper.tc_lines(directions) for ns, directions in sends.items()}
                ),
                *netns.shell_jobs({ns: self.shaper.namespace_commands() for ns in new_namespaces}),
            ]
        )
        for (a, b), _kind in new:
            self._register_interface(a, b)
            self._register_interface(b, a)
        self.captures.add_links(self._capture_links([k for k, _ in new]))

    def _configure_interfaces(
        self, node: int, fresh: bool, links: list[tuple[int, int, int]], limiters: list
    ) -> None:
        """Addresses, interfaces up, static neighbours and the shaper's rate limiters
        through netlink (no program per namespace). ``links``: (interface index, own
        address, peer's address); ``fresh``: also the loopback with the node's
        service address. No ARP on the links: each end knows the other's MAC (02:00
        + its address), so a flow's first packet waits for no address resolution."""
        index, own, peer = np.array(links, dtype=np.int64).reshape(-1, 3).T
        batches = []
        if fresh:
            service = addressing.service_address_u32([node])
            batches += [encode_addresses([1], service, 32), encode_links_up([1], [False])]
        batches += [
            encode_addresses(index, own, 31),
            encode_links_up(index, np.ones(len(index), bool)),
            encode_neighbours(index, peer, addressing.mac_bytes(peer)),
        ]
        send_all(self.sockets(self.netns[node]), batches)
        send_requests(self.sockets(self.netns[node]), limiters)

    def _register_interface(self, node: int, peer: int) -> None:
        """Tell node's Mininet host (if made yet) about its interface toward peer."""
        from mininet.link import Intf

        host = self.net.nameToNode.get(self.names[node])
        if host is None:
            return
        intf = Intf(
            addressing.interface_name(self.names[peer]),
            node=host,
            up=None,
            moveIntfFn=_already_there,
        )
        intf.ip = addressing.link_addresses(node, peer, len(self.names))[node > peer]
        intf.prefixLen = 31

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
        while not self._stop.is_set():
            due = self._wall0 + (self.epoch_index + 1) * self.step_s
            # Sleep until the next epoch, waking when a link finishes acquiring.
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= due:
                    break
                ready = self.acquisition.next_ready()
                if ready is not None and now >= self._wall0 + ready:
                    with self._lock, self.shaper.elsewhere():
                        self._push(now, refresh=False)
                    continue
                wake = due if ready is None else min(due, self._wall0 + ready)
                self._stop.wait(wake - now)
            if self._stop.is_set():
                break
            late = time.monotonic() - due
            behind = []
            if late > self.step_s / 2:
                # Said, not hidden: the epoch applies now, and the next ones catch up.
                self.late_epochs += 1
                behind = [ev.late(late)]
            if not self._advance(behind):
                break
            netns.check_present(self.netns)
            if on_epoch:
                on_epoch(self)
        self.finished.set()

    def _advance(self, events: list[dict] = ()) -> bool:
        """Apply the next epoch (with ``events`` of the controller's own); False when
        the run's duration is over."""
        epoch = next(self._epochs, None)
        if epoch is None:
            return False
        with self._lock, self.shaper.elsewhere():
            self.epoch = epoch
            self.epoch_index += 1
            self._create_links(
                [
                    (k, kind)
                    for k, kind in zip(epoch.up.keys(), epoch.up.kind.tolist(), strict=True)
                    if k not in self.links
                ]
            )
            for link in self.links.values():
                link.distance_km = link.delay_ms = 0.0
            budget = epoch.budget
            rows = zip(
                epoch.up.keys(),
                epoch.up.distance_km.tolist(),
                delay_ms(epoch.up.distance_km).tolist(),
                zip(budget["loss_ab"].tolist(), budget["loss_ba"].tolist(), strict=True),
                zip(budget["fade_ab"].tolist(), budget["fade_ba"].tolist(), strict=True),
                strict=True,
            )
            for key, dist, delay, loss, fade in rows:
                link = self.links[key]
                link.distance_km, link.delay_ms = dist, delay
                link.budget_loss, link.fade = loss, fade
            self.handovers += sum(1 for e in epoch.events if e["type"] == "handover")
            # The plan's "link-ready" is its own acquisition model, in orbital time; live,
            # acquisition runs on the wall clock and _push says when a link is ready.
            planned = [e for e in epoch.events if e["type"] != "link-ready"]
            self._push(time.monotonic(), [*events, *planned])
        return True

    def _shape_changes(self, links: list[Link], states: list[str]) -> dict[Direction, Shape]:
        """Each link direction's shape now, as arrays; a :class:`Shape` only for the
        directions that changed (delay by a microsecond or more, anything else)."""
        fault_loss, fault_jitter = fault_arrays(list(self.links), self.epoch.broken.degraded)
        budget = np.array([(*lk.budget_loss, *lk.fade) for lk in links], float).reshape(-1, 4)
        shape = link_shapes(
            np.array([lk.distance_km for lk in links], float),
            [lk.params for lk in links],
            dict(zip(("loss_ab", "loss_ba", "fade_ab", "fade_ba"), budget.T, strict=True)),
            fault_loss,
            fault_jitter,
            blocked=np.array([s != "up" for s in states], bool),
        )
        i, j = self._applied.update(shape)
        columns = [shape[k][i, j].tolist() for k in shape]
        return {
            (links[a].forward, links[a].backward)[b]: Shape(**dict(zip(shape, values, strict=True)))
            for a, b, *values in zip(i.tolist(), j.tolist(), *columns, strict=True)
        }

    def _acquisition_times(self, key: tuple[int, int]) -> tuple[float, float]:
        p = self.links[key].params
        return p.acquisition_s, p.reacquisition_s

    def _push(self, now: float, events: list[dict] | None = None, refresh: bool = True) -> None:
        """Apply link states, shapes and routes for the current epoch at wall time ``now``
        (``refresh``: a new epoch, not just a link that finished acquiring)."""
        t0, started = time.perf_counter(), time.time()
        events = list(events or [])
        up = set(self.epoch.up.keys())
        carrying = self.acquisition.update(now - self._wall0, up)
        links = list(self.links.values())
        states = [
            "up" if key in carrying else "acquiring" if key in up else "down" for key in self.links
        ]
        for link, state in zip(links, states, strict=True):
            if state == "up" and link.state != "up" and self.epoch_index > 0:
                events.append(
                    ev.link_ready(self.names[link.a], self.names[link.b], KINDS[link.kind].value)
                )
            link.state = state
        changes = self._shape_changes(links, states)
        if changes:
            self.shaper.apply(changes)
            self.shapes.update(changes)
        self.shaper.check()
        t_links = time.perf_counter()

        live = [lk for lk in self.links.values() if lk.state == "up"]
        a = np.array([lk.a for lk in live], dtype=int)
        b = np.array([lk.b for lk in live], dtype=int)
        route_changes = self.router.update(
            a, b, np.array([lk.delay_ms for lk in live], dtype=float), refresh
        )
        prefix_changes = self.prefixes.update(self.router.hops, route_changes.node, a, b)
        self._install_routes(prefix_changes)
        if self.history is not None:
            carrying = {(lk.a, lk.b): lk.delay_ms for lk in live}
            self.history.append(
                time.time(), carrying, self.router.hops, route_changes, start_s=started
            )
        t_routes = time.perf_counter()
        #: How long the last update took: link shaping, routing (ms).
        self.last_update = {
            "links_ms": (t_links - t0) * 1000,
            "routes_ms": (t_routes - t_links) * 1000,
            "shape_changes": len(changes),
            "route_changes": len(route_changes),
            "prefix_changes": len(prefix_changes),
            "trees_recomputed": self.router.recomputed,
        }
        self.updates.append(
            {"epoch": self.epoch_index, "refresh": refresh, "unix_s": started, **self.last_update}
        )
        if route_changes and self.epoch_index > 0:
            events.append(ev.routes(len(route_changes)))
        wall = round(time.time(), 6)
        stamped = [{"time": iso_utc(self.epoch.time), "unix_s": wall, **e} for e in events]
        self.events += stamped
        for event in stamped:
            for listener in self.listeners:
                listener(event)
        self._write_log(
            now, stamped, len(changes), len(route_changes), (time.perf_counter() - t0) * 1000
        )

    def _install_routes(self, changes: PrefixChanges) -> None:
        """Aggregated routes toward service addresses (:mod:`netemu.routes.aggregation`): via
        the neighbour's link address, sourced from the node's own service address,
        or ``unreachable``. Encoded all at once, sent as one netlink batch per node."""
        n = len(self.names)
        node, dst, dst_len, via = changes.replace
        reach = via != UNREACHABLE
        s, v = node[reach], via[reach]
        batches = [
            (
                s,
                encode_replaces(
                    dst[reach],
                    addressing.link_address_u32(v, s, n),
                    addressing.interface_index(v),
                    addressing.service_address_u32(s),
                    dst_len[reach],
                ),
            ),
            (node[~reach], encode_unreachables(dst[~reach], dst_len[~reach])),
            (changes.delete[0], encode_deletes(changes.delete[1], changes.delete[2])),
        ]
        for one in np.union1d(node, changes.delete[0]):
            mine = []
            for owner, msgs in batches:  # each sorted by node
                lo, hi = np.searchsorted(owner, [one, one + 1])
                mine.append(msgs[lo:hi])
            send_all(self.sockets(self.netns[one]), mine)

    # -- results ---------------------------------------------------------------------
    def _open_log(self) -> None:
        if self.log_path is None:
            return
        self._log = RunLog(
            self.log_path,
            {
                "run": self.run_name,
                "topology": self.topology.name,
                "shaper": self.shaper.name,
                "start": iso_utc(self.start_time),
                "step_s": self.step_s,
                "speed": self.speed,
                "duration_s": self.duration_s,
            },
        )

    def _write_log(self, now, events, shape_changes, route_changes, apply_ms) -> None:
        if self._log is None:
            return
        loss = fade = jitter = []
        if applied := self._applied.table:  # as applied (none before the first link)
            loss = total_loss(applied).max(axis=1).tolist()
            fade = applied["fade_probability"].max(axis=1).tolist()
            jitter = applied["jitter_ms"][:, 0].tolist()
        links = (
            link_row(self.names[lk.a], self.names[lk.b], KINDS[lk.kind].value, lk.distance_km,
                     lk.delay_ms, lk.state, loss[i], fade[i], jitter[i])
            for i, lk in enumerate(self.links.values())
        )  # fmt: skip
        self._log.update(
            {
                "time": iso_utc(self.epoch.time),
                "wall_s": round(now - self._wall0, 6),
                "epoch": self.epoch_index,
            },
            links,
            {
                "events": events,
                "shape_changes": shape_changes,
                "route_changes": route_changes,
                "apply_ms": round(apply_ms, 3),
            },
        )

    # -- what users and tests ask ------------------------------------------------------
    def host(self, name: str):
        """The Mininet host of a node (made on first use: a shell in its namespace)."""
        with self._lock:
            host = self.net.nameToNode.get(name)
            if host is None:
                index = self.topology.by_name[name].index
                host = self.net.addHost(
                    name, cls=_netns_host_class(), netns=self.netns[index], env=self.env
                )
                for a, b in self.links:
                    if index in (a, b):
                        self._register_interface(index, b if index == a else a)
            return host

    def mininet(self):
        """The Mininet network with a host for every node (made now if not yet)."""
        for name in self.names:
            self.host(name)
        return self.net

    def address(self, name: str) -> str:
        """A node's service address (on its loopback; routes lead here)."""
        return addressing.service_address(self.topology.by_name[name].index)

    def now(self) -> datetime:
        """Orbital time of the epoch in force."""
        return self.epoch.time

    def route(self, src: str, dst: str) -> list[str] | None:
        """Nodes on the current path from ``src`` to ``dst`` (None: unreachable)."""
        with self._lock:
            p = path(
                self.router.hops, self.topology.by_name[src].index, self.topology.by_name[dst].index
            )
        return None if p is None else [self.names[i] for i in p]

    def path_delay_ms(self, src: str, dst: str) -> float | None:
        """Sum of the one-way propagation delays along the current path."""
        with self._lock:
            nodes = self.route(src, dst)
            if nodes is None:
                return None
            idx = [self.topology.by_name[x].index for x in nodes]
            return sum(
                self.links[(min(u, v), max(u, v))].delay_ms for u, v in itertools.pairwise(idx)
            )

    def delay_in_force_ms(self, src: str, dst: str, sent: float, received: float) -> float | None:
        """Path delay that applied to a packet sent and received at these unix times.

        Needs ``keep_history``. None when the network was changing while the
        packet was on its way (an update, from its first change to its last
        route, within 2 ms), or when there was no path.
        """
        done, began = self.history.times, self.history.starts
        i = bisect.bisect_right(done, sent - 0.002) - 1
        if i < 0 or (i + 1 < len(began) and began[i + 1] < received + 0.002):
            return None
        _, carrying, hops = self.history[i]
        p = path(hops, self.topology.by_name[src].index, self.topology.by_name[dst].index)
        if p is None:
            return None
        return sum(carrying[(min(u, v), max(u, v))] for u, v in itertools.pairwise(p))

    def inject(
        self,
        kind: str,
        target: str,
        for_s: float | None = None,
        loss_percent: float = 0.0,
        jitter_ms: float = 0.0,
    ) -> Fault:
        """A fault from the next epoch on (``for_s`` orbital seconds; None: for good), e.g.
        ``emu.inject("cut", "kep3-kep4", for_s=60)``; see :mod:`netemu.model.faults`."""
        target_nodes = parse_target(kind, target, "inject")
        with self._lock:
            now_s = (self.now() - self.start_time).total_seconds() if self.epoch else 0.0
            fault = Fault(kind, target_nodes, now_s + 1e-6, for_s, loss_percent, jitter_ms)
            self.planner.faults.add(fault)
        return fault

    def link_state(self, a: str, b: str) -> str:
        i, j = self.topology.by_name[a].index, self.topology.by_name[b].index
        link = self.links.get((min(i, j), max(i, j)))
        return "down" if link is None else link.state

    def status(self) -> dict:
        states = [lk.state for lk in self.links.values()]
        return {
            "time": self.epoch.time if self.epoch else self.start_time,
            "wall_s": time.monotonic() - self._wall0 if self._wall0 else 0.0,
            "epoch": self.epoch_index,
            "links_up": states.count("up"),
            "links_acquiring": states.count("acquiring"),
            "links": len(states),
            "handovers": self.handovers,
            "late_epochs": self.late_epochs,
            "shaper": self.shaper.name,
        }

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
            yield self

    def stop_controller(self) -> None:
        """Stop advancing epochs (the network stays as it is) and wait for the
        controller to finish its update."""
        self._stop.set()
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

    def wait(self, seconds: float) -> None:
        """Sleep while the controller runs; re-raise its error if it failed."""
        self.finished.wait(seconds)
        if self._error is not None:
            raise self._error

    def wait_until(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.wait(poll)
        return predicate()

    # -- teardown ----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the controller and remove everything this run created. Idempotent.
        Every step is tried even when one fails (out of memory, say); then
        :class:`TeardownError` names the first failure and how to remove the rest."""
        if not self.started:
            return
        with signals.deferred():  # a signal now is raised once all is removed
            self.stop_controller()
            failed = None
            for step in (self.shaper.stop, self._stop_captures, self._close_sockets,
                         self._stop_hosts, self._remove_namespaces, self._end_log):  # fmt: skip
                try:
                    step()
                except Exception as exc:  # said once all steps were tried
                    failed = failed or exc
            self.started = False
            if failed is not None:
                raise TeardownError(
                    f"removing run {self.run_name} failed: {describe(failed)}; "
                    f"netemu clean --run {self.run_name} removes what is left"
                ) from failed

    def _stop_captures(self) -> None:
        self.capture_files = self.captures.stop(self.events)

    def _close_sockets(self) -> None:
        self.sockets.close()

    def _stop_hosts(self) -> None:
        if self.net is None:
            return
        for host in self.net.hosts:
            if host.shell and host.shell.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.shell.pid, signal.SIGKILL)
                host.shell.wait()
            host.stdin.close()
            os.close(host.slave)
        self.net = None

    def _remove_namespaces(self) -> None:
        """The namespaces (with their links, qdiscs and rules), then the state file."""
        netns.delete(netns.namespaces(addressing.netns_name(self.run_name, "")))
        (netns.STATE_DIR / f"{self.run_name}.json").unlink(missing_ok=True)

    def _end_log(self) -> None:
        if self._log is not None:
            complete = self.finished.is_set() and self._error is None
            self._log.end(complete, len(self.events), self._error and describe(self._error))
            self._log = None


def _netns_host_class():
    from mininet.node import Host

    class NetnsHost(Host):
        """A Mininet host whose shell enters an existing named network namespace, its
        processes tagged with the run (``env``)."""

        def __init__(self, name: str, netns: str, env: dict[str, str], **params):
            self.netns_name = netns
            self.env = env
            super().__init__(name, inNamespace=False, **params)

        def _popen(self, cmd, **params):
            if getattr(self, "shell", None) is None and cmd[:1] == ["mnexec"]:
                cmd = [*cmd[:2], "ip", "netns", "exec", self.netns_name, *cmd[2:]]
            params.setdefault("env", self.env)
            return super()._popen(cmd, **params)

    return NetnsHost


def _already_there(intf, node) -> None:
    """Mininet moves new interfaces into the host's namespace; ours are created there."""


__all__ = ["Emulation", "preflight"]
