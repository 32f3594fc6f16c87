"""Users' containers on the emulated nodes: images, placement, GPUs, faults, teardown.

Each instance (placed by :mod:`netemu.model.placement`) runs joined to its node's
namespace, so the node's service address is its address and its packets take the
emulated links: a podman container, or (``engine: process``) a plain process. It
starts once the network is up; it has started when its output says its ``ready``
text, or, without one, when it has run for a second. Its output and errors go to
``<run folder>/containers/<instance>.out`` and ``.stderr``. It gets:

- ``/etc/hosts`` naming every node and every instance (at its node's address);
- ``NETEMU_RUN``, ``NETEMU_NODE``, ``NETEMU_ADDRESS``, ``NETEMU_INSTANCE``,
  ``NETEMU_INDEX``, ``NETEMU_PORT`` (the container's port plus the instance's place
  on its node: instances sharing a node differ by port), ``NETEMU_PEERS`` (every
  instance of the container, ``name=address:port``, comma-separated),
  ``NETEMU_GPU_SLOTS`` (the node's slots it holds), ``NETEMU_GPU_DEVICES`` and
  ``NETEMU_GPU_MAPPING`` (how slots map to this machine's GPUs: ``dedicated``,
  ``shared`` when the topology declares more slots than there are GPUs, ``none``);
- ``NETEMU_RESULTS``: a folder of its own (``<run folder>/containers/<instance>``)
  where it may write, e.g. stage records (docs/topology.md, ``containers:``);
- a process: ``NETEMU_HOSTS`` (that hosts file's path) and ``CUDA_VISIBLE_DEVICES``
  for its GPUs, as a container gets them from CDI.

Faults apply as to the node: ``lose`` stops its instances, ``reboot`` stops them and
starts them again when it is over. A restart policy (``on-failure``, ``always``)
starts an instance again after it exits. Every change is an event. Containers are
named ``netemu-<run>-<instance>`` and removed at teardown (``netemu clean`` finds them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from netemu.errors import InputError
from netemu.kernel.containers import PODMAN, ImageError, podman_works, provide_image, remove
from netemu.kernel.privileges import make_dirs
from netemu.model import events as ev
from netemu.model.placement import Instance, PlacementError, place
from netemu.model.schema import ContainerSpec

CDI_SPECS = (Path("/etc/cdi/nvidia.yaml"), Path("/var/run/cdi/nvidia.yaml"))
#: How long an instance gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 5
#: An instance that exits within this long of starting, with an error, did not start.
START_GRACE_S = 1.0


def gpu_devices(instances: list[Instance], real: int) -> tuple[dict[str, list[int]], str]:
    """This machine's GPU indices for each instance's slots, and the mapping: each slot
    its own GPU (``dedicated``), slots sharing GPUs in turn (``shared``: the topology
    declares more slots than there are), or ``none`` (no GPU here)."""
    if real == 0:
        return {i.name: [] for i in instances}, "none"
    slots = [(i.name, s) for i in instances for s in i.gpu_slots]
    mapping = "dedicated" if len(slots) <= real else "shared"
    devices: dict[str, list[int]] = {i.name: [] for i in instances}
    for g, (name, _) in enumerate(slots):
        if g % real not in devices[name]:
            devices[name].append(g % real)
    return devices, mapping


def hosts_file(addresses: dict[str, str]) -> str:
    """``/etc/hosts`` for the containers: every name at its address."""
    lines = ["127.0.0.1 localhost"] + [f"{a} {n}" for n, a in addresses.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Running:
    """One instance and its podman client (attached: it exits when the container does)."""

    instance: Instance
    spec: ContainerSpec
    container: str
    state: str = "waiting"  # waiting, running, exited, stopped (by a fault or the run)
    restarts: int = 0
    exit_status: int | None = None
    proc: subprocess.Popen | None = None
    stderr: Path | None = None
    output: Path | None = None
    said_from: int = 0  # where in ``output`` this start's words begin
    watcher: threading.Thread | None = field(default=None, repr=False)


class Workloads:
    def __init__(
        self,
        run_name: str,
        folder: Path,
        base_dir: Path,
        names: list[str],
        namespaces: list[str],
        addresses: list[str],
        gpus: dict[str, int],
        env: dict[str, str],
        tell: Callable[[list[dict]], None],
    ):
        """``base_dir``: where relative paths in specs start (the topology file's
        folder); ``tell(events)``: how the run hears of changes."""
        self.run_name = run_name
        self.folder = (folder / "containers").absolute()  # podman: a bind mount, not a volume
        self.base_dir = base_dir.absolute()
        self.node = {n: i for i, n in enumerate(names)}
        self.namespaces = namespaces
        self.addresses = addresses
        self.gpus = gpus
        self.env = env
        self.tell = tell
        self.specs: list[ContainerSpec] = []
        self.instances: list[Running] = []
        self._taken: dict[str, set[int]] = {}
        self._lock = threading.RLock()
        self._stopping = False
        self._started = False
        self.real_gpus = len(_cdi_gpus())
        self.mapping = "none"

    # -- what runs where -------------------------------------------------------------
    def add(self, specs: list[ContainerSpec], where: str = "containers") -> list[Instance]:
        """Place ``specs`` (InputError naming ``where`` and the key if they do not fit);
        started now if the network is up, else at :meth:`start`."""
        with self._lock:
            known = {r.instance.container for r in self.instances}
            for spec in specs:
                if spec.name in known:
                    raise InputError(f"{where}: container {spec.name!r} is there already")
            try:
                placed = place(specs, self.gpus, self._taken)
            except PlacementError as exc:
                raise InputError(str(exc), None, f"{where}: {exc.key}") from None
            by_name = {s.name: s for s in specs}
            self.specs += specs
            fresh = [
                Running(i, by_name[i.container], f"netemu-{self.run_name}-{i.name}") for i in placed
            ]
            self.instances += fresh
            if self._started:
                self._provide(specs)
                self._start(fresh)
        return placed

    def states(self) -> list[dict]:
        # Without the lock: a start holds it while it waits for readiness.
        return [
            {"name": r.instance.name, "container": r.instance.container,
             "node": r.instance.node, "state": r.state, "restarts": r.restarts,
             "exit_status": r.exit_status, "gpu_slots": list(r.instance.gpu_slots),
             "output": r.output, "stderr": r.stderr,
             "pid": r.proc.pid if r.proc else None}
            for r in list(self.instances)
        ]  # fmt: skip

    def remove(self, containers: list[str]) -> None:
        """Stop these containers' instances and forget them (names and GPU slots free)."""
        with self._lock:
            gone = [r for r in self.instances if r.instance.container in containers]
            self.instances = [r for r in self.instances if r not in gone]
            self.specs = [s for s in self.specs if s.name not in containers]
            for r in gone:
                self._taken.get(r.instance.node, set()).difference_update(r.instance.gpu_slots)
        self._stop_all(gone)
        remove(_in_podman(gone))

    # -- lifecycle -------------------------------------------------------------------
    def prepare(self) -> None:
        """Every image on this machine before anything is made (InputError if one
        cannot be had: nothing to tear down yet)."""
        self._provide(self.specs)

    def start(self) -> None:
        """The network is up: start every instance placed so far."""
        with self._lock:
            self._started = True
            self._start(self.instances)

    def stop(self) -> None:
        """Stop every instance (SIGTERM, then kill) and remove the containers."""
        with self._lock:
            self._stopping = True
            running = list(self.instances)
        self._stop_all(running)
        remove(_in_podman(running))

    def on_event(self, event: dict) -> None:
        """Faults apply to a node's instances: ``lose`` stops them, ``reboot`` too, and
        its end starts them again."""
        if event["type"] not in ("fault", "fault-cleared") or event["fault"] not in (
            "lose",
            "reboot",
        ):
            return
        victims = [r for r in self.instances if r.instance.node == event["target"]]
        if not victims:
            return
        if event["type"] == "fault":
            work = functools.partial(self._fault_stop, victims)
        elif event["fault"] == "reboot":
            work = functools.partial(self._fault_start, victims)
        else:
            return
        # Not in the controller's thread: podman takes a while.
        threading.Thread(target=work, name="netemu-workload-fault", daemon=True).start()

    # -- inside ------------------------------------------------------------------------
    def _provide(self, specs: list[ContainerSpec]) -> None:
        specs = [s for s in specs if s.engine == "podman"]
        if specs and not podman_works():
            raise InputError(
                f"container {specs[0].name!r}: containers need podman, which is not "
                "installed or does not work here (scripts/provision installs it)"
            )
        for spec in specs:
            archive = self._path(spec.archive) if spec.archive else None
            build = None
            if spec.build is not None:
                context = self._path(spec.build.context)
                build = (context, context / spec.build.containerfile)
            try:
                provide_image(spec.image, archive, build)
            except ImageError as exc:
                raise InputError(f"container {spec.name!r}: {exc}") from None

    def _path(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.base_dir / path

    def _start(self, which: list[Running]) -> None:
        """Launch these instances together, then let them settle (:meth:`_settle`)."""
        with self._lock:
            if self._stopping:
                return
            devices, self.mapping = gpu_devices([r.instance for r in self.instances],
                                                self.real_gpus)  # fmt: skip
            make_dirs(self.folder)
            hosts = self.folder / "hosts"
            hosts.write_text(hosts_file(self._names()))
            fresh = [r for r in which if r.proc is None or r.proc.poll() is not None]
            for r in fresh:
                r.state = "waiting"
                self._launch(r, hosts, devices[r.instance.name])
        # Waited for without the lock: a readiness may take minutes, and a stop (the
        # run's, or a fault's) must not wait for it. Launched together, so running at
        # about the same time: the grace starts when the last of them runs.
        podman = [r for r in fresh if r.spec.engine == "podman"]
        running = [r for r in fresh if r not in podman]
        running += [r for r in podman if _running_soon(r.container, r.proc)]
        settled = time.monotonic() + START_GRACE_S
        said = {}
        for r in running:
            if r.spec.ready:
                said[r.instance.name] = _said(r.output, r.said_from, r.spec.ready, r.proc,
                                              r.spec.ready_timeout_s)  # fmt: skip
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(max(0.0, settled - time.monotonic()))
        with self._lock:
            for r in fresh:
                if r.state == "waiting":  # not stopped meanwhile (a fault, the run)
                    self._settle(r, said.get(r.instance.name, True))

    def _names(self) -> dict[str, str]:
        out = {n: self.addresses[i] for n, i in self.node.items()}
        out |= {r.instance.name: self.addresses[self.node[r.instance.node]]
                for r in self.instances}  # fmt: skip
        return out

    def _launch(self, r: Running, hosts: Path, devices: list[int]) -> None:
        i, spec = r.instance, r.spec
        results = make_dirs(self.folder / i.name)
        r.stderr = self.folder / f"{i.name}.stderr"
        r.output = self.folder / f"{i.name}.out"
        netns = self.namespaces[self.node[i.node]]
        env = self._environment(i, devices)
        if spec.engine == "process":
            env |= {"NETEMU_RESULTS": str(results), "NETEMU_HOSTS": str(hosts)}
            if self.real_gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
            command = spec.command
            argv = ["nsenter", f"--net=/run/netns/{netns}", "--",
                    *(["sh", "-c", command] if isinstance(command, str) else command)]  # fmt: skip
            env, cwd = {**self.env, **spec.env, **env}, self._path(spec.workdir or ".")
        else:
            if r.proc is not None:  # started before: what is left of it (podman rm costs)
                remove([r.container])
            argv = podman_run(
                spec, i, r.container, netns, hosts, results, env,
                devices if any(p.exists() for p in CDI_SPECS) else [], self.base_dir,
            )  # fmt: skip
            env, cwd = self.env, None
        # Its readiness is in what it says from now on (a restart appends).
        r.said_from = r.output.stat().st_size if r.output.exists() else 0
        with open(r.stderr, "a") as err, open(r.output, "a") as out:
            r.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd,
                                      start_new_session=True)  # fmt: skip

    def _settle(self, r: Running, said: bool) -> None:
        """Still running after its grace, or once it said it is ready (one that fails as
        it starts, e.g. a missing model file, has exited with an error by then; one that
        does not say it is ready in time is stopped: WorkloadError), or done with
        status 0 (a short job). Then watched."""
        i = r.instance
        if not said and r.proc.poll() is None:
            self._stop_all([r])
            r.state = "exited"
            raise WorkloadError(
                f"container {i.name} on {i.node} did not say {r.spec.ready!r} within "
                f"{r.spec.ready_timeout_s:g} s (stopped; its output: {r.output})"
            )
        if r.proc.poll() is not None:
            r.state, r.exit_status = "exited", r.proc.returncode
            if r.exit_status == 0:  # a short job that ran and is done
                self.tell([ev.container(i.name, i.node, "started"),
                           ev.container(i.name, i.node, "exited", 0)])  # fmt: skip
                return
            last = (r.stderr.read_text().strip().splitlines() or ["no message"])[-1]
            raise WorkloadError(
                f"container {i.name} on {i.node} did not start ({r.spec.image or 'process'}, "
                f"exit status {r.exit_status}): {last}"
            )
        r.state, r.exit_status = "running", None
        self.tell([ev.container(i.name, i.node, "started")])
        r.watcher = threading.Thread(target=self._watch, args=(r, r.proc), daemon=True,
                                     name=f"netemu-watch-{i.name}")  # fmt: skip
        r.watcher.start()

    def _environment(self, i: Instance, devices: list[int]) -> dict[str, str]:
        peers = [
            f"{r.instance.name}={self.addresses[self.node[r.instance.node]]}:"
            f"{r.spec.port + r.instance.local}"
            for r in self.instances
            if r.instance.container == i.container
        ]
        spec = next(s for s in self.specs if s.name == i.container)
        return {
            "NETEMU_RUN": self.run_name,
            "NETEMU_NODE": i.node,
            "NETEMU_ADDRESS": self.addresses[self.node[i.node]],
            "NETEMU_INSTANCE": i.name,
            "NETEMU_INDEX": str(i.index),
            "NETEMU_PORT": str(spec.port + i.local),
            "NETEMU_PEERS": ",".join(peers),
            "NETEMU_GPU_SLOTS": ",".join(map(str, i.gpu_slots)),
            "NETEMU_GPU_DEVICES": ",".join(map(str, devices)),
            "NETEMU_GPU_MAPPING": self.mapping,
            "NETEMU_RESULTS": "/netemu/results",
        }

    def _watch(self, r: Running, proc: subprocess.Popen) -> None:
        """An instance's client exits with its container: say so, restart if asked."""
        status = proc.wait()
        with self._lock:
            if r.proc is not proc or r.state == "stopped" or self._stopping:
                return
            r.state, r.exit_status = "exited", status
        self.tell([ev.container(r.instance.name, r.instance.node, "exited", status)])
        policy = r.spec.restart
        if policy == "always" or (policy == "on-failure" and status != 0):
            time.sleep(1.0)  # as podman's own restart policy waits
            with self._lock:
                if self._stopping or r.state != "exited":
                    return
                r.restarts += 1
            with contextlib.suppress(WorkloadError):
                self._start([r])

    def _fault_stop(self, victims: list[Running]) -> None:
        self._stop_all(victims)
        self.tell([ev.container(r.instance.name, r.instance.node, "stopped") for r in victims])

    def _fault_start(self, victims: list[Running]) -> None:
        """The node is back: its instances start again (one that cannot is said)."""
        try:
            self._start(victims)
        except WorkloadError:  # the run goes on; the instance's event says it
            self.tell([ev.container(r.instance.name, r.instance.node, "exited", r.exit_status)
                       for r in victims if r.state == "exited"])  # fmt: skip

    def _stop_all(self, which: list[Running]) -> None:
        """SIGTERM to every one at once (podman stop; a process's group), kill what
        outlives the timeout."""
        with self._lock:
            procs = [(r, r.proc) for r in which]
            for r in which:
                r.state = "stopped"
        live = [(r, p) for r, p in procs if p is not None and p.poll() is None]
        if not live:
            return
        for r, proc in live:
            if r.spec.engine == "process":
                _signal_group(proc, signal.SIGTERM)
        if names := _in_podman([r for r, _ in live]):
            subprocess.run([*PODMAN, "stop", "-t", str(STOP_TIMEOUT_S), *names],
                           capture_output=True)  # fmt: skip
        for r, proc in live:
            try:
                proc.wait(STOP_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.kill()
                proc.wait()
            if r.spec.engine == "process":  # what it forked goes with it
                _signal_group(proc, signal.SIGKILL)
            r.exit_status = proc.returncode


class WorkloadError(RuntimeError):
    """A container that did not start (the run fails in one line)."""


def spec_from(kwargs: dict, where: str) -> ContainerSpec:
    """A container spec from Python keywords, checked as the file's would be."""
    try:
        return ContainerSpec(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "container"
        raise InputError(first["msg"], None, f"{where}: {key}") from None


def containers_file(path: Path) -> list[dict]:
    """The ``containers:`` list of a YAML file (``netemu run --containers``), each
    entry checked (InputError naming the file, the entry and the key)."""
    import yaml

    from netemu.errors import read_text

    try:
        data = yaml.safe_load(read_text(path, "containers file"))
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {' '.join(str(exc).split())}", path) from None
    entries = data.get("containers") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InputError("expected a 'containers:' list (docs/topology.md)", path)
    here = Path(path).resolve().parent
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("expected a mapping", path, f"containers[{i}]")
        spec = spec_from(entry, f"{path}: containers[{i}]")
        # Paths in this file are relative to it, not to the topology file.
        if spec.archive:
            entry["archive"] = str(here / spec.archive)
        if spec.build:
            entry["build"] = {**entry["build"], "context": str(here / spec.build.context)}
        entry["volumes"] = [v if v.startswith("/") else f"{here}/{v}" for v in spec.volumes]
    return entries


def podman_run(
    spec: ContainerSpec,
    i: Instance,
    name: str,
    netns: str,
    hosts: Path,
    results: Path,
    env: dict[str, str],
    devices: list[int],
    base_dir: Path,
) -> list[str]:
    """The ``podman run`` of one instance (attached: the client lives as long as it)."""
    volumes = [f"{hosts}:/etc/hosts:ro", f"{results}:/netemu/results:rw"]
    for v in spec.volumes:
        host, _, rest = v.partition(":")
        host_path = Path(host) if Path(host).is_absolute() else base_dir / host
        volumes.append(f"{host_path}:{rest}")
    argv = [
        *PODMAN, "run", "--rm", "--name", name, "--hostname", i.name,
        "--network", f"ns:/run/netns/{netns}", "--no-hosts",
        "--security-opt", "label=disable",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
        *(x for v in volumes for x in ("-v", v)),
        *(x for k, v in {**spec.env, **env}.items() for x in ("-e", f"{k}={v}")),
        *(["-w", spec.workdir] if spec.workdir else []),
        *(["--cpus", str(spec.cpus)] if spec.cpus else []),
        *(["--memory", f"{spec.memory_mib}m"] if spec.memory_mib else []),
        *(x for d in devices for x in ("--device", f"nvidia.com/gpu={d}")),
        spec.image,
    ]  # fmt: skip
    if isinstance(spec.command, str):
        argv += ["sh", "-c", spec.command]
    elif spec.command:
        argv += spec.command
    return argv


def _in_podman(which: list[Running]) -> list[str]:
    return [r.container for r in which if r.spec.engine == "podman"]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to a process's group (its own session: what it forked too)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _said(path: Path, start: int, text: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until the output in ``path`` from byte ``start`` on holds ``text`` (True), or
    the process exits or ``timeout_s`` passes (False)."""

    def said() -> bool:
        with contextlib.suppress(OSError), path.open("rb") as f:
            f.seek(start)
            return text.encode() in f.read()
        return False

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if said():
            return True
        if proc.poll() is not None:
            return said()  # its last words before it exited
        time.sleep(0.02)
    return False


def _running_soon(container: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> bool:
    """Wait until podman says the container runs (True), or the client exited (False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        state = subprocess.run(
            [*PODMAN, "inspect", "-f", "{{.State.Status}}", container],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if state in ("running", "exited"):
            return state == "running" or proc.poll() is None
        time.sleep(0.1)
    return proc.poll() is None


def _cdi_gpus() -> list[int]:
    """GPU indices the CDI spec names (nvidia-ctk cdi generate), none without it."""
    for spec in CDI_SPECS:
        with contextlib.suppress(OSError):
            text = spec.read_text()
            return sorted({int(x) for x in re.findall(r"name:\s*\"?(\d+)\"?", text)})
    return []
