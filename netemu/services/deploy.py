"""Deploying the service applications onto a running emulation.

A :class:`Deployment` starts consumers, compute services and sensors on the
emulation's hosts through a runtime (:mod:`netemu.services.runtime`), gives
each a log under ``<results>/logs/``, waits until the receivers are ready,
and stops everything (SIGTERM, then kill; containers removed) when it ends,
also after an error.
"""

from __future__ import annotations

import functools
import select
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from netemu.kernel.containers import remove
from netemu.services.app import FRAGMENT_PORT
from netemu.services.runtime import App, PodmanRuntime, ProcessRuntime


class DeploymentError(RuntimeError):
    pass


@dataclass
class Deployment:
    emu: object  # netemu.live.emulation.Emulation
    results: Path
    runtime: ProcessRuntime | PodmanRuntime
    backend: str = "auto"
    hold_ms: float = 0.0
    apps: list[App] = field(default_factory=list)
    #: Wire id of each app -> its name in results (node, or node/instance).
    labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute: a container mounts it at the same path (podman refuses relative ones).
        self.logs = Path(self.results).absolute() / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # A node lost or rebooting takes its services with it (netemu.model.faults).
        self.emu.listeners.append(self._on_event)

    def _on_event(self, event: dict) -> None:
        if event["type"] not in ("fault", "fault-cleared"):
            return
        if event["fault"] not in ("lose", "reboot"):
            return
        node = event["target"]
        if event["type"] == "fault":
            victims = [a for a in self.apps if a.node == node and a.proc.poll() is None]
            work = functools.partial(self._kill, victims)
        elif event["fault"] == "reboot":
            work = functools.partial(self._restart, node)
        else:
            return
        # Not in the controller's thread: stopping and starting take a while.
        threading.Thread(target=work, name=f"netemu-fault-{node}", daemon=True).start()

    def _kill(self, apps: list[App]) -> None:
        for a in apps:
            a.stopped_by_fault = True
            a.stop(timeout=1.0)

    def _restart(self, node: str) -> None:
        for i, a in enumerate(list(self.apps)):
            if a.node == node and getattr(a, "stopped_by_fault", False):
                again = self.runtime.start(self.emu, a.node, a.app, a.args, a.stderr)
                again.label, again.endpoint, again.args = a.label, a.endpoint, a.args
                self.apps[i] = again

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, node: str, app: str) -> Path:
        return self.logs / f"{node}-{app}.jsonl"

    def _start(self, node: str, app: str, args: list[str], label: str, ready: bool) -> App:
        """Start ``app`` on ``node``; its wire id (``--id``) names ``label`` in results."""
        self.labels[len(self.labels)] = label
        path = self.log(label.replace("/", "_"), app)
        path.unlink(missing_ok=True)
        args = ["--id", str(len(self.labels) - 1), *args, "--log", str(path)]
        started = self.runtime.start(self.emu, node, app, args, path.with_suffix(".stderr"))
        started.label, started.args = label, args
        self.apps.append(started)
        if ready:
            _wait_ready(started, timeout=120)
        return started

    def consumer(self, node: str) -> App:
        return self._start(node, "consumer", ["--bind", self.emu.address(node)], node, ready=True)

    def compute(
        self,
        node: str,
        consumers: list[str],
        sensors: list[str],
        slots: int | None = None,
        port: int = FRAGMENT_PORT,
        first_gpu: int = 0,
        label: str | None = None,
    ) -> App:
        """An inference service; ``slots`` defaults to the node's GPUs (at least 1)."""
        slots = slots or max(1, self.emu.topology.by_name[node].gpus)
        app = self._start(
            node,
            "inference",
            [
                "--bind",
                self.emu.address(node),
                "--port",
                str(port),
                "--slots",
                str(slots),
                "--first-gpu",
                str(first_gpu),
                "--consumers",
                ",".join(self.emu.address(c) for c in consumers),
                "--sensors",
                ",".join(self.emu.address(s) for s in sensors),
                "--backend",
                self.backend,
                "--hold-ms",
                str(self.hold_ms),
            ],
            label or node,
            ready=True,
        )
        app.endpoint = f"{self.emu.address(node)}:{port}"
        return app

    def sensor(self, node: str, computes: list[App], **options) -> App:
        """A sensor sending to ``computes`` (nearest free first); options as the app's flags."""
        flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        return self._start(
            node,
            "sensor",
            [
                "--bind",
                self.emu.address(node),
                "--computes",
                ",".join(c.endpoint for c in computes),
                *flags,
            ],
            node,
            ready=False,
        )

    def wait(self, app: App, timeout: float) -> None:
        """Wait for an app to finish on its own (a sensor after its frames)."""
        end = time.monotonic() + timeout
        while app.proc.poll() is None and time.monotonic() < end:
            self._check_services(app)
            self.emu.wait(0.1)
        if app.proc.poll() is None:
            raise DeploymentError(f"{app.app} on {app.node} still running after {timeout:.0f} s")
        if app.proc.returncode != 0:
            raise DeploymentError(
                f"{app.app} on {app.node} failed ({app.proc.returncode}): {app.errors()}"
            )

    def _check_services(self, waiting_for: App) -> None:
        """A service or consumer that exits on its own (a crash, the OOM killer, a
        container killed; not a node's fault) ends the deployment: its results would
        silently stop."""
        for a in self.apps:
            if a is waiting_for or a.stopped_by_fault:
                continue
            if (code := a.proc.poll()) is not None:
                last = (a.errors().splitlines() or ["no message"])[-1]
                raise DeploymentError(
                    f"{a.app} on {a.label} exited on its own (status {code}): {last} "
                    f"(its stderr: {a.stderr})"
                )

    def stop(self) -> dict[str, int]:
        """Stop every app (receivers last, so they log what is still on its way)."""
        codes = {}
        for a in sorted(self.apps, key=lambda a: a.app != "sensor"):
            codes[f"{a.label}-{a.app}"] = a.stop()
        remove([a.container for a in self.apps if a.container])
        self.apps.clear()
        return codes


def _wait_ready(app: App, timeout: float) -> None:
    if select.select([app.proc.stdout], [], [], timeout)[0]:
        line = app.proc.stdout.readline()
        if "ready" in line:
            return
    app.stop()
    raise DeploymentError(f"{app.app} on {app.node} did not start: {app.errors()}")
