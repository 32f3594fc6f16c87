"""Latency and loss from captures: each packet, followed from tap to tap.

netemu's captures (:mod:`netemu.capture.taps`) tap every hop on both sides: ``A>B
tx`` as A sends, ``A>B rx`` as B receives after the emulated propagation. All
namespaces share one clock, so the same packet seen at several taps, in one
file or several, gives:

- per hop: its one-way latency (rx - tx) and whether it arrived (a packet seen
  leaving A for B, while B's side was recording, that never reached B is
  lost on that hop);
- per message: end-to-end latency from the first tap that saw it leave to the
  last that saw it arrive, and the path it took;
- per flow (``--flows``; ``--port`` to choose): the same, for each UDP or TCP flow
  (protocol, source and destination address and port) of any application, a
  user's container's too, with no protocol of netemu's in it.

A packet is recognised by what no router changes: source, destination,
protocol, IP identification and a checksum of the IP payload (TTL and header
checksum change hop by hop). netemu's own protocol is named by message type
and sequence number (:mod:`netemu.services.protocol`), so reports can be
compared with what the services measured themselves.
"""

from __future__ import annotations

import bisect
import json
import socket
import struct
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netemu.capture import pcapng
from netemu.capture.taps import Tap, tap_window
from netemu.errors import InputError
from netemu.formats import stamp
from netemu.stats import percentiles

#: A packet sent this long before its receiver's tap stopped may still have been in flight.
IN_FLIGHT_GRACE_NS = 500_000_000
_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp"}

#: What a UDP payload is, for the protocols that registered a recogniser: each takes
#: the payload and says (kind, label or None, fields), or None for not mine. netemu's own
#: services register theirs (netemu.services.dissect); this module knows none.
Recogniser = Callable[[bytes], tuple[str, str | None, dict] | None]
PAYLOADS: list[Recogniser] = []


def register_payload(recognise: Recogniser) -> Recogniser:
    """Add a protocol's recogniser of UDP payloads (usable as a decorator)."""
    if recognise not in PAYLOADS:
        PAYLOADS.append(recognise)
    return recognise


@dataclass
class Message:
    """One packet (as its sender made it) and where and when the taps saw it."""

    kind: str
    label: str
    seen: list[tuple[int, Tap]] = field(default_factory=list)  # (time_ns, tap)
    fields: dict = field(default_factory=dict)


