"""However a run ends, it ends within seconds, says why in one line, exits with the
README's status and leaves nothing of its own behind: signals to the controller or
its process group, during bring-up or mid-run, under ``timeout``, to every process
of the run at once (``systemctl stop``), Ctrl-C at the ``--cli`` prompt, a shaping
engine, a service or a container that dies, a namespace removed from outside, an
exception in the controller, out of memory, a full disk, the Python API under SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netemu.kernel import netns
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology

from helpers import (
    REPO,
    TOPOLOGIES,
    cli_prompt,
    cli_run,
    leftovers,
    needs_root,
    train_topology,
    wait_up,
)

pytestmark = needs_root


def _ended(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, float]:
    """Its stderr once it exited, and how long that took."""
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=timeout)
    return err, time.monotonic() - t0


def _one_line_why(err: str, why: str) -> None:
    assert why in err, err
    assert "Traceback" not in err, err


def _log_end(run: str) -> dict:
    return json.loads(Path(f"/tmp/{run}.jsonl").read_text().splitlines()[-1])


@pytest.mark.parametrize("to_group", [False, True], ids=["controller", "group"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_cli_run_stopped_by_a_signal_cleans_up(sig, to_group):
    """To the controller alone, or to its whole process group as a terminal's Ctrl-C,
    `kill -- -PGID` or a closed terminal deliver it: torn down, 128 + signal."""
    run = f"tsig{int(sig)}{'g' if to_group else ''}"
    proc = cli_run(run)
    wait_up(proc, run)
    assert leftovers(run)
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    err, took = _ended(proc)
    assert proc.returncode == 128 + sig, err
    _one_line_why(err, f"stopped by {sig.name} after")
    assert "everything removed" in err
    assert took < 10, f"the teardown took {took:.1f} s"
    assert leftovers(run) == []
    end = _log_end(run)
    assert end["end"] and end["complete"] is False and end["stopped"] == f"stopped by {sig.name}"


def _bringing_up(run: str) -> subprocess.Popen:
    """``netemu run`` caught as its bring-up begins (its state file written)."""
    proc = cli_run(run)
    state = netns.STATE_DIR / f"{run}.json"
    deadline = time.monotonic() + 30
    while not state.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    return proc


def test_a_signal_during_bring_up_cleans_up():
    """SIGTERM to the group while the namespaces are being made."""
    run = "tsigup"
    proc = _bringing_up(run)
    os.killpg(proc.pid, signal.SIGTERM)
    err, took = _ended(proc)
    assert proc.returncode == 143, err
    _one_line_why(err, "stopped by SIGTERM")
    assert took < 10 and leftovers(run) == []


def test_kill_9_during_bring_up_then_netemu_clean():
    """SIGKILL to the whole group mid-bring-up (the OOM killer, a hard stop): whatever
    was made by then (namespaces, the engine, its state) is removed by ``netemu clean``,
    found by the run's name and by NETEMU_RUN in its processes' environment."""
    run = "tkillup"
    proc = _bringing_up(run)
    time.sleep(0.1)  # into the namespaces and the engine's start
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert leftovers(run)  # kill -9 leaves what it made
    clean = subprocess.run([sys.executable, "-m", "netemu.cli", "clean", "--run", run],
                           cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    assert leftovers(run) == []


def test_a_run_under_timeout_cleans_up():
    """`timeout 5 netemu run ...`: SIGTERM when the time is up."""
    run = "ttimeout"
    topo = str(TOPOLOGIES / "train.yaml")
    cmd = [sys.executable, "-m", "netemu.cli", "run", topo, "--name", run, "--shaper", "wire"]
    proc = subprocess.Popen(
        ["timeout", "5", *cmd, "--log", f"/tmp/{run}.jsonl"],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    err, took = _ended(proc)
    assert proc.returncode == 124, err  # timeout's own status: the time was up
    _one_line_why(err, "stopped by SIGTERM")
    assert took < 15 and leftovers(run) == []


def test_every_process_of_the_run_signalled_at_once():
    """As `systemctl stop` does (SIGTERM to every process of the unit's cgroup): the
    engine keeps forwarding until the controller's teardown quits it."""
    run = "tsigall"
    proc = cli_run(run)
    wait_up(proc, run)
    others = netns.run_pids(run)
    assert others  # the engine, at least
    for pid in [proc.pid, *others]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    err, took = _ended(proc)
    assert proc.returncode == 143, err
    _one_line_why(err, "stopped by SIGTERM after")
    assert took < 10 and leftovers(run) == []


@pytest.mark.skipif(
    not Path("/run/systemd/system").is_dir() or not shutil.which("systemd-run"),
    reason="systemd is not this machine's init (it runs units only where it is PID 1)",
)
def test_a_run_as_a_systemd_unit_stopped_by_systemctl():
    run = "tunit"
    unit = f"netemu-test-{os.getpid()}"
    topo = str(TOPOLOGIES / "train.yaml")
    subprocess.run(
        ["systemd-run", "--unit", unit, "--property", "KillMode=control-group",
         "--working-directory", str(REPO), sys.executable, "-m", "netemu.cli", "run", topo,
         "--name", run, "--shaper", "wire", "--log", f"/tmp/{run}.jsonl"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        log = Path(f"/tmp/{run}.jsonl")
        deadline = time.monotonic() + 30
        while not (log.exists() and '"epoch"' in log.read_text()):
            assert time.monotonic() < deadline, "the unit's run did not come up"
            time.sleep(0.1)
        t0 = time.monotonic()
        subprocess.run(["systemctl", "stop", unit], check=True)
        took = time.monotonic() - t0
        status = subprocess.run(
            ["systemctl", "show", "-P", "ExecMainStatus", unit], capture_output=True, text=True
        ).stdout.strip()
    finally:
        subprocess.run(["systemctl", "reset-failed", unit], capture_output=True)
    assert status == "143" and took < 10
    assert _log_end(run)["stopped"] == "stopped by SIGTERM"
    assert leftovers(run) == []


def test_the_engine_dying_ends_the_run_in_one_line():
    """The wire engine killed mid-run (as the OOM killer would): traffic stops at once
    (fail closed), the run ends within seconds, exit 1, one line, nothing left."""
    run = "tengdie"
    proc = cli_run(run)
    wait_up(proc, run)
    engine = json.loads((netns.STATE_DIR / f"{run}.json").read_text())["shaper_pids"][0]
    os.kill(engine, signal.SIGKILL)
    err, took = _ended(proc)
    assert proc.returncode == 1, err
    _one_line_why(err, f"netemu: run {run} failed: the wire engine exited (status -9)")
    assert f"run log /tmp/{run}.jsonl" in err
    assert took < 5 and leftovers(run) == []
    end = _log_end(run)
    assert end["complete"] is False and "wire engine exited" in end["stopped"]


def test_a_namespace_removed_from_outside_ends_the_run_in_one_line():
    """``ip netns del`` of one node's namespace mid-run (a user's clean-up, another
    tool): its node can no longer be entered, so the run ends within an epoch, exit 1,
    naming it, and the rest is torn down."""
    run = "tnsgone"
    proc = cli_run(run)
    wait_up(proc, run)
    subprocess.run(["ip", "netns", "del", f"netemu-{run}-t1"], check=True)
    err, took = _ended(proc)
    assert proc.returncode == 1, err
    _one_line_why(err, f"netemu: run {run} failed: namespace netemu-{run}-t1 was removed "
                       "from outside the run (ip netns del?); everything removed")  # fmt: skip
    assert took < 5 and leftovers(run) == []
    assert _log_end(run)["complete"] is False


@contextlib.contextmanager
def _memory_cgroup(limit: int):
    """A memory cgroup of its own under this process's (v2 or v1), limited to ``limit``
    bytes, as a container or a systemd unit's MemoryMax would be; its cgroup.procs."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            root, limit_file = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            root, limit_file = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        group = root / path.lstrip("/") / f"netemu-test-{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(limit))
        except OSError as exc:
            with contextlib.suppress(OSError):
                group.rmdir()
            pytest.skip(f"no memory cgroup can be made here: {exc}")
        try:
            yield group / "cgroup.procs"
        finally:
            group.rmdir()
        return
    pytest.skip("this process is in no memory cgroup")


def test_a_topology_larger_than_its_memory_cgroup_allows_is_refused():
    """Starlink's shell 1 (1,590 nodes, ~3.2 GiB live) in a cgroup limited to 1 GiB:
    refused in one line naming the cgroup, exit 2, before anything exists (else the
    kernel's OOM killer would end the controller part-way, with everything left)."""
    with _memory_cgroup(1 << 30) as procs:
        p = subprocess.run(
            ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", sys.executable, "-m",
             "netemu.cli", "run", str(TOPOLOGIES / "starlink-shell1.yaml"), "--name", "tcgroup"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "1,590 nodes need about 3.2 GiB to emulate live, and memory cgroup /" in p.stderr
    assert "netemu-test-" in p.stderr and leftovers("tcgroup") == []


def test_an_exception_in_the_controller_mid_epoch_cleans_up(tmp_path):
    """Code run every epoch (here a user's on_epoch) raises: it reaches the caller, the
    run is torn down and its log says it did not complete, and why."""
    log = tmp_path / "run.jsonl"
    emu = Emulation(train_topology(tmp_path), shaper="wire", run_name="tboom", log_path=log)

    def on_epoch(e: Emulation) -> None:
        if e.epoch_index == 2:
            raise RuntimeError("boom at epoch 2")

    with pytest.raises(RuntimeError, match="boom"), emu:
        emu.run(on_epoch)
    assert leftovers("tboom") == []
    end = json.loads(log.read_text().splitlines()[-1])
    assert end["complete"] is False and end["stopped"] == "RuntimeError: boom at epoch 2"


OOM_SCRIPT = """
import resource, sys
import numpy as np
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology

def on_epoch(emu):
    if emu.epoch_index == 2:  # from now on, what the process has and 32 MiB more
        status = open("/proc/self/status").read()
        size = int(status.split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (32 << 20), resource.RLIM_INFINITY))
        emu.results = np.ones(1 << 28)  # 2 GiB of the script's per-epoch results

topology, run, log = sys.argv[1:]
with Emulation(load_topology(topology), shaper="wire", run_name=run, log_path=log) as emu:
    emu.run(on_epoch)
"""


def test_out_of_memory_mid_run_still_tears_down(tmp_path):
    """A script's run that runs out of memory (``ulimit -v`` reached mid-run): the
    MemoryError reaches the script, and the teardown, under the same limit, removes
    everything; the run log ends saying so."""
    script, log = tmp_path / "script.py", tmp_path / "run.jsonl"
    script.write_text(OOM_SCRIPT)
    p = subprocess.run(
        [sys.executable, str(script), str(TOPOLOGIES / "train.yaml"), "toom", str(log)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "MemoryError: Unable to allocate 2.00 GiB" in p.stderr, p.stderr
    assert leftovers("toom") == []
    end = json.loads(log.read_text().splitlines()[-1])
    assert end["complete"] is False
    assert end["stopped"].startswith("out of memory (Unable to allocate 2.00 GiB"), end


API_SCRIPT = """
import sys
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology

topology, run, log = sys.argv[1:]
with Emulation(load_topology(topology), shaper="wire", run_name=run, log_path=log) as emu:
    emu.run()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_python_program_using_the_api_stopped_by_a_signal(tmp_path, sig):
    """A script's `with Emulation(...)` tears down on SIGTERM/SIGHUP (Python's default
    would end it at once, nothing removed); it then ends as the signal would have,
    with one line and no traceback."""
    run = f"tapi{int(sig)}"
    script = tmp_path / "script.py"
    script.write_text(API_SCRIPT)
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(TOPOLOGIES / "train.yaml"), run, str(log)],
        cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_up(proc, run, log)
    os.killpg(proc.pid, sig)
    err, took = _ended(proc)
    assert proc.returncode == -sig, err  # a shell says 128 + signal
    _one_line_why(err, f"script.py: stopped by {sig.name}")
    assert took < 10 and leftovers(run) == []
    assert json.loads(log.read_text().splitlines()[-1])["stopped"] == f"stopped by {sig.name}"


def test_ctrl_c_at_the_cli_prompt_stops_the_command_not_the_run():
    """`netemu run --cli`: Ctrl-C stops the ping running at the prompt (as in
    Mininet), the run goes on; `exit` ends it normally; SIGTERM would stop it."""
    run = "tcliint"
    t1 = load_topology(TOPOLOGIES / "train.yaml").by_name["t1"].index
    with cli_prompt(run) as term:
        term.type(f"t0 ping -i 0.2 172.16.0.{t1 + 1}\n")
        term.expect("bytes from")
        term.type("\x03")  # Ctrl-C, as typed
        out = term.expect("mininet>", timeout=10)
        assert "packets transmitted" in out, out  # ping's summary: it got the interrupt
        assert term.proc.poll() is None and leftovers(run)  # the run goes on
        term.type(f"t0 ping -c 1 172.16.0.{t1 + 1}\n")
        assert "1 received" in term.expect("mininet>")
        term.type("exit\n")
        rest = term.close()
    assert term.proc.returncode == 0, rest
    assert "netemu: done after" in rest and "Traceback" not in rest, rest
    assert leftovers(run) == []


def _kill_process(dep, service) -> None:
    os.kill(dep.state(service)["pid"], signal.SIGKILL)


def _kill_container(dep, service) -> None:
    from netemu.kernel.containers import PODMAN

    name = f"netemu-{dep.emu.this_run.name}-{service.container}-0"
    subprocess.run([*PODMAN, "kill", name], check=True, capture_output=True)


_podman = pytest.mark.skipif(
    not shutil.which("podman"), reason="podman (container engine) not installed"
)


@pytest.mark.parametrize(
    ("runtime", "kill", "status"),
    [("process", _kill_process, -9), pytest.param("podman", _kill_container, 137, marks=_podman)],
    ids=["process", "container"],
)
def test_a_service_that_dies_on_its_own_ends_the_deployment(tmp_path, runtime, kill, status):
    """The compute service killed mid-run (a crash, the OOM killer, ``podman kill``):
    the deployment stops waiting within seconds, says which and where its stderr is,
    and the run is torn down (containers too) with the results written so far kept."""
    from netemu.services.deploy import Deployment, DeploymentError

    run = f"tsvcdie{runtime[0]}"
    with (
        pytest.raises(DeploymentError) as failed,
        Emulation(train_topology(tmp_path), shaper="wire", run_name=run) as emu,
        Deployment(emu, tmp_path / "res", runtime) as dep,
    ):
        emu.start_controller()
        dep.consumer("gs_north")
        service = dep.compute("t2", ["gs_north"], ["t0"])
        sensor = dep.sensor("t0", [service], frames=400, interval=0.05, size=256, seed=1)
        emu.wait(1.0)
        kill(dep, service)
        t0 = time.monotonic()
        try:
            dep.wait(sensor, timeout=30)
        finally:
            took = time.monotonic() - t0
    message = str(failed.value)
    assert "\n" not in message and took < 3, (message, took)
    assert message.startswith(f"inference on t2 exited on its own (status {status})"), message
    assert f"containers/{service.container}-0.stderr" in message
    assert leftovers(run) == []
    assert (tmp_path / "res" / "logs" / "gs_north-consumer.jsonl").stat().st_size > 0


@_podman
def test_a_missing_container_image_is_one_line_and_leaves_nothing(tmp_path):
    from netemu.errors import InputError
    from netemu.services.deploy import Deployment

    topo = train_topology(tmp_path)
    t0 = time.monotonic()
    with (
        pytest.raises(InputError, match="container image localhost/netemu-absent:0 is not on"),
        Emulation(topo, shaper="wire", run_name="tnoimage") as emu,
        Deployment(emu, tmp_path / "res", "podman", image="localhost/netemu-absent:0") as dep,
    ):
        dep.consumer("gs_north")
    assert time.monotonic() - t0 < 30 and leftovers("tnoimage") == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_signal_stops_a_run_at_the_cli_prompt(sig):
    """SIGTERM (``kill``) or SIGHUP (the SSH session dropped) while the prompt waits."""
    run = f"tcli{int(sig)}"
    with cli_prompt(run) as term:
        term.proc.send_signal(sig)
        rest = term.close()
    assert term.proc.returncode == 128 + sig, rest
    assert f"stopped by {sig.name} after" in rest and "Traceback" not in rest, rest
    assert leftovers(run) == []


def test_a_scenario_stopped_by_sigterm_to_its_group(tmp_path):
    """missile_tracking mid-deployment (services as processes on train.yaml): torn down,
    one line, 143, the logs so far kept and marked incomplete."""
    res = tmp_path / "res"
    proc = subprocess.Popen(
        [sys.executable, "scenarios/missile_tracking.py", "--topology",
         str(TOPOLOGIES / "train.yaml"), "--runtime", "process", "--shaper", "wire",
         "--frames", "300", "--interval", "0.1", "--size", "64", "--results", str(res)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not any(p.stat().st_size for p in res.glob("logs/*-consumer.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    err, took = _ended(proc)
    assert proc.returncode == 143, err
    _one_line_why(err, "missile_tracking: stopped by SIGTERM; everything removed")
    assert took < 10 and leftovers("missile_tracking") == []
    assert json.loads((res / "status.json").read_text()) == {"complete": False}
    assert any(p.stat().st_size for p in res.glob("logs/*-consumer.jsonl"))


def test_a_full_disk_for_the_run_log_ends_the_run_in_one_line(tmp_path):
    """The results' file system fills up mid-run: exit 1, one line naming the run log
    and the problem, nothing left (the disk here: a 256 KiB tmpfs, then filled)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        run = "tdiskfull"
        log = disk / "run.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "netemu.cli", "run", str(TOPOLOGIES / "train.yaml"),
             "--name", run, "--shaper", "wire", "--log", str(log)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        wait_up(proc, run, log)
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        err, took = _ended(proc)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert proc.returncode == 1, err
    _one_line_why(err, f"run {run} failed: cannot write the run log {log}: No space left on device")
    # The log's last page still takes a few ~600-byte records before the disk refuses one.
    assert took < 15, took
    assert leftovers(run) == []
