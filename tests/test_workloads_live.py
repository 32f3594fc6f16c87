"""Users' containers on the emulated spacecraft (netemu.live.workloads), live: an image
built offline here from a Containerfile, 6 instances over 2 spacecraft's GPU slots
from the topology file, every instance reaching every other over the emulated ISL
within its geometric delay, a reboot stopping and restarting one spacecraft's
instances, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from netemu import stages
from netemu.kernel import containers
from netemu.kernel.containers import podman_works
from netemu.live.emulation import Emulation
from netemu.services.image import base_image

from helpers import (
    REPO,
    TOPOLOGIES,
    cli_run,
    leftovers,
    needs_root,
    run_netemu,
    train_topology,
    wait_up,
)

APP = REPO / "tests" / "containers" / "peers" / "app.py"

pytestmark = [
    needs_root,
    pytest.mark.skipif(not podman_works(), reason="podman is not installed or does not work"),
]


def user_image(folder: Path) -> tuple[Path, str]:
    """A Containerfile on the Debian-built services image (made offline) with the test
    application in it, and the tag it builds (named by its contents)."""
    base = base_image()
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text(APP.read_text())
    (folder / "Containerfile").write_text(
        f'FROM {base}\nCOPY app.py /app/app.py\nCMD ["python3", "/app/app.py"]\n'
    )
    digest = hashlib.sha256((folder / "Containerfile").read_bytes() + APP.read_bytes())
    return folder, f"localhost/netemu-test-peers:{digest.hexdigest()[:12]}"


def results(emu: Emulation) -> dict[str, dict]:
    out = {}
    for name in (c["name"] for c in emu.containers()):
        path = emu.this_run.folder / "containers" / name / "rtt.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def test_six_instances_on_two_spacecraft_reach_each_other_and_follow_a_reboot(tmp_path):
    context, image = user_image(tmp_path / "image")
    topo = train_topology(tmp_path, f"""
containers:
  - name: peers
    image: {image}
    build: {{context: {context}}}
    replicas: 6
    gpus: 1
    placement: {{per: gpu, nodes: [t0, t1]}}
faults:
  - {{kind: reboot, target: t1, at_s: 12, for_s: 6}}
""", gpus=3)  # fmt: skip
    run = "twork"
    with Emulation(topo, shaper="wire", run_name=run, folder=tmp_path / "run") as emu:
        emu.start_controller()
        placed = {c["name"]: (c["node"], c["gpu_slots"]) for c in emu.containers()}
        assert placed == {f"peers-{k}": ("t0" if k < 3 else "t1", [k % 3]) for k in range(6)}
        names = set(placed)

        def everyone_reached() -> bool:
            got = results(emu)
            return len(got) == 6 and all(set(r["rtt_ms"]) == names - {n} for n, r in got.items())

        assert emu.wait_until(everyone_reached, timeout=10), results(emu)
        emu.wait(2)  # more rounds: the fastest of ~20 per pair
        geometric = emu.link("t0", "t1").delay_ms
        for name, r in results(emu).items():
            assert all(r["resolved"].values()), r  # /etc/hosts names every instance
            for peer, rtt in r["rtt_ms"].items():
                if placed[peer][0] == placed[name][0]:
                    assert rtt < 1.0, (name, peer, rtt)  # the same spacecraft
                else:  # across the ISL: the geometry, and no more than scheduling adds
                    assert 2 * geometric - 0.05 <= rtt <= 2 * geometric + 1.5, (
                        name, peer, rtt, geometric
                    )  # fmt: skip
        # Its own stage records, reported as netemu reports its services' stages.
        report = stages.report(stages.read(emu.this_run.folder))
        assert report["units"] == 6 and report["stages"] == ["started", "heard-all"]
        assert report["steps"]["started > heard-all"]["count"] == 6
        # The reboot (orbital s 12-18): t1's instances stop, then start again.
        assert emu.wait_until(
            lambda: {c["state"] for c in emu.containers() if c["node"] == "t1"} == {"stopped"},
            timeout=20,
        ), emu.containers()
        assert all(c["state"] == "running" for c in emu.containers() if c["node"] == "t0")
        assert emu.wait_until(
            lambda: all(c["state"] == "running" for c in emu.containers()), timeout=20
        ), emu.containers()
        happened = [(e["instance"], e["what"]) for e in emu.events if e["type"] == "container"]
        for k in range(3, 6):
            assert happened.count((f"peers-{k}", "started")) == 2, happened
            assert (f"peers-{k}", "stopped") in happened
    assert leftovers(run) == []


def test_an_image_that_cannot_be_had_is_one_line_and_nothing_is_made(tmp_path):
    topo = train_topology(tmp_path, """
