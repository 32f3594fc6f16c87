"""What users of Python tools, Mininet and pytest take for granted: ``--version``,
``-v``/``-q``, Python logging under ``netemu`` (caplog and Mininet's setLogLevel see
it), JSON outputs that say what wrote them, and ``netemu run --test`` as ``mn --test``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import netemu
from netemu.live.emulation import Emulation

from helpers import REPO, TOPOLOGIES, leftovers, needs_root, run_netemu, train_topology

TRAIN = TOPOLOGIES / "train.yaml"


def test_version():
    done = run_netemu("--version")
    assert done.returncode == 0 and done.stdout == f"netemu {netemu.__version__}\n"
    assert netemu.__version__ != "0.0.0+unknown"  # installed: the package's own version


def test_json_outputs_say_what_wrote_them(tmp_path):
    plan = run_netemu("plan", TRAIN, "--duration", "2", "--json")
    lines = [json.loads(line) for line in plan.stdout.splitlines()]
    assert len(lines) == 3 and lines[0]["links"]
    assert all(
        (line["netemu_version"], line["format"]) == (netemu.__version__, "netemu-plan/1")
        for line in lines
    )


@needs_root
def test_caplog_sees_a_run_and_its_faults(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="netemu")
    log = tmp_path / "run.jsonl"
    with Emulation(train_topology(tmp_path), shaper="wire", run_name="tlog", log_path=log,
                   duration_s=3) as emu:  # fmt: skip
        emu.inject("cut", "t0-t1", for_s=1)
        emu.run()
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert any(
        n == "netemu.live.emulation" and m.startswith("run tlog up: 7 nodes") for n, _, m in said
    )
    assert any(lvl == "INFO" and "fault: fault=cut target=t0-t1" in m for _, lvl, m in said), said
    assert any("fault-cleared: fault=cut target=t0-t1" in m for _, _, m in said), said
    assert not any(lvl == "DEBUG" for _, lvl, _ in said)  # link events are DEBUG: not asked
    first = json.loads(log.read_text().splitlines()[0])
    assert (first["netemu_version"], first["format"]) == (netemu.__version__, "netemu-run-log/1")
    assert leftovers("tlog") == []


@needs_root
def test_mininet_setloglevel_shows_netemus_messages_as_mininets(tmp_path):
    """A Mininet user's script: ``setLogLevel('info')``, then netemu's info lines print
    where Mininet's do; at Mininet's default level they do not."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "tests")!r})
        from pathlib import Path
        from mininet.log import setLogLevel, info
        from helpers import train_topology
        from netemu.live.emulation import Emulation

        setLogLevel(sys.argv[1])
        with Emulation(train_topology(Path({str(tmp_path)!r})), shaper="wire",
                       run_name="tmnlog") as emu:
            emu.start_controller()
            emu.mininet()
            info("*** mininet's own\\n")
            emu.inject("cut", "t0-t1", for_s=1)
            emu.wait(2.5)
    """)
    )

    def run(level: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, script, level], capture_output=True, text=True,
                              timeout=120, cwd=REPO)  # fmt: skip

    runs = {level: run(level) for level in ("info", "output")}
    info, quiet = runs["info"].stderr + runs["info"].stdout, runs["output"].stderr
    assert runs["info"].returncode == 0 and runs["output"].returncode == 0, runs
    assert "*** mininet's own" in info and "fault: fault=cut target=t0-t1" in info, info
    assert "fault-cleared" in info
    assert "fault=cut" not in quiet and "Traceback" not in quiet, quiet
    assert leftovers("tmnlog") == []


@needs_root
def test_quiet_and_verbose_runs():
    quiet = run_netemu("-q", "run", TRAIN, "--duration", "2", "--name", "tquiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "", quiet
    loud = run_netemu("run", TRAIN, "--duration", "3", "--name", "tloud", "-v",
                      "--fault", "cut:t0-t1@+1/1")  # fmt: skip
    assert loud.returncode == 0, loud.stderr
    assert "netemu: run tloud up: 7 nodes, 6 links" in loud.stderr
    assert "fault: fault=cut target=t0-t1" in loud.stderr
    assert leftovers("tquiet") == [] and leftovers("tloud") == []


@needs_root
def test_smoke_tests_as_mn_test():
    """``--test pingall`` on train (every pair answers: exit 0); ``--test route`` on
    Kepler at its start, where svalbard has no link: exit 1, saying which pairs."""
    ping = run_netemu("run", TRAIN, "--test", "pingall", "--name", "tsmoke1")
    assert ping.returncode == 0, ping.stderr
    assert "42/42 answered; every ping as the routes say" in ping.stderr
    route = run_netemu("run", TOPOLOGIES / "kepler.yaml", "--test", "route", "--name", "tsmoke2")
    assert route.returncode == 1, route.stderr
    assert "no route svalbard -> kep0" in route.stderr
    assert "132/156 pairs have a route now" in route.stderr
    assert "netemu: --test route failed" in route.stderr and "Traceback" not in route.stderr
    assert leftovers("tsmoke1") == [] and leftovers("tsmoke2") == []
