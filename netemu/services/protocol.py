"""The tracking protocol on the wire, defined once as scapy layers.

UDP datagrams, all starting with a common header (magic ``NEMU``, version,
message type):

- :class:`FrameFragment` (type 1): one piece of a sensor frame. A frame of a
  few MB is split into fragments that fit one datagram; each carries the
  sensor, the frame's sequence number and capture time (ns since the epoch;
  all emulated nodes share one clock), and its index and count.
- :class:`TrackReport` (type 2): what a compute satellite concluded about one
  frame, with the timestamps of each stage (capture, first fragment and whole
  frame at the compute node, inference start and end, sent) and the tracks.
- :class:`ComputeStatus` (type 3): a compute service's heartbeat to its
  sensors: worker slots, how many are busy, frames queued, and when it was
  sent (so the sensor measures its one-way delay to each compute node).

The services build their datagrams with these layers; the analysis and the
Wireshark dissector read the same fields. Fragments are the hot path (~3,500
per 4 MB frame), so :data:`FRAGMENT` packs and unpacks them with a
:mod:`struct` layout derived from the same ``fields_desc``. :class:`Reassembler` collects
fragments into frames and gives up on a frame after a timeout, counting what
was lost instead of waiting for it forever.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
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
        LongField("first_rx_ns", 0),
        LongField("received_ns", 0),
        LongField("inference_start_ns", 0),
        LongField("inference_end_ns", 0),
        LongField("sent_ns", 0),
        IntField("lost_fragments", 0),
        FieldLenField("n_tracks", None, count_of="tracks", fmt="!H"),
        PacketListField("tracks", [], Track, count_from=lambda p: p.n_tracks),
    ]


class ComputeStatus(Packet):
    name = "netemu compute status"
    fields_desc = [
        ShortField("compute", 0),
        ShortField("port", 0),  # the instance's fragment port (several per node)
        LongField("sent_ns", 0),
        ShortField("slots", 0),
        ShortField("busy", 0),
        IntField("queued", 0),
    ]


bind_layers(Nemu, FrameFragment, type=1)
bind_layers(Nemu, TrackReport, type=2)
bind_layers(Nemu, ComputeStatus, type=3)


class Layout:
    """The fixed-size fields of stacked layers as one :class:`struct.Struct`."""

    def __init__(self, *layers: type[Packet], upto: str | None = None):
        """The fields of ``layers`` (those before the field ``upto`` if given)."""
        fields = [f for layer in layers for f in layer.fields_desc]
        if upto:
            fields = fields[: [f.name for f in fields].index(upto)]
        codes = [
            f"{f.length_from(None)}s" if isinstance(f, StrFixedLenField) else f.fmt.lstrip("!")
            for f in fields
        ]
        self.names = [f.name for f in fields]
        self.struct = struct.Struct("!" + "".join(codes))
        self.size = self.struct.size
        sizes = [struct.calcsize("!" + c) for c in codes]
        #: Byte offset of each field (to patch one in a packed header).
        self.offsets = dict(zip(self.names, itertools.accumulate([0, *sizes[:-1]]), strict=True))

    def pack(self, **values) -> bytes:
        return self.struct.pack(*(values[n] for n in self.names))

    def unpack(self, datagram: bytes) -> dict:
        return dict(zip(self.names, self.struct.unpack_from(datagram), strict=True))


#: Header of every fragment datagram: Nemu + FrameFragment.
FRAGMENT = Layout(Nemu, FrameFragment)


#: Where a report's send time sits: stamped into the built datagram just before it goes.
REPORT_SENT_AT = Layout(Nemu, TrackReport, upto="sent_ns").size


def stamp_sent(report: bytearray, sent_ns: int) -> None:
    struct.pack_into("!Q", report, REPORT_SENT_AT, sent_ns)


def fragment_count(data: bytes) -> int:
    return max(1, -(-len(data) // FRAGMENT_PAYLOAD_BYTES))


def fragments(sensor: int, seq: int, capture_ns: int, data: bytes) -> Iterator[bytes]:
    """A frame's bytes as datagrams (header + fragment), made as they are sent."""
    n = fragment_count(data)
    header = bytearray(
        FRAGMENT.pack(
            magic=MAGIC,
            version=VERSION,
            type=1,
            sensor=sensor,
            seq=seq,
            capture_ns=capture_ns,
            index=0,
            count=n,
        )
    )
    at, size = FRAGMENT.offsets["index"], FRAGMENT_PAYLOAD_BYTES
    for i in range(n):
        struct.pack_into("!H", header, at, i)
        yield bytes(header) + data[i * size : (i + 1) * size]


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
    first_seen: float  # when its first fragment arrived
    completed_at: float


class Reassembler:
    """Fragments in (any order, some lost), whole frames out; stale frames dropped.

    Times (``now``) are in whatever unit the caller uses, ``timeout`` in the same.
    """

    def __init__(self, timeout: float = 2.0):
        self.timeout = timeout
        self.partial: dict[tuple[int, int], _Partial] = {}
        self.frames_lost = 0
        self.fragments_lost = 0

    def add(self, datagram: bytes, now: float) -> Complete | None:
        if len(datagram) < FRAGMENT.size:
            return None
        h = FRAGMENT.unpack(datagram)
        if h["magic"] != MAGIC or h["type"] != 1:
            return None
        key = (h["sensor"], h["seq"])
        part = self.partial.get(key)
        if part is None:
            part = self.partial[key] = _Partial(h["capture_ns"], h["count"], now)
        part.parts[h["index"]] = datagram[FRAGMENT.size :]
        if len(part.parts) < part.count:
            return None
        del self.partial[key]
        data = b"".join(part.parts[i] for i in range(part.count))
        return Complete(*key, part.capture_ns, data, part.first_seen, now)

    def expire(self, now: float) -> list[tuple[int, int, int]]:
        """Give up on frames older than the timeout: (sensor, seq, missing fragments)."""
        gone = []
        for key, part in list(self.partial.items()):
            if now - part.first_seen > self.timeout:
                missing = part.count - len(part.parts)
                del self.partial[key]
                self.frames_lost += 1
                self.fragments_lost += missing
                gone.append((*key, missing))
        return gone