@dataclass
class Captured:
    """What a set of capture files holds."""

    messages: dict[tuple, Message] = field(default_factory=dict)
    windows: dict[Tap, tuple[int, int]] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)  # (time_ns, comment)
    #: Packets a tap's recorder dropped (from the files' interface statistics), where any.
    dropped: dict[Tap, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def identify(frame: bytes) -> tuple[tuple, str, str, dict] | None:
    """(key, kind, label, fields) of an Ethernet frame carrying IPv4; None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    total, ident = struct.unpack_from("!HH", ip, 2)
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    payload = ip[header:total]
    key = (src, dst, proto, ident, zlib.crc32(payload))
    kind = _PROTOCOLS.get(proto, f"ip proto {proto}")
    label, fields = f"{src} > {dst}", {}
    if proto in (6, 17) and len(payload) >= 4:
        sport, dport = struct.unpack_from("!HH", payload)
        label = f"{src}:{sport} > {dst}:{dport}"
        fields = {"flow": f"{kind} {label}", "ports": (sport, dport)}
    if proto == 17 and len(payload) >= 8:
        for recognise in PAYLOADS:
            if found := recognise(payload[8:]):
                kind, label, fields = found[0], found[1] or label, {**fields, **found[2]}
                break
    elif proto == 1 and len(payload) >= 8 and payload[0] in (0, 8):
        ident_icmp, seq = struct.unpack_from("!HH", payload, 4)
        label += f" echo {'request' if payload[0] == 8 else 'reply'} {ident_icmp}/{seq}"
    return key, kind, label, fields


def load(paths: list[str | Path]) -> Captured:
    """Read netemu capture files (several points of one run) into one view."""
    out = Captured()
    for path in paths:
        try:
            interfaces, records = pcapng.read(path)
            taps: dict[int, Tap | None] = {}
            for rec in records:
                if rec.interface not in taps:
                    iface = interfaces[rec.interface]
                    tap = taps[rec.interface] = Tap.from_interface(iface)
                    if tap is not None and (window := tap_window(iface)):
                        old = out.windows.get(tap, window)
                        out.windows[tap] = (min(old[0], window[0]), max(old[1], window[1]))
                tap = taps[rec.interface]
                if tap is None:
                    if interfaces[rec.interface].linktype == pcapng.LINKTYPE_USER0 and rec.comment:
                        out.events.append((rec.time_ns, rec.comment))
                    continue
                found = identify(rec.data)
                if found is None:
                    continue
                key, kind, label, fields = found
                message = out.messages.get(key)
                if message is None:
                    message = out.messages[key] = Message(kind, label, fields=fields)
                if (rec.time_ns, tap) not in message.seen:  # the same tap in two files
                    message.seen.append((rec.time_ns, tap))
        except FileNotFoundError:
            raise InputError("no such file", file=path) from None
        except (pcapng.FormatError, struct.error, IndexError) as exc:
            raise InputError(f"not a readable capture ({exc})", file=path) from None
        for iface in interfaces:
            if iface.dropped and (tap := Tap.from_interface(iface)):
                out.dropped[tap] = max(out.dropped.get(tap, 0), iface.dropped)
        if not any(Tap.from_interface(i) for i in interfaces):
            raise InputError(
                "no netemu taps in this capture (make one with 'netemu run --capture')", file=path
            )
        out.files.append(str(path))
    out.events = sorted(set(out.events))
    return out


@dataclass
class Hop:
    sender: str
    receiver: str
    sent: int = 0  # seen leaving (while the receiving side recorded)
    arrived: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: (tx time ns, latency ms) per packet, for plots and for comparing with the geometry.
    series: list[tuple[int, float]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.arrived


def hops(captured: Captured) -> dict[tuple[str, str], Hop]:
    """Per hop (sender, receiver) with both sides tapped: packets, loss and latency."""
    out: dict[tuple[str, str], Hop] = {}
    for message in captured.messages.values():
        by_hop: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(
            lambda: {"tx": [], "rx": []}
        )
        for t, tap in message.seen:
            by_hop[(tap.sender, tap.receiver)][tap.side].append(t)
        for (a, b), sides in by_hop.items():
            rx_window = captured.windows.get(Tap(a, b, "rx"))
            if rx_window is None or Tap(a, b, "tx") not in captured.windows:
                continue
            hop = out.get((a, b)) or out.setdefault((a, b), Hop(a, b))
            arrivals = sorted(sides["rx"])
            for t in sorted(sides["tx"]):
                i = bisect.bisect_left(arrivals, t)
                if i < len(arrivals):
                    latency = (arrivals.pop(i) - t) / 1e6
                    hop.sent += 1
                    hop.arrived += 1
                    hop.latencies_ms.append(latency)
                    hop.series.append((t, latency))
                elif rx_window[0] <= t <= rx_window[1] - IN_FLIGHT_GRACE_NS:
                    hop.sent += 1
    return out


def end_to_end(captured: Captured) -> dict[str, list[dict]]:
    """Per message kind: first tx to last rx of every message seen leaving and arriving."""
    out: dict[str, list[dict]] = defaultdict(list)
    for message in captured.messages.values():
        tx = [t for t, tap in message.seen if tap.side == "tx"]
        rx = [t for t, tap in message.seen if tap.side == "rx"]
        if not tx or not rx or max(rx) <= min(tx):
            continue
        start, end = min(tx), max(rx)
        between = sorted((s for s in message.seen if start <= s[0] <= end), key=lambda s: s[0])
        path: list[str] = []
        for _, tap in between:  # "…" where hops between two taps were not captured
            if path[-2:] == [tap.sender, tap.receiver]:
                continue  # the same hop's other side
            if path and path[-1] != tap.sender:
                path.append("…")
            if not path or path[-1] != tap.sender:
                path.append(tap.sender)
            path.append(tap.receiver)
        out[message.kind].append(
            {
                "label": message.label,
                "sent_ns": start,
                "latency_ms": (end - start) / 1e6,
                "path": path,
                **message.fields,
            }
        )
    return out


def flows(per_kind: dict[str, list[dict]], ports: set[int] = frozenset()) -> list[dict]:
    """End to end per UDP or TCP flow (with a port of ``ports``, if given)."""
    by_flow: dict[str, list[dict]] = defaultdict(list)
    for rows in per_kind.values():
        for r in rows:
            if "flow" in r and (not ports or ports & set(r["ports"])):
                by_flow[r["flow"]].append(r)
    return [
        {
            "flow": flow,
            "messages": len(rows),
            "paths": sorted({">".join(r["path"]) for r in rows}),
            "latency_ms": percentiles(r["latency_ms"] for r in rows),
        }
        for flow, rows in sorted(by_flow.items())
    ]


def summary(captured: Captured, per_flow: bool = False, ports: set[int] = frozenset()) -> dict:
    """What ``netemu analyze`` prints, as a JSON-ready dict (``per_flow``: with a
    table per UDP/TCP flow, those with a port in ``ports`` if given)."""
    per_hop = hops(captured)
    per_kind = end_to_end(captured)
    return {
        "files": captured.files,
        "packets": len(captured.messages),
        "hops": [
            {
                "hop": f"{h.sender}>{h.receiver}",
                "sent": h.sent,
                "arrived": h.arrived,
                "lost": h.lost,
                "loss_percent": 100 * h.lost / h.sent if h.sent else 0.0,
                "latency_ms": percentiles(h.latencies_ms),
            }
            for h in sorted(per_hop.values(), key=lambda h: (h.sender, h.receiver))
        ],
        "end_to_end": [
            {
                "kind": kind,
                "messages": len(rows),
                "paths": sorted({">".join(r["path"]) for r in rows}),
                "latency_ms": percentiles(r["latency_ms"] for r in rows),
            }
            for kind, rows in sorted(per_kind.items())
        ],
        **({"flows": flows(per_kind, set(ports))} if per_flow or ports else {}),
        "events": [{"unix_ns": t, "text": text} for t, text in captured.events],
        "dropped_by_capture": {tap.name: n for tap, n in captured.dropped.items()},
    }


def to_json(result: dict) -> str:
    return json.dumps({**stamp("analysis"), **result}, indent=2, default=float)
