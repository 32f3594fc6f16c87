"""The tracking protocol: every message builds and parses; frames survive reordering,
and lost fragments are counted, not waited for."""

import random

import pytest

from netemu.services.protocol import (
    MAGIC,
    FrameFragment,
    Nemu,
    Reassembler,
    Track,
    TrackReport,
    fragments,
)


def test_fragment_round_trip():
    raw = bytes(
        Nemu()
        / FrameFragment(sensor=3, seq=77, capture_ns=1_750_000_000_123_456_789, index=2, count=9)
        / b"pixels"
    )
    pkt = Nemu(raw)
    assert pkt.magic == MAGIC and pkt.type == 1
    f = pkt[FrameFragment]
    assert (f.sensor, f.seq, f.capture_ns, f.index, f.count) == (
        3,
        77,
        1_750_000_000_123_456_789,
        2,
        9,
    )
    assert bytes(f.payload) == b"pixels"


def test_track_report_round_trip():
    tracks = [Track(id=i, row=10.5 * i, col=3.25, v_row=-1.5, v_col=0.75) for i in range(3)]
    raw = bytes(
        Nemu()
        / TrackReport(
            compute=5,
            sensor=3,
            seq=77,
            capture_ns=1,
            received_ns=2,
            inference_start_ns=3,
            inference_end_ns=4,
            sent_ns=5,
            lost_fragments=6,
            tracks=tracks,
        )
    )
    rep = Nemu(raw)[TrackReport]
    assert Nemu(raw).type == 2
    assert (rep.compute, rep.seq, rep.received_ns, rep.sent_ns, rep.lost_fragments) == (
        5,
        77,
        2,
        5,
        6,
    )
    assert rep.n_tracks == 3
    assert [(t.id, t.row, t.col, t.v_row, t.v_col) for t in rep.tracks] == [
        (i, pytest.approx(10.5 * i), 3.25, -1.5, 0.75) for i in range(3)
    ]


def test_frames_reassemble_in_any_order():
    data = random.Random(1).randbytes(50_000)
    parts = list(fragments(1, 9, 123, data))
    assert len(parts) == 42 and all(len(p) <= 1300 for p in parts)
    random.Random(2).shuffle(parts)
    r = Reassembler()
    done = [r.add(p, now=0.0) for p in parts]
    assert all(d is None for d in done[:-1])
    assert done[-1].data == data and done[-1].capture_ns == 123


def test_lost_fragments_are_counted_not_awaited():
    r = Reassembler(timeout=1.0)
    parts = list(fragments(1, 10, 5, bytes(10_000)))
    for p in parts[:-3]:
        assert r.add(p, now=0.0) is None
    assert r.expire(now=0.5) == []
    assert r.expire(now=1.5) == [(1, 10, 3)]
    assert (r.frames_lost, r.fragments_lost) == (1, 3)
    assert r.partial == {}
