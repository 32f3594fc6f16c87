"""The sensor application: SAR frames from a seeded scene, sent to a compute node.

Runs on a sensor satellite. Every ``--interval`` seconds it renders frame
``seq`` of the :class:`~netemu.services.scene.Scene` (same seed, same
frames and ground truth), stamps the capture time and sends the frame as
fragments (:func:`~netemu.services.protocol.fragments`) to one compute node.

Which one (``--policy nearest-free``): compute services send heartbeats
(:class:`ComputeStatus`) with their free worker slots and send time; the
sensor measures its one-way delay to each from them and sends to the nearest
one with a free slot (the nearest of all when every slot is busy: the frame
queues there), staying with its current one while that is free and no
more than 2 ms farther. Before any heartbeat it uses the first one given.
``round-robin`` takes them in turn (to exercise every instance). Each frame
is logged with where it went and why.

    python -m netemu.services.sensor --id 0 --bind ADDR --computes A,B --log F
"""

from __future__ import annotations

import argparse
import select
import sys

from netemu.services.app import (
    FRAGMENT_PORT,
    STATUS_PORT,
    JsonLog,
    addresses,
    now_ns,
    send,
    stop_event,
    udp_socket,
)
from netemu.services.protocol import ComputeStatus, Nemu, fragment_count, fragments
from netemu.services.scene import Scene

HEARD_WITHIN_NS = 3_000_000_000  # a compute unheard for longer is not considered
STICKY_MS = 2.0  # switch compute nodes only for one this much nearer


class Chooser:
    """Nearest compute node with a free slot, from heartbeats."""

    def __init__(self, computes: list[tuple[str, int]], policy: str = "nearest-free"):
        self.computes, self.policy = computes, policy
        self.heard: dict[tuple[str, int], dict] = {}
        self.turn = 0
        self.last: tuple[str, int] | None = None

    def heartbeat(self, datagram: bytes, source: str, arrival_ns: int) -> None:
        status = Nemu(datagram).getlayer(ComputeStatus)
        if status is None or (source, status.port) not in self.computes:
            return
        self.heard[(source, status.port)] = {
            "delay_ms": (arrival_ns - status.sent_ns) / 1e6,
            "free": status.slots - status.busy - status.queued,
            "at": arrival_ns,
        }

    def choose(self, now: int) -> tuple[tuple[str, int], str]:
        if self.policy == "round-robin":
            self.turn += 1
            return self.computes[(self.turn - 1) % len(self.computes)], "round-robin"
        live = {a: h for a, h in self.heard.items() if now - h["at"] < HEARD_WITHIN_NS}
        if len(self.computes) == 1:
            return self.computes[0], "the only one"
        if not live:
            return self.computes[0], "no heartbeat yet"
        free = {a: h for a, h in live.items() if h["free"] > 0}
        pool, why = (free, "nearest free") if free else (live, "all busy: nearest")
        best = min(pool, key=lambda a: pool[a]["delay_ms"])
        # Stay with the current node while it is free and about as near: its
        # tracker holds this sensor's tracks (equidistant neighbours would
        # otherwise alternate and split them).
        last = self.last
        if last in pool and pool[last]["delay_ms"] <= pool[best]["delay_ms"] + STICKY_MS:
            best, why = last, f"{why}, kept"
        self.last = best
        return best, f"{why} ({pool[best]['delay_ms']:.2f} ms)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netemu.services.sensor", description=__doc__.split("\n")[0])
    p.add_argument("--id", type=int, required=True, help="sensor number (on the wire)")
    p.add_argument("--bind", required=True, help="this node's service address")
    p.add_argument("--computes", required=True, help="compute ADDR[:PORT], comma-separated")
    p.add_argument("--policy", default="nearest-free", choices=["nearest-free", "round-robin"])
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    p.add_argument("--size", type=int, default=1024, help="tile side in pixels (4 B each)")
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--speed-px-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-ns", type=int, default=0, help="first capture at this time")
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)

    stop = stop_event()
    log = JsonLog(args.log)
    scene = Scene(
        args.seed,
        args.size,
        args.targets,
        speed_px_s=args.speed_px_s,
        frame_interval_s=args.interval,
    )
    out = udp_socket(args.bind)
    computes = [c.partition(":") for c in addresses(args.computes)]
    chooser = Chooser([(a, int(port or FRAGMENT_PORT)) for a, _, port in computes], args.policy)
    # Heartbeats only matter when choosing the nearest free among several.
    listen = args.policy == "nearest-free" and len(computes) > 1
    status = udp_socket(args.bind, STATUS_PORT, 1 << 20) if listen else None
    if status:
        status.setblocking(False)
    print("ready", flush=True)  # its sockets bound: the deployment goes on
    log.write(
        "start",
        sensor=args.id,
        frames=args.frames,
        interval_s=args.interval,
        size_px=args.size,
        targets=args.targets,
        speed_px_s=args.speed_px_s,
        seed=args.seed,
    )
    t0 = max(args.start_ns, now_ns())
    for seq in range(args.frames):
        due = t0 + int(seq * args.interval * 1e9)
        while not stop.is_set():  # heartbeats until the frame is due
            wait = (due - now_ns()) / 1e9
            if wait <= 0:
                break
            if select.select([status] if status else [], [], [], wait)[0]:
                while True:
                    try:
                        data, (src, _) = status.recvfrom(2048)
                    except BlockingIOError:
                        break
                    chooser.heartbeat(data, src, now_ns())
        if stop.is_set():
            break
        image = scene.frame(seq).image.tobytes()
        capture = now_ns()
        to, why = chooser.choose(capture)
        unsent, first_sent = 0, None
        for part in fragments(args.id, seq, capture, image):
            # As the first fragment, encoded, goes to the kernel: the app's time ends here.
            first_sent = first_sent or now_ns()
            unsent += not send(out, part, to)
        log.write(
            "frame",
            sensor=args.id,
            seq=seq,
            capture_ns=capture,
            first_sent_ns=first_sent,
            sent_end_ns=now_ns(),
            to=f"{to[0]}:{to[1]}",
            why=why,
            bytes=len(image),
            fragments=fragment_count(image),
            unsent=unsent,  # refused at once: no route to the compute node
        )
    log.write("end", sensor=args.id)
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
