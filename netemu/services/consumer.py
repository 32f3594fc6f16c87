"""The consumer application: an aircraft or a command post receiving track reports.

Logs every :class:`TrackReport` with its arrival time and all the stage
timestamps it carries, and its tracks, one JSON line per report.

    python -m netemu.services.consumer --bind ADDR --log F
"""

from __future__ import annotations

import argparse
import select
import sys

from netemu.services.app import REPORT_PORT, JsonLog, now_ns, stop_event, udp_socket
from netemu.services.protocol import Nemu, TrackReport

STAMPS = (
    "capture_ns",
    "first_rx_ns",
    "received_ns",
    "inference_start_ns",
    "inference_end_ns",
    "sent_ns",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="netemu.services.consumer", description=__doc__.split("\n")[0])
    p.add_argument("--id", type=int, required=True, help="this consumer's number (for the log)")
    p.add_argument("--bind", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args(argv)
    stop = stop_event()
    log = JsonLog(args.log)
    rx = udp_socket(args.bind, REPORT_PORT, 4 << 20)
    log.write("start", consumer=args.id)
    print("ready", flush=True)
    while not stop.is_set():
        if not select.select([rx], [], [], 0.1)[0]:
            continue
        data = rx.recv(65536)
        arrival = now_ns()
        rep = Nemu(data).getlayer(TrackReport)
        if rep is None:
            continue
        log.write(
            "report",
            consumer=args.id,
            arrival_ns=arrival,
            compute=rep.compute,
            sensor=rep.sensor,
            seq=rep.seq,
            **{k: getattr(rep, k) for k in STAMPS},
            lost_fragments=rep.lost_fragments,
            tracks=[[t.id, t.row, t.col, t.v_row, t.v_col] for t in rep.tracks],
        )
    log.write("end", consumer=args.id)
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
