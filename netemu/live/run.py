"""A run: its name, its folder, what it leaves for ``netemu clean``, who owns its files.

Every caller (the command line, the scenarios, the pytest plugin, a script) makes
its run here, so a run's files are always where this module says:

- its **name** (the topology's unless given): its namespaces are
  ``netemu-<name>-<node>`` and every process it starts carries ``NETEMU_RUN=<name>``
  in its environment (:data:`netemu.kernel.netns.RUN_ENV`);
- its **folder**, ``results/<name>/`` unless told: ``run.jsonl`` (the run log, when
  one is kept), ``captures/`` (pcapng files), and what a scenario adds;
- its **state file**, ``/run/netemu/<name>.json``: whom ``netemu clean`` kills after a
  ``kill -9`` and what it salvages (the log, the captures);
- under ``sudo``, its files belong to the user who ran it (:meth:`Run.hand_over`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from netemu.errors import InputError
from netemu.kernel import netns
from netemu.kernel.privileges import chown_to_invoker, chown_tree_to_invoker
from netemu.routes import addressing

#: Where runs' folders go, relative to the working directory.
RESULTS = Path("results")
LOG_NAME = "run.jsonl"


@dataclass(frozen=True)
class Run:
    name: str
    folder: Path
    log: Path | None  # None: no run log
    captures: Path

    @classmethod
    def make(
        cls,
        topology_name: str,
        name: str | None = None,
        *,
        folder: str | Path | None = None,
        log: str | Path | bool | None = None,
        captures: str | Path | None = None,
    ) -> Run:
        """A run of ``topology_name``. ``log``: a path, True (``run.jsonl`` in the
        folder) or None/False (no log); ``folder``: ``results/<name>`` unless given,
        or the log's folder when only a log path is; ``captures``: ``<folder>/captures``."""
        name = name or addressing.default_run_name(topology_name)
        if not all(c.isalnum() or c in "_." for c in name) or not 0 < len(name) <= 40:
            raise InputError(f"run name {name!r}: use letters, digits, '_' or '.' (at most 40)")
        if isinstance(log, str | Path):
            log = Path(log)
            where = Path(folder) if folder else log.parent
        else:
            where = Path(folder) if folder else RESULTS / name
            log = where / LOG_NAME if log else None
        return cls(name, where, log, Path(captures) if captures else where / "captures")

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process the run starts (tagged with the run)."""
        return netns.run_env(self.name)

    def namespace(self, node: str) -> str:
        return addressing.netns_name(self.name, node)

    def check_unused(self) -> None:
        """Refuse a name whose namespaces are still there (a run killed before)."""
        left = netns.namespaces(self.namespace(""))
        if left:
            raise InputError(
                f"run {self.name!r} left {len(left)} namespaces behind (e.g. {left[0]}): remove "
                f"them with 'sudo netemu clean --run {self.name}' or choose another --name"
            )

    def record(self, shaper_pids: list[int] = (), captures: bool = False) -> None:
        """Write the state file: this controller and the shaper's processes (whom
        ``netemu clean`` kills), the log and the captures (what it salvages)."""
        netns.write_state(
            self.name,
            {
                "log": str(self.log) if self.log else None,
                "captures": str(self.captures) if captures else None,
                "controller_pid": os.getpid(),
                "shaper_pids": list(shaper_pids),
            },
        )

    def forget(self) -> None:
        """The run is removed: its state file goes too."""
        (netns.STATE_DIR / f"{self.name}.json").unlink(missing_ok=True)

    def hand_over(self) -> None:
        """Under sudo, the run's folder (and the log, wherever it is) to the user."""
        chown_tree_to_invoker(self.folder)
        if self.log is not None:
            chown_to_invoker(self.log)
