"""The tracking protocol on the wire, defined once as scapy layers.

UDP datagrams, all starting with a common header (magic ``NEMU``, version,
message type):

- :class:`FrameFragment` (type 1): one piece of a sensor frame. A frame of a
  few MB is split into fragments that fit one datagram; each carries the
  sensor, the frame's sequence number and capture time (ns since the epoch;
  all emulated nodes share one clock), and its index and count.
- :class:`TrackReport` (type 2): what a compute satellite concluded about one
  frame, with the timestamps of each stage (capture, frame complete at the
  compute node, inference start and end, sent) and the tracks.

The services build their datagrams with these layers; the analysis and the
Wireshark dissector read the same fields. :class:`Reassembler` collects
fragments into frames and gives up on a frame after a timeout, counting what
was lost instead of waiting for it forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.fields import (
    FieldLenField,
    IEEEFloatField,
    IntField,
    LongField,
    PacketListField,
    ShortField,
    StrFixedLenField,
    XByteField,
)
from scapy.packet import Packet, bind_layers

MAGIC = b"NEMU"
VERSION = 1
FRAGMENT_PAYLOAD_BYTES = 1200  # + headers: one datagram within a 1,500-byte MTU


class Nemu(Packet):
    name = "netemu"
    fields_desc = [
        StrFixedLenField("magic", MAGIC, 4),
        XByteField("version", VERSION),
        XByteField("type", 0),
    ]


class FrameFragment(Packet):
    name = "netemu frame fragment"
    fields_desc = [
        ShortField("sensor", 0),
        IntField("seq", 0),
        LongField("capture_ns", 0),
        ShortField("index", 0),
        ShortField("count", 1),
    ]


class Track(Packet):
    name = "track"
    fields_desc = [
        IntField("id", 0),
        IEEEFloatField("row", 0.0),
        IEEEFloatField("col", 0.0),
        IEEEFloatField("v_row", 0.0),
        IEEEFloatField("v_col", 0.0),
    ]

    def extract_padding(self, s):
        return b"", s


class TrackReport(Packet):
    name = "netemu track report"
    fields_desc = [
        ShortField("compute", 0),
        ShortField("sensor", 0),
        IntField("seq", 0),
        LongField("capture_ns", 0),
        LongField("received_ns", 0),
        LongField("inference_start_ns", 0),
        LongField("inference_end_ns", 0),
        LongField("sent_ns", 0),
        IntField("lost_fragments", 0),
        FieldLenField("n_tracks", None, count_of="tracks", fmt="!H"),
        PacketListField("tracks", [], Track, count_from=lambda p: p.n_tracks),
    ]


bind_layers(Nemu, FrameFragment, type=1)
bind_layers(Nemu, TrackReport, type=2)


def fragments(sensor: int, seq: int, capture_ns: int, data: bytes) -> list[bytes]:
    """A frame's bytes as datagrams (header + fragment)."""
    n = max(1, -(-len(data) // FRAGMENT_PAYLOAD_BYTES))
    return [
        bytes(
            Nemu()
            / FrameFragment(sensor=sensor, seq=seq, capture_ns=capture_ns, index=i, count=n)
            / data[i * FRAGMENT_PAYLOAD_BYTES : (i + 1) * FRAGMENT_PAYLOAD_BYTES]
        )
        for i in range(n)
    ]


@dataclass
class _Partial:
    capture_ns: int
    count: int
    first_seen: float
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Complete:
    sensor: int
    seq: int
    capture_ns: int
    data: bytes
    completed_at: float


class Reassembler:
    """Fragments in (any order, some lost), whole frames out; stale frames dropped."""

    def __init__(self, timeout_s: float = 2.0):
        self.timeout_s = timeout_s
        self.partial: dict[tuple[int, int], _Partial] = {}
        self.frames_lost = 0
        self.fragments_lost = 0

    def add(self, datagram: bytes, now: float) -> Complete | None:
        pkt = Nemu(datagram)
        frag = pkt.getlayer(FrameFragment)
        if pkt.magic != MAGIC or frag is None:
            return None
        key = (frag.sensor, frag.seq)
        part = self.partial.setdefault(key, _Partial(frag.capture_ns, frag.count, now))
        part.parts[frag.index] = bytes(frag.payload)
        if len(part.parts) < part.count:
            return None
        del self.partial[key]
        data = b"".join(part.parts[i] for i in range(part.count))
        return Complete(frag.sensor, frag.seq, part.capture_ns, data, now)

    def expire(self, now: float) -> list[tuple[int, int, int]]:
        """Give up on frames older than the timeout: (sensor, seq, missing fragments)."""
        gone = []
        for key, part in list(self.partial.items()):
            if now - part.first_seen > self.timeout_s:
                missing = part.count - len(part.parts)
                del self.partial[key]
                self.frames_lost += 1
                self.fragments_lost += missing
                gone.append((*key, missing))
        return gone
