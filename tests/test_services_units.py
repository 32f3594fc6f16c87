"""Service parts without a network: choosing a compute node from heartbeats, worker
slots that queue, the fast fragment layout against scapy, and the GPU backend."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from netemu.errors import InputError
from netemu.services import backend
from netemu.services.inference import Slots
from netemu.services.protocol import (
    FRAGMENT,
    REPORT_SENT_AT,
    ComputeStatus,
    FrameFragment,
    Nemu,
    TrackReport,
    fragments,
    stamp_sent,
)
from netemu.services.scene import Scene
from netemu.services.sensor import Chooser

A, B, C = ("10.0.0.1", 7001), ("10.0.0.2", 7001), ("10.0.0.3", 7001)


def beat(chooser, node, delay_ms, slots, busy, now=10**12):
    raw = bytes(Nemu() / ComputeStatus(port=node[1], sent_ns=now - int(delay_ms * 1e6),
                                       slots=slots, busy=busy))  # fmt: skip
    chooser.heartbeat(raw, node[0], now)


def test_the_sensor_picks_the_nearest_compute_with_a_free_slot():
    ch = Chooser([A, B, C])
    assert ch.choose(10**12) == (A, "no heartbeat yet")
    beat(ch, A, 9.0, 4, 0)
    beat(ch, B, 4.0, 4, 4)  # nearest, but every slot busy
    beat(ch, C, 6.0, 4, 1)
    assert ch.choose(10**12)[0] == C
    beat(ch, A, 5.0, 4, 0)  # A comes nearer, but C is free and within 2 ms: stay
    assert ch.choose(10**12)[0] == C
    beat(ch, A, 1.0, 4, 0)  # much nearer: switch
    assert ch.choose(10**12)[0] == A
    for node in (A, C):
        beat(ch, node, 3.0, 4, 4)
    assert ch.choose(10**12)[0] == A  # all busy: the nearest, where the frame queues
    assert ch.choose(10**12 + 4 * 10**9)[1] == "no heartbeat yet"  # all silent 4 s
    ch.heartbeat(bytes(Nemu() / ComputeStatus(port=7001)), "10.9.9.9", 10**12)
    assert ("10.9.9.9", 7001) not in ch.heard  # not one of ours


def test_frames_queue_when_every_slot_is_busy():
    """One slot held 150 ms per frame: three frames finish 150 ms apart, in order."""
    slots = Slots(1, "cpu", hold_ms=150)
    try:
        image = Scene(seed=1, size_px=64).frame(0).image.tobytes()
        for k in range(3):
            slots.submit(("s", k), image)
        assert len(slots.busy) == 1 and len(slots.queue) == 2
        done = []
        while len(done) < 3:
            _, (key, _found, start, end) = slots.done(slots.conns[0])
            done.append((key[1], start, end))
        assert [k for k, _, _ in done] == [0, 1, 2]
        for (_, _, end0), (_, start1, end1) in itertools.pairwise(done):
            assert start1 >= end0 and (end1 - start1) / 1e6 == pytest.approx(150, abs=30)
    finally:
        slots.close()


def test_fast_fragment_layout_matches_the_scapy_layers():
    parts = list(fragments(7, 42, 123456789, bytes(range(256)) * 10))
    assert FRAGMENT.size == len(Nemu() / FrameFragment())
    for i, raw in enumerate(parts):
        pkt = Nemu(raw)[FrameFragment]
        assert (pkt.sensor, pkt.seq, pkt.capture_ns, pkt.index, pkt.count) == (
            7, 42, 123456789, i, len(parts),
        )  # fmt: skip
        assert FRAGMENT.unpack(raw)["index"] == i


def test_a_report_is_stamped_as_it_leaves():
    raw = bytearray(bytes(Nemu() / TrackReport(seq=3, sent_ns=0, capture_ns=5)))
    stamp_sent(raw, 1_800_000_000_123_456_789)
    rep = Nemu(bytes(raw))[TrackReport]
    assert (rep.sent_ns, rep.capture_ns, rep.seq) == (1_800_000_000_123_456_789, 5, 3)
    assert REPORT_SENT_AT == 6 + 2 + 2 + 4 + 8 * 5  # header, ids, seq, five stamps before


def test_cuda_is_refused_clearly_without_a_gpu():
    if backend.cuda_devices():
        pytest.skip("a GPU is present: the refusal applies only without one")
    with pytest.raises(InputError, match="no CUDA GPU"):
        backend.choose("cuda")
    assert backend.choose("auto").name == "cpu"


@pytest.mark.skipif(not backend.cuda_devices(), reason="no CUDA GPU (or no CuPy) on this machine")
def test_the_gpu_backend_detects_what_the_cpu_detects():
    scene = Scene(seed=5, size_px=1024)
    gpu, cpu = backend.choose("cuda"), backend.choose("cpu")
    assert gpu.name == "cuda"
    for k in range(3):
        image = scene.frame(k).image
        a, b = np.sort(gpu.detect(image), axis=0), np.sort(cpu.detect(image), axis=0)
        assert a.shape == b.shape and np.allclose(a, b, atol=0.05)
    t = time.perf_counter()
    gpu.detect(image)
    assert time.perf_counter() - t < 1.0


def test_a_deployment_keeps_its_logs_at_an_absolute_path(tmp_path, monkeypatch):
    """Containers mount the logs folder at the same path, and podman refuses a relative
    one: a run folder given relative (results/<run>, the default) still works."""
    from types import SimpleNamespace

    from netemu.services.deploy import Deployment

    monkeypatch.chdir(tmp_path)
    dep = Deployment(SimpleNamespace(), Path("results/run1"), "process")
    assert dep.logs == tmp_path / "results" / "run1" / "logs" and dep.logs.is_dir()
    assert dep.log("kep3", "inference").is_absolute()
