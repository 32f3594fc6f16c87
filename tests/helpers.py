"""Helpers shared by netemu's tests, unit and live (fixtures live in conftest.py).

Unit tests need no root; a live test (``needs_root``, the ``live`` marker) runs real
namespaces and packets, and the helpers below ``needs_root`` are for those.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netemu.cluster.agent import CAPTURE_SPOOL
from netemu.kernel import containers, netns
from netemu.model.topology import load_topology
from netemu.testing.network import Network, received

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"

# Vallado's SGP4 verification satellite 00005 ("Revisiting Spacetrack Report #3").
VANGUARD_L1 = "1 00005U 58002B   00179.78495062  .00000023  00000-0  28098-4 0  4753"
VANGUARD_L2 = "2 00005  34.2682 348.7242 1859667 331.7664  19.3264 10.82419157413667"


def run_netemu(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the netemu CLI as a user would, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "netemu.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=300,
    )


def train_access_yaml(start: str) -> str:
    """Topology text: the four-satellite train (no ISLs) over ground station gs_north."""
    return f"""
name: t
start: {start}
satellites:
  - tle: {{file: {TOPOLOGIES / "train.tle"}}}
    names: "t{{n}}"
ground_stations:
  - {{name: gs_north, lat_deg: 12.1, lon_deg: 71.9, altitude_km: 0.0}}
isl: {{policy: none}}
"""


#: A live test: real namespaces and packets, so root (tests/conftest.py skips it
#: without); ``pytest -m "not live"`` runs the unit tests alone.
needs_root = pytest.mark.live


def train_topology(
    tmp_path: Path, extra: str = "", start: str | None = None, gpus: int | None = None
):
    """topologies/train.yaml with extra YAML appended (e.g. link_defaults), its
    satellites' GPUs set to ``gpus`` if given."""
    text = (
        (TOPOLOGIES / "train.yaml")
        .read_text()
        .replace("file: train.tle", f"file: {TOPOLOGIES / 'train.tle'}")
    )
    if start:
        text = text.replace("start: 2026-06-21T03:05:00Z", f"start: {start}")
    if gpus is not None:
        text = text.replace("compute: {gpus: 2,", f"compute: {{gpus: {gpus},")
    path = tmp_path / "train.yaml"
    path.write_text(text + "\n" + extra)
    return load_topology(path)


def start_receiver(emu, node: str, duration: float, port: int = 9000) -> subprocess.Popen:
    return Network(emu).probe_receiver(node, duration, port)


def send(emu, src: str, dst: str, count: int, interval: float, port: int = 9000):
    return Network(emu).probe_sender(src, dst, count, interval, port=port)


def stream(emu, src: str, dst: str, count: int, interval: float) -> list[dict]:
    """Send ``count`` timestamped datagrams from src to dst; return those that arrived."""
    # Listen long enough for a slow sender (Python under QEMU runs ~10x slower).
    rx = start_receiver(emu, dst, duration=1.5 * count * interval + 2.0)
    tx = send(emu, src, dst, count=count, interval=interval)
    got = received(rx)
    tx.wait()
    return got


#: How long the last probe datagram may still be on its way (the tests' paths: < 0.2 s).
IN_FLIGHT_S = 1.0


