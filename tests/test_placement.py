"""Users' containers placed on nodes and GPU slots (netemu.model.placement), mapped to
this machine's GPUs and turned into podman commands (netemu.live.workloads), and
the topology file's containers: section checked, without root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.live.workloads import _said, gpu_devices, hosts_file, podman_run, spec_from
from netemu.model.placement import PlacementError, place
from netemu.model.schema import ContainerSpec
from netemu.model.topology import load_topology

from helpers import TOPOLOGIES

GPUS = {"sat0": 3, "sat1": 3, "sat2": 0, "gs": 0}


def spec(**kw) -> ContainerSpec:
    return ContainerSpec(**{"name": "job", "image": "localhost/job:1", **kw})


def test_replicas_per_gpu_fill_one_spacecraft_before_the_next():
    placed = place([spec(replicas=6, gpus=1)], dict(GPUS))
    assert [(i.name, i.node, i.gpu_slots, i.local) for i in placed] == [
        ("job-0", "sat0", (0,), 0), ("job-1", "sat0", (1,), 1), ("job-2", "sat0", (2,), 2),
        ("job-3", "sat1", (0,), 0), ("job-4", "sat1", (1,), 1), ("job-5", "sat1", (2,), 2),
    ]  # fmt: skip


def test_slots_are_never_given_twice():
    taken: dict[str, set[int]] = {}
    first = place([spec(name="a", nodes="sat0", gpus=2)], GPUS, taken)
    second = place([spec(name="b", replicas=2, gpus=1)], GPUS, taken)
    assert first[0].gpu_slots == (0, 1)
    assert [(i.node, i.gpu_slots) for i in second] == [("sat0", (2,)), ("sat1", (0,))]
    with pytest.raises(PlacementError, match="need 4 slots; its nodes have 2 free"):
        place([spec(name="c", replicas=2, gpus=2)], GPUS, taken)


def test_named_nodes_and_per_node_placement():
    assert [i.node for i in place([spec(nodes=["gs", "sat2", "gs"])], GPUS)] == ["gs", "sat2", "gs"]
    assert [i.local for i in place([spec(nodes=["gs", "sat2", "gs"])], GPUS)] == [0, 0, 1]
    per_node = place([spec(replicas=3, placement={"per": "node"})], GPUS)
    assert [i.node for i in per_node] == ["sat0", "sat1", "sat0"]


@pytest.mark.parametrize(
    ("kw", "key", "problem"),
    [
        ({"replicas": 7, "gpus": 1}, "replicas", "need 7 slots; its nodes have 6 free"),
        ({"nodes": "sat9"}, "nodes", "unknown node 'sat9'"),
        ({"replicas": 2}, "gpus", "per gpu needs gpus >= 1"),
        ({"nodes": "gs", "gpus": 1}, "gpus", "'gs' has 0 free GPU slots"),
    ],
)
def test_what_cannot_be_placed_is_said(kw, key, problem):
    with pytest.raises(PlacementError, match=problem) as err:
        place([spec(**kw)], GPUS)
    assert err.value.key == key


def test_slots_map_to_gpus_dedicated_shared_or_none():
    placed = place([spec(replicas=6, gpus=1)], GPUS)
    devices, mapping = gpu_devices(placed, 8)
    assert mapping == "dedicated" and devices["job-5"] == [5]
    devices, mapping = gpu_devices(placed, 2)
    assert mapping == "shared" and [devices[f"job-{k}"] for k in range(6)] == [[0], [1]] * 3
    assert gpu_devices(placed, 0) == ({f"job-{k}": [] for k in range(6)}, "none")


def test_the_podman_command_joins_the_node_and_limits_the_container(tmp_path):
    s = spec(nodes="sat0", gpus=1, command="python3 /app/run.py --fast", env={"MODE": "x"},
             volumes=["data:/data:ro"], workdir="/app", cpus=1.5, memory_mib=512)  # fmt: skip
    (instance,) = place([s], GPUS)
    argv = podman_run(s, instance, "netemu-r-job-0", "netemu-r-sat0", tmp_path / "hosts",
                      tmp_path / "out", {"NETEMU_NODE": "sat0"}, [3], tmp_path)  # fmt: skip
    text = " ".join(argv)
    assert "--network ns:/run/netns/netemu-r-sat0" in text and "--no-hosts" in text
    assert f"-v {tmp_path}/hosts:/etc/hosts:ro" in text
    assert f"-v {tmp_path}/data:/data:ro" in text  # relative to the topology file
    assert "-e MODE=x" in text and "-e NETEMU_NODE=sat0" in text
    assert "--cpus 1.5 --memory 512m" in text and "--device nvidia.com/gpu=3" in text
    assert argv[-4:] == ["localhost/job:1", "sh", "-c", "python3 /app/run.py --fast"]


def test_hosts_file_names_everyone():
    assert hosts_file({"sat0": "172.16.0.1", "job-0": "172.16.0.1"}) == (
        "127.0.0.1 localhost\n172.16.0.1 sat0\n172.16.0.1 job-0\n"
    )


def test_a_python_spec_is_checked_as_the_files_are():
    with pytest.raises(InputError, match="add_container: memory_mib"):
        spec_from({"name": "j", "image": "i", "nodes": "sat0", "memory_mib": 1}, "add_container")
    with pytest.raises(InputError, match="either nodes"):
        spec_from({"name": "j", "image": "i"}, "add_container")


def test_the_topology_file_says_which_container_key_is_wrong(write_topology):
    text = (
        (TOPOLOGIES / "train.yaml")
        .read_text()
        .replace("file: train.tle", f"file: {TOPOLOGIES / 'train.tle'}")
    )
    bad = write_topology(text + "containers:\n  - {name: job, image: x, replicas: 9, gpus: 1}\n")
    with pytest.raises(InputError) as err:
        load_topology(bad)
    assert "containers[0].replicas" in str(err.value) or "containers.0.replicas" in str(err.value)
    assert Path(bad).name in str(err.value)


def test_readiness_is_read_from_what_this_start_said(tmp_path):
    """An instance is ready once its output, from where this start began, holds the
    text: what an earlier start said does not count; a process that said it and
    exited counts; one that exits silent, or stays silent, does not."""
    out = tmp_path / "x.out"
    out.write_text("ready\n")  # an earlier start's words
    start = out.stat().st_size
    silent = subprocess.Popen(["sleep", "5"])
    try:
        assert not _said(out, start, "ready", silent, timeout_s=0.3)
        with out.open("a") as f:
            f.write("serving: ready\n")
        assert _said(out, start, "ready", silent, timeout_s=0.3)
    finally:
        silent.kill()
        silent.wait()
    said_and_went = subprocess.Popen(["sh", "-c", f"echo ready >> {out}"])
    said_and_went.wait()
    assert _said(out, out.stat().st_size - 6, "ready", said_and_went, timeout_s=1)
    quiet = subprocess.Popen(["true"])
    quiet.wait()
    assert not _said(out, out.stat().st_size, "ready", quiet, timeout_s=1)
