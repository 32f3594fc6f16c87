"""netemu's pytest plugin: live emulations as fixtures for network regression suites.

Installed with netemu (entry point ``pytest11``), so a suite needs no
conftest::

    @pytest.mark.netemu("topologies/kepler.yaml", speed=10, scope="module")
    def test_c2_reaches_the_aircraft_fast(netemu_network):
        netemu_network.assert_one_way_delay("c2_bodo", "patrol1", below_ms=40)

The ``netemu_network`` fixture (a :class:`netemu.testing.network.Network`; also
named ``network``, which a suite's own conftest may already define and so hide:
use ``netemu_network``) brings a topology
up as the closest ``netemu`` marker says: ``netemu(topology, *, start=None,
speed=1, step=1, shaper="auto", scope="function", capture=(), overrides=None)``
(or a dict of the same as ``request.param``, for indirect parametrisation).
Tests with the same marker and scope (``function``, ``class``, ``module`` or
``session``) share one emulation, whose orbital time runs on from one test to
the next. It is torn down after the last test that shares it, also when a test
fails, on Ctrl-C and on SIGTERM. Its log and captures go to
``<--netemu-results>/<test or scope>/``; they are kept when a test that used
it fails (or with ``--netemu-keep``), named in the report (and in JUnit XML as
the property ``netemu_artifacts``), and removed otherwise. The options have ini
equivalents (``netemu_results``, ``netemu_name``, ``netemu_keep``; the command
line wins), and the report's header says what the suite ran on: netemu's
version, the shaper, the container engine, the GPUs and whether it ran as root.

Markers ``needs_root``, ``needs_netns``, ``needs_netem``, ``needs_podman`` and
``needs_gpu`` skip a test with the reason where that is absent, and never
otherwise; the fixture implies root and network namespaces.

With ``--netemu-cluster ADDRESS`` (a Ray cluster's, ``auto`` for ``RAY_ADDRESS``;
ini ``netemu_cluster``) every emulation runs over the cluster's netemu machines
(:class:`netemu.cluster.emulation.ClusterEmulation`, docs/scaling.md) and the
same tests measure it: their probes, pings and iperf3 run in the nodes on the
nodes' machines, and the driver's run log and captures are kept as on one
machine; a marker's ``shaper`` holds for every machine (netem only where all
their kernels have it).

pytest-xdist works: each emulation's name carries the worker's id, so
namespaces, interfaces and results never collide. All workers share the
machine's cores, though, and delay fidelity (~0.5 ms) wants a core for the
shaper: give timing-tight suites at most one worker per two cores.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netemu.errors import InputError

SCOPES = ("function", "class", "module", "session")
_USED = pytest.StashKey[list]()


@dataclass(frozen=True)
class Spec:
    """What a test asked for: a topology brought up a certain way, shared within a scope."""

    topology: Path
    start: str | None = None
    speed: float = 1.0
    step: float = 1.0
    shaper: str = "auto"
    scope: str = "function"
    capture: tuple[str, ...] = ()
    overrides: str = ""  # JSON, to stay hashable

    @classmethod
    def make(cls, rootdir: Path, topology, **options) -> Spec:
        if options.get("scope", "function") not in SCOPES:
            raise pytest.UsageError(f"netemu marker: scope must be one of {', '.join(SCOPES)}")
        path = Path(topology)
        options["capture"] = tuple(options.get("capture", ()))
        options["overrides"] = json.dumps(options.get("overrides") or {}, sort_keys=True)
        return cls(path if path.is_absolute() else rootdir / path, **options)


@functools.cache
def missing(need: str) -> str | None:
    """Why a test that needs ``need`` cannot run here (None: it can)."""
    if need == "root":
        return None if os.geteuid() == 0 else "needs root (run pytest with sudo)"
    if need == "netns":
        if os.geteuid() != 0:
            return "needs root for network namespaces (run pytest with sudo)"
        ok = subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
        return None if ok else "this machine cannot make network namespaces"
    if need == "netem":
        from netemu.shaping.netem import netem_available

        return None if netem_available() else "this kernel has no sch_netem"
    if need == "podman":
        from netemu.kernel.containers import podman_works

        if shutil.which("podman") is None:
            return "no container engine (podman) installed"
        return None if podman_works() else "podman is installed but does not work here"
    if need == "gpu":
        from netemu.kernel.gpus import cuda_devices

        return None if cuda_devices() else "no CUDA GPU visible"
    raise ValueError(need)


@dataclass
class _Live:
    """A running emulation and the tests that share it."""

    network: object  # netemu.testing.network.Network
    spec: Spec
    scope_id: str
    artifacts: Path
    failed: bool = False


class NetemuPlugin:
    def __init__(self, config: pytest.Config):
        self.config = config
        default = config.rootpath / "results" / "pytest"
        results = config.getoption("netemu_results") or config.getini("netemu_results")
        self.results = Path(results) if results else default
        if not self.results.is_absolute():
            self.results = config.rootpath / self.results
        self.keep = config.getoption("netemu_keep") or config.getini("netemu_keep")
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        #: The Ray cluster every emulation runs over (None: this machine).
        self.cluster = config.getoption("netemu_cluster") or config.getini("netemu_cluster")
        self.live: dict[tuple[Spec, str], _Live] = {}
        self.counter = itertools.count()

    # -- emulations ------------------------------------------------------------------
    def network(self, request: pytest.FixtureRequest):
        for need in ("root", "netns"):
            if reason := missing(need):
                pytest.skip(reason)
        spec = self._spec(request)
        scope_id = _scope_id(request.node, spec.scope)
        key = (spec, scope_id)
        live = self.live.get(key)
        if live is None:
            live = self.live[key] = self._start(spec, scope_id)
        request.node.stash.setdefault(_USED, []).append(live)
        request.node.user_properties.append(("netemu_artifacts", str(live.artifacts)))
        if spec.scope == "function":
            request.addfinalizer(lambda: self._stop(key))
        return live.network

    def _spec(self, request: pytest.FixtureRequest) -> Spec:
        root = self.config.rootpath
        if hasattr(request, "param"):
            return Spec.make(root, **request.param)
        marker = request.node.get_closest_marker("netemu")
        if marker is None:
            raise pytest.UsageError(
                f"{request.node.nodeid}: the netemu_network fixture needs "
                "@pytest.mark.netemu(TOPOLOGY, "
                "...) or indirect parametrisation"
            )
        return Spec.make(root, *marker.args, **marker.kwargs)

    def _start(self, spec: Spec, scope_id: str) -> _Live:
        from netemu.model.topology import load_topology
        from netemu.testing.network import Network

        prefix = self.config.getoption("netemu_name") or self.config.getini("netemu_name")
        run = f"{prefix}{self.worker}_{os.getpid() % 10000}_{next(self.counter)}"
        artifacts = self.results / re.sub(r"[^\w.-]+", "_", scope_id).strip("_")
        shutil.rmtree(artifacts, ignore_errors=True)
        try:
            topology = load_topology(spec.topology, json.loads(spec.overrides))
            emu = self._emulation(spec, topology, run, artifacts)
        except InputError as exc:
            raise pytest.UsageError(f"netemu marker: {exc}") from None
        emu.start()
        emu.start_controller()
        return _Live(Network(emu, artifacts), spec, scope_id, artifacts)

    def _emulation(self, spec: Spec, topology, run: str, artifacts: Path):
        """The emulation a spec asks for: on this machine, or over the cluster."""
        start = _utc(spec.start) if spec.start else None
        if self.cluster:
            from netemu.cluster.emulation import ClusterEmulation

            address = None if self.cluster == "auto" else self.cluster
            return ClusterEmulation(
                topology, address, start=start, step_s=spec.step, speed=spec.speed,
                run_name=run, keep_history=True, log_path=artifacts / "run.jsonl",
                shaper=spec.shaper, capture=list(spec.capture),
                capture_dir=artifacts / "captures",
            )  # fmt: skip
        from netemu.live.emulation import Emulation

        return Emulation(
            topology,
            start=start,
            step_s=spec.step,
            speed=spec.speed,
            shaper=spec.shaper,
            run_name=run,
            folder=artifacts,
            log_path=True,
            keep_history=True,
            capture=list(spec.capture),
        )

    def _stop(self, key) -> None:
        live = self.live.pop(key, None)
        if live is None:
            return
        live.network.emu.stop()  # under sudo, kept files are then the user's
        if not (live.failed or self.keep):
            shutil.rmtree(live.artifacts, ignore_errors=True)

    def stop_all(self) -> None:
        for key in list(self.live):
            self._stop(key)

    # -- hooks -------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        report = yield
        if report.failed:
            for live in item.stash.get(_USED, []):
                live.failed = True
                report.sections.append(
                    (
                        "netemu",
                        f"emulation {live.network.emu.run_name} of {live.spec.topology.name}: "
                        f"log and captures kept in {live.artifacts}",
                    )
                )
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None):
        yield  # the test's own fixtures first
        for key, live in list(self.live.items()):
            if live.spec.scope == "function":
                continue
            if nextitem is None or _scope_id(nextitem, live.spec.scope) != live.scope_id:
                self._stop(key)

    def pytest_sessionfinish(self) -> None:
        self.stop_all()


def _scope_id(item: pytest.Item, scope: str) -> str:
    if scope == "session":
        return "session"
    if scope == "module":
        return item.nodeid.split("::")[0]
    if scope == "class":
        return item.nodeid.rsplit("::", 1)[0] if item.cls else item.nodeid.split("::")[0]
    return item.nodeid


def _utc(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # pytest then finishes the session: emulations are stopped


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netemu", "netemu live emulations")
    group.addoption(
        "--netemu-results",
        metavar="DIR",
        help="where emulation logs and captures go (default: results/pytest)",
    )
    group.addoption(
        "--netemu-name",
        metavar="PREFIX",
        help="the emulations' run names begin with this (default: pt): a suite's "
        "namespaces and processes are found by it",
    )
    group.addoption(
        "--netemu-keep",
        action="store_true",
        default=None,
        help="keep logs and captures of passing tests too",
    )
    group.addoption(
        "--netemu-cluster",
        metavar="ADDRESS",
        help="run every emulation over the netemu machines of the Ray cluster at ADDRESS "
        "(host:6379, or auto for RAY_ADDRESS; docs/scaling.md)",
    )
    parser.addini("netemu_cluster", "as --netemu-cluster")
    parser.addini("netemu_results", "as --netemu-results (relative to the rootdir)")
    parser.addini("netemu_name", "as --netemu-name", default="pt")
    parser.addini("netemu_keep", "as --netemu-keep", type="bool", default=False)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What a CI log's run had: netemu, shaper, container engine, GPUs, root."""
    import netemu
    from netemu.kernel.containers import podman_works
    from netemu.kernel.gpus import cuda_devices
    from netemu.shaping.netem import netem_available

    shaper = "netem (sch_netem)" if netem_available() else "wire (no sch_netem in this kernel)"
    engine = "podman" if podman_works() else "none (services run as processes)"
    gpus = ", ".join(cuda_devices()) or "none"
    root = "yes" if os.geteuid() == 0 else "no (live tests skip)"
    cluster = config.getoption("netemu_cluster") or config.getini("netemu_cluster")
    if cluster:
        shaper = f"auto (netem if every machine has it) over the Ray cluster at {cluster}"
    return [f"netemu {netemu.__version__}: shaper {shaper}; containers {engine}; "
            f"GPUs {gpus}; root {root}"]  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "netemu(topology, *, start=None, speed=1, step=1, shaper='auto', scope='function', "
        "capture=(), overrides=None): the emulation the network fixture brings up",
    )
    for need in ("root", "netns", "netem", "podman", "gpu"):
        config.addinivalue_line("markers", f"needs_{need}: skip where {need} is absent")
    plugin = NetemuPlugin(config)
    config.pluginmanager.register(plugin, "netemu-plugin")
    atexit.register(plugin.stop_all)  # whatever happens to the session
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: pytest stops, emulations go
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _sigterm)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for need in ("root", "netns", "netem", "podman", "gpu"):
        if item.get_closest_marker(f"needs_{need}") and (reason := missing(need)):
            pytest.skip(reason)


@pytest.fixture
def netemu_network(request: pytest.FixtureRequest):
    """A live emulation as the test's ``netemu`` marker describes it (a testing Network)."""
    return request.config.pluginmanager.get_plugin("netemu-plugin").network(request)


@pytest.fixture
def network(request: pytest.FixtureRequest):
    """``netemu_network`` under its first name (a suite's own ``network`` hides it)."""
    return request.config.pluginmanager.get_plugin("netemu-plugin").network(request)