def one_way_ms(
    src_netns: str, dst_netns: str, dst_address: str, count: int, interval: float
) -> list[float]:
    """Probe datagrams between two namespaces outside an emulation (the cluster's
    machines): the one-way delays (ms) of those that arrived, kernel stamps both ends."""
    probe = [sys.executable, "-m", "netemu.testing.probe"]
    # The receiver listens until the sender is done and the last datagram is in (a sender
    # slow to start, Python under QEMU, would otherwise lose its last datagrams).
    rx = subprocess.Popen(
        ["ip", "netns", "exec", dst_netns, *probe, "recv", "--bind", dst_address,
         "--duration", str(2 * count * interval + 120)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert "listening" in rx.stdout.readline()
    subprocess.run(
        ["ip", "netns", "exec", src_netns, *probe, "send", "--to", dst_address,
         "--count", str(count), "--interval", str(interval)],
        check=True,
    )  # fmt: skip
    time.sleep(IN_FLIGHT_S)
    rx.terminate()  # it writes what arrived and ends
    out, _ = rx.communicate(timeout=30)
    return [(r["recv_ns"] - r["sent_ns"]) / 1e6 for r in map(json.loads, out.splitlines())]


#: How often a sample is measured again when the engines counted releases late during
#: it (as the pytest plugin's assertions do, netemu.testing.network.SPOILED_RETRIES).
SPOILED_RETRIES = 2


def measured(
    sample: Callable[[], list[float]],
    missed: Callable[[list[float], int], str | None],
    late: Callable[[], int],
) -> tuple[str | None, list[str]]:
    """Why a sample of one-way delays misses its bound (``missed``, given the releases
    the engines counted late meanwhile; None: it holds), measured again, at most
    SPOILED_RETRIES times, while it misses with releases counted late (the host
    stalled the engines); also why each spoiled sample before it missed."""
    spoiled: list[str] = []
    for _ in range(SPOILED_RETRIES + 1):
        before = late()
        delays = sample()
        counted = late() - before
        why = missed(delays, counted)
        if why is None or counted == 0:
            break
        spoiled.append(why)
    return why, spoiled


def leftovers(run: str, prefix: bool = False) -> list[str]:
    """What this run left on the machine (with ``prefix``: every run whose name begins
    so), and nothing of other runs (one may be live): its namespaces, its state files,
    the captures a cluster machine's agent spooled,
    the processes tagged with it (netns.RUN_ENV: engine, recorders, hosts' shells,
    podman), its ``netemu run`` controller, its containers."""
    found = netns.namespaces(f"netemu-{run}" + ("" if prefix else "-"))
    names = [f"{run}*"] if prefix else [run, f"{run}@*"]  # @: a cluster machine's agent's
    found += [str(p) for n in names for p in netns.STATE_DIR.glob(f"{n}.json")]
    found += [str(p) for p in CAPTURE_SPOOL.glob(f"{run}*" if prefix else f"{run}@*")]
    for pid in netns.run_pids(run, prefix=prefix):
        with contextlib.suppress(OSError):  # gone meanwhile
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append(f"{pid} {cmdline.decode(errors='replace')}")
    name = f"{run}[^ ]*" if prefix else run
    ps = subprocess.run(
        ["pgrep", "-af", f"netemu.cli run .*--name {name}( |$)"], capture_output=True, text=True
    ).stdout
    found += [line for line in ps.splitlines() if not _dead(line.split()[0])]
    mine = f"netemu-{run}" + ("" if prefix else "-")
    found += [f"container {n}" for n in containers.names(mine)]
    return found


def _dead(pid: str) -> bool:
    """Gone, or a zombie: dead and holding nothing, until init collects its exit status
    (a killed controller's engine, reparented to init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cli_run(run: str, *extra: str) -> subprocess.Popen:
    """``netemu run`` of train.yaml (until stopped) as a shell's job: its own process
    group, logging to /tmp/RUN.jsonl."""
    Path(f"/tmp/{run}.jsonl").unlink(missing_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netemu.cli",
            "run",
            str(TOPOLOGIES / "train.yaml"),
            "--name",
            run,
            "--shaper",
            "wire",
            "--log",
            f"/tmp/{run}.jsonl",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell's job
    )


def wait_up(proc: subprocess.Popen, run: str, log: Path | None = None) -> None:
    """Until the run logged its first epoch (in ``log``, /tmp/RUN.jsonl by default)."""
    log = log or Path(f"/tmp/{run}.jsonl")
    for _ in range(300):
        if log.exists() and '"epoch"' in log.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the run did not come up")


class Terminal:
    """A pseudo-terminal whose foreground job is the command: Ctrl-C typed there is
    SIGINT to the job's process group, as in a user's terminal."""

    def __init__(self, cmd: list[str]) -> None:
        self.master, slave = pty.openpty()

        def controlling_terminal() -> None:
            os.setsid()
            import fcntl

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdin=slave, stdout=slave, stderr=slave,
            preexec_fn=controlling_terminal,
        )  # fmt: skip
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, f"no {text!r} in:\n{self.seen}"
            if select.select([self.master], [], [], left)[0]:
                with contextlib.suppress(OSError):  # EIO: the other side closed
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
        at = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:at], self.seen[at:]
        return before

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> str:
        """Wait for the end; everything it wrote."""
        rest = self.seen
        deadline = time.monotonic() + 30
        while self.proc.poll() is None or select.select([self.master], [], [], 0)[0]:
            assert time.monotonic() < deadline, rest
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    rest += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
        os.close(self.master)
        return rest


@contextlib.contextmanager
def cli_prompt(run: str, topology: Path | None = None, *extra: str):
    """`netemu run --cli` of train.yaml (or ``topology``) in a pseudo-terminal, at its
    first prompt; killed on the way out if a test left it running."""
    term = Terminal(
        [sys.executable, "-m", "netemu.cli", "run", str(topology or TOPOLOGIES / "train.yaml"),
         "--cli", "--name", run, "--shaper", "wire", "--log", f"/tmp/{run}.jsonl", *extra]
    )  # fmt: skip
    try:
        term.expect("mininet>")
        yield term
    finally:
        if term.proc.poll() is None:  # a test that failed: stop it as a user would
            term.proc.terminate()
            try:
                term.proc.wait(30)
            except subprocess.TimeoutExpired:
                term.proc.kill()
                term.proc.wait()
                run_netemu("clean", "--run", run)
