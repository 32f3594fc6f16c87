"""The inference service of a compute satellite: detection and tracking on frames.

Runs on a compute node. Fragments arrive on :data:`FRAGMENT_PORT` and are
reassembled (lost fragments counted after ``--frame-timeout``); each whole
frame goes to a free worker slot, one per GPU of the node's compute payload
(``--slots``), or waits in a FIFO queue while every slot is busy. A slot is
a separate process running CA-CFAR detection on its own device (see
:mod:`netemu.services.backend`). The main process then runs each sensor's
Kalman tracker in frame order and sends a :class:`TrackReport`, with the
time of every stage, to each consumer. Heartbeats (:class:`ComputeStatus`)
tell sensors how busy the service is.

``--hold-ms`` is a device model for hosts without the target hardware:
inference is held until that long after it started (e.g. a published Jetson
Orin latency); results label it.

    python -m netemu.services.inference --id 3 --bind ADDR --slots 4 \\
        --consumers A,B --sensors S --log F
"""

from __future__ import annotations

import argparse
import collections
import math
import multiprocessing
import select
import sys
import time

import numpy as np

from netemu.services import backend as backends
from netemu.services.app import (
    FRAGMENT_PORT,
    REPORT_PORT,
    STATUS_PORT,
    JsonLog,
    addresses,
    now_ns,
    send,
    stop_event,
    udp_socket,
)
from netemu.services.protocol import (
    ComputeStatus,
    Nemu,
    Reassembler,
    Track,
    TrackReport,
    stamp_sent,
)
from netemu.services.track import Tracker

HEARTBEAT_S = 0.25
MAX_TRACKS = 60  # one report stays one datagram within a 1,500-byte MTU


def _worker(conn, kind: str, slot: int, hold_ms: float) -> None:
    """One worker slot: frames in, detections with start/end times out."""
    b = backends.choose(kind, slot)
    b.detect(np.ones((64, 64), np.float32))  # load kernels/caches before the first frame
    conn.send(("ready", b.name, b.device))
    while True:
        job = conn.recv()
        if job is None:
            return
        key, data = job
        start = now_ns()
        side = math.isqrt(len(data) // 4)
        found = b.detect(np.frombuffer(data, np.float32).reshape(side, side))
        end = now_ns()
        if hold_ms > 0 and (end - start) / 1e6 < hold_ms:
            time.sleep(hold_ms / 1e3 - (end - start) / 1e9)
            end = now_ns()
        conn.send((key, found, start, end))


class Slots:
    """Worker processes, one per slot; frames wait FIFO while all are busy."""

    def __init__(self, count: int, kind: str, hold_ms: float):
        ctx = multiprocessing.get_context("fork")  # before any thread exists
        self.conns, self.procs = [], []
        for slot in range(count):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(theirs, kind, slot, hold_ms), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)
        ready = [c.recv() for c in self.conns]
        self.backend, self.devices = ready[0][1], [r[2] for r in ready]
        self.busy: dict[int, tuple] = {}  # slot -> frame key
        self.queue: collections.deque = collections.deque()

    def submit(self, key, data: bytes) -> None:
        self.queue.append((key, data))
        self.dispatch()

    def dispatch(self) -> None:
        for slot, conn in enumerate(self.conns):
            if not self.queue:
                return
            if slot not in self.busy:
                key, data = self.queue.popleft()
                self.busy[slot] = key
                conn.send((key, data))

    def done(self, conn):
        slot = self.conns.index(conn)
        result = conn.recv()
        del self.busy[slot]
        self.dispatch()
        return slot, result

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()


