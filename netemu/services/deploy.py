"""Deploying the tracking service's applications onto a running emulation.

A :class:`Deployment` runs consumers, compute services and sensors as containers of
the services image (:mod:`netemu.services.image`), through the emulation's
workloads as users' containers run (:mod:`netemu.live.workloads`: placement and
GPU slots, readiness, faults, restarts, teardown), or as processes where podman
does not work. Each application gets a log under ``<results>/logs/``; a service
that exits on its own ends the deployment; everything is stopped when it ends
(sensors first, so receivers log what is still on its way), also after an error.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from netemu.services.app import FRAGMENT_PORT
from netemu.services.image import REPO, services_image


class DeploymentError(RuntimeError):
    pass


@dataclass
class Service:
    """One application of a deployment, and the emulation's container it runs as."""

    app: str  # consumer, inference, sensor
    node: str
    label: str  # what results call it (node, or node/instance)
    container: str  # its name in emu.containers() (one instance: <container>-0)
    endpoint: str = ""  # ADDR:PORT where it receives, for a compute service


@dataclass
class Deployment:
    emu: object  # netemu.live.emulation.Emulation
    results: Path
    engine: str = "process"  # or podman (netemu.services.image.choose_engine)
    backend: str = "auto"
    hold_ms: float = 0.0
    image: str | None = None  # podman: the services image for this code unless given
    services: list[Service] = field(default_factory=list)
    #: Wire id of each app -> its name in results (node, or node/instance).
    labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute: a container mounts it at the same path (podman refuses relative ones).
        self.logs = Path(self.results).absolute() / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.engine == "podman" and self.image is None:
            self.image = services_image()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, node: str, app: str) -> Path:
        return self.logs / f"{node}-{app}.jsonl"

    def _start(self, node: str, app: str, args: list[str], label: str, gpus: int = 0) -> Service:
        """``app`` on ``node``, started once it says it is ready; its wire id (``--id``)
        names ``label`` in results."""
        wire = len(self.labels)
        self.labels[wire] = label
        path = self.log(label.replace("/", "_"), app)
        path.unlink(missing_ok=True)
        command = ["-m", f"netemu.services.{app}", "--id", str(wire), *args, "--log", str(path)]
        where = {"nodes": node, "gpus": gpus, "ready": "ready", "where": f"{app} on {label}"}
        service = Service(app, node, label, f"{app}{wire}")
        self.services.append(service)
        if self.engine == "podman":
            self.emu.add_container(service.container, self.image, command=["python3", *command],
                                   volumes=[f"{self.logs}:{self.logs}:rw"], **where)  # fmt: skip
        else:
            self.emu.add_container(service.container, engine="process",
                                   command=[sys.executable, *command],
                                   env={"PYTHONPATH": str(REPO)}, **where)  # fmt: skip
        return service

    def consumer(self, node: str) -> Service:
        return self._start(node, "consumer", ["--bind", self.emu.address(node)], node)

    def compute(
        self,
        node: str,
        consumers: list[str],
        sensors: list[str],
        slots: int | None = None,
        port: int = FRAGMENT_PORT,
        label: str | None = None,
    ) -> Service:
        """An inference service with a worker per slot; ``slots`` defaults to the node's
        GPU slots (at least 1), which it holds (each worker the GPU its slot maps to)."""
        gpus = self.emu.topology.by_name[node].gpus
        slots = slots or max(1, gpus)
        service = self._start(
            node,
            "inference",
            [
                "--bind", self.emu.address(node),
                "--port", str(port),
                "--slots", str(slots),
                "--consumers", ",".join(self.emu.address(c) for c in consumers),
                "--sensors", ",".join(self.emu.address(s) for s in sensors),
                "--backend", self.backend,
                "--hold-ms", str(self.hold_ms),
            ],
            label or node,
            gpus=min(slots, gpus),
        )  # fmt: skip
        service.endpoint = f"{self.emu.address(node)}:{port}"
        return service

    def sensor(self, node: str, computes: list[Service], **options) -> Service:
        """A sensor sending to ``computes`` (nearest free first); options as the app's flags."""
        flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        return self._start(
            node,
            "sensor",
            [
                "--bind", self.emu.address(node),
                "--computes", ",".join(c.endpoint for c in computes),
                *flags,
            ],
            node,
        )  # fmt: skip

    def state(self, service: Service) -> dict:
        """Its instance as the emulation sees it (``emu.containers()``)."""
        name = f"{service.container}-0"
        return next(c for c in self.emu.containers() if c["name"] == name)

    def wait(self, service: Service, timeout: float) -> None:
        """Wait for an app to finish on its own (a sensor after its frames)."""
        end = time.monotonic() + timeout
        while (st := self.state(service))["state"] != "exited" and time.monotonic() < end:
            self._check_services(service)
            self.emu.wait(0.1)
        if st["state"] != "exited":
            raise DeploymentError(
                f"{service.app} on {service.node} still running after {timeout:.0f} s"
            )
        if st["exit_status"] != 0:
            raise DeploymentError(
                f"{service.app} on {service.node} failed ({st['exit_status']}): "
                f"{_last_line(st['stderr'])}"
            )

    def _check_services(self, waiting_for: Service) -> None:
        """A service or consumer that exits on its own (a crash, the OOM killer, a
        container killed; not a node's fault, which stops it) ends the deployment: its
        results would silently stop."""
        states = {c["name"]: c for c in self.emu.containers()}  # one snapshot for all
        for s in self.services:
            st = states[f"{s.container}-0"]
            if s is not waiting_for and st["state"] == "exited":
                raise DeploymentError(
                    f"{s.app} on {s.label} exited on its own (status {st['exit_status']}): "
                    f"{_last_line(st['stderr'])} (its stderr: {st['stderr']})"
                )

    def stop(self) -> None:
        """Stop every app: sensors first, then the receivers (they log what is still on
        its way), and forget them."""
        sensors = [s.container for s in self.services if s.app == "sensor"]
        rest = [s.container for s in self.services if s.app != "sensor"]
        for group in (sensors, rest):
            if group:
                self.emu.remove_container(*group)
        self.services.clear()


def _last_line(path: Path | None) -> str:
    try:
        return (path.read_text().strip().splitlines() or ["no message"])[-1]
    except (OSError, AttributeError):
        return "no message"