containers:
  - {name: gone, image: "localhost/netemu-no-such-image:0", nodes: t0}
""")  # fmt: skip
    emu = Emulation(topo, shaper="wire", run_name="tnoimg")
    with pytest.raises(Exception, match="container 'gone': container image") as err:
        emu.start()
    assert "\n" not in str(err.value)
    assert leftovers("tnoimg") == []


def test_containers_from_the_command_line_fail_in_one_line(tmp_path):
    """``netemu run --containers FILE``: a file that does not fit is refused (exit 2,
    the file and key named); a container that fails as it starts ends the run in one
    line (exit 1), nothing left."""
    too_many = tmp_path / "many.yaml"
    too_many.write_text(
        f"containers:\n  - {{name: x, image: {base_image()}, replicas: 99, gpus: 1}}\n"
    )
    refused = run_netemu("run", TOPOLOGIES / "train.yaml", "--name", "tcbad", "--containers",
                         too_many, "--duration", "5")  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert (
        "containers[0]: replicas" in refused.stderr
        and len(refused.stderr.strip().splitlines()) == 1
    )
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        f"containers:\n  - {{name: bad, image: {base_image()}, nodes: t0, "
        "command: 'echo no model here >&2; exit 3'}\n"
    )
    failed = run_netemu("run", TOPOLOGIES / "train.yaml", "--name", "tcfail", "--containers",
                        failing, "--duration", "30", "--shaper", "wire")  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    lines = [x for x in failed.stderr.splitlines() if "failed" in x]
    assert lines and "container bad-0 on t0 did not start" in lines[0], failed.stderr
    assert "exit status 3): no model here" in lines[0]
    assert leftovers("tcfail") == [] and leftovers("tcbad") == []


@pytest.mark.parametrize("how", ["sigint", "sigterm", "sighup", "sigkill"])
def test_a_run_with_containers_leaves_nothing_however_it_ends(tmp_path, how):
    """Ctrl-C as a terminal sends it (SIGINT to the whole group), SIGTERM or SIGHUP to
    ``netemu run --containers`` removes its containers with the rest (130, 143, 129);
    after kill -9 of the whole group the containers outlive it, and ``netemu clean``
    removes them with the rest (their conmon carries the run's tag; what remains of a
    container is removed by name)."""
    idle = "python3 -c 'import signal, time; signal.signal(signal.SIGTERM, exit); time.sleep(600)'"
    spec = tmp_path / "idle.yaml"
    spec.write_text(
        f"containers:\n  - {{name: idle, image: {base_image()}, nodes: [t0, t1], "
        f'command: "{idle}"}}\n'
    )
    run = f"tc{how[3:7]}"
    proc = cli_run(run, "--containers", str(spec))
    wait_up(proc, run)
    for _ in range(600):
        if len(containers.names(f"netemu-{run}-")) == 2:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    else:
        raise AssertionError("the containers did not start")
    if how != "sigkill":
        sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}[how]
        os.killpg(proc.pid, sig)
        assert proc.wait(60) == 128 + sig
        assert leftovers(run) == []
        return
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [c for c in leftovers(run) if c.startswith("container")]  # they outlive it
    clean = run_netemu("clean", "--run", run)
    assert clean.returncode == 0, clean.stderr
    assert "removed" in clean.stdout  # the processes tagged with the run, podman's too
    assert leftovers(run) == []