class SensorTracks:
    """One sensor's tracker, fed in frame order whatever order slots finish in."""

    def __init__(self):
        self.tracker = Tracker()
        self.pending: set[int] = set()  # frames not yet detected
        self.results: dict[int, dict] = {}
        self.last_capture_ns: int | None = None

    def ready(self) -> list[dict]:
        """Detected frames that can be tracked now: none older is still pending."""
        out = []
        for seq in sorted(self.results):
            if self.pending and min(self.pending) < seq:
                break
            out.append(self.results.pop(seq))
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="netemu.services.inference", description=__doc__.split("\n")[0]
    )
    p.add_argument("--id", type=int, required=True, help="compute node number (on the wire)")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=FRAGMENT_PORT, help="where fragments arrive")
    p.add_argument("--slots", type=int, default=1, help="worker slots (GPUs)")
    p.add_argument("--consumers", default="", help="addresses that get track reports")
    p.add_argument("--sensors", default="", help="addresses that get heartbeats")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--hold-ms", type=float, default=0.0, help="device model: hold inference")
    p.add_argument("--frame-timeout", type=float, default=2.0, help="s to wait for fragments")
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)

    slots = Slots(max(1, args.slots), args.backend, args.hold_ms)
    stop = stop_event()
    log = JsonLog(args.log)
    rx = udp_socket(args.bind, args.port)
    rx.setblocking(False)
    tx = udp_socket(args.bind, 0, 1 << 20)
    consumers = addresses(args.consumers)
    sensors = set(addresses(args.sensors))
    log.write(
        "start",
        compute=args.id,
        slots=len(slots.conns),
        backend=slots.backend,
        devices=slots.devices,
        hold_ms=args.hold_ms,
    )
    print("ready", flush=True)
    reasm = Reassembler(timeout=args.frame_timeout * 1e9)
    sensor_tracks: dict[int, SensorTracks] = collections.defaultdict(SensorTracks)
    frames: dict[tuple, dict] = {}
    next_beat = 0

    def heartbeat() -> None:
        beat = bytes(
            Nemu(type=3)
            / ComputeStatus(
                compute=args.id,
                port=args.port,
                sent_ns=now_ns(),
                slots=len(slots.conns),
                busy=len(slots.busy),
                queued=len(slots.queue),
            )
        )
        for s in sensors:
            send(tx, beat, (s, STATUS_PORT))

    def report(rec: dict) -> None:
        st = sensor_tracks[rec["sensor"]]
        dt = 1.0 if st.last_capture_ns is None else (rec["capture_ns"] - st.last_capture_ns) / 1e9
        st.last_capture_ns = rec["capture_ns"]
        rec["tracking_start_ns"] = now_ns()
        confirmed = st.tracker.step(rec.pop("found"), dt=max(dt, 1e-3))[:MAX_TRACKS]
        tracks = [
            Track(id=t.id, row=t.x[0], col=t.x[1], v_row=t.x[2], v_col=t.x[3]) for t in confirmed
        ]
        msg = bytearray(
            bytes(
                Nemu(type=2)
                / TrackReport(
                    compute=args.id,
                    sensor=rec["sensor"],
                    seq=rec["seq"],
                    capture_ns=rec["capture_ns"],
                    first_rx_ns=rec["first_rx_ns"],
                    received_ns=rec["received_ns"],
                    inference_start_ns=rec["inference_start_ns"],
                    inference_end_ns=rec["inference_end_ns"],
                    lost_fragments=reasm.fragments_lost,
                    tracks=tracks,
                )
            )
        )
        for c in consumers:  # each copy stamped as it leaves (building it takes ~0.5 ms)
            sent = now_ns()
            stamp_sent(msg, sent)
            if not send(tx, msg, (c, REPORT_PORT)):
                rec.setdefault("unreachable", []).append(c)
            rec.setdefault("sent_ns", sent)
        log.write("frame", **rec, tracks=len(tracks))

    while not stop.is_set():
        now = now_ns()
        if now >= next_beat:
            heartbeat()
            next_beat = now + int(HEARTBEAT_S * 1e9)
        ready, _, _ = select.select([rx, *slots.conns], [], [], HEARTBEAT_S / 2)
        for conn in ready:
            if conn is rx:
                continue
            slot, (key, found, start, end) = slots.done(conn)
            rec = frames.pop(key)
            rec.update(
                slot=slot,
                inference_start_ns=start,
                inference_end_ns=end,
                detections=len(found),
                found=found,
            )
            st = sensor_tracks[key[0]]
            st.pending.discard(key[1])
            st.results[key[1]] = rec
            for r in st.ready():
                report(r)
        if rx in ready:
            while True:
                try:
                    data, (src, _) = rx.recvfrom(65536)
                except BlockingIOError:
                    break
                sensors.add(src)
                frame = reasm.add(data, now_ns())
                if frame is None:
                    continue
                key = (frame.sensor, frame.seq)
                frames[key] = {
                    "sensor": frame.sensor,
                    "seq": frame.seq,
                    "capture_ns": frame.capture_ns,
                    "first_rx_ns": int(frame.first_seen),
                    "received_ns": int(frame.completed_at),
                    "waiting_ahead": len(slots.queue),
                }
                sensor_tracks[frame.sensor].pending.add(frame.seq)
                slots.submit(key, frame.data)
                heartbeat()  # busy state changed: tell the sensors now
        for sensor, seq, missing in reasm.expire(now_ns()):
            log.write("frame_lost", sensor=sensor, seq=seq, missing_fragments=missing)
    slots.close()
    log.write(
        "end", compute=args.id, frames_lost=reasm.frames_lost, fragments_lost=reasm.fragments_lost
    )
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
