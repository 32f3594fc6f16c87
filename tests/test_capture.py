"""Capture files and what is read from them, without a live run: pcapng written and read
back (and by tshark), capture points, per-hop analysis, the generated dissector, the CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

import netemu.services.dissect  # noqa: F401 - registers the services' messages
from netemu.capture import analysis, pcapng, wireshark
from netemu.capture.taps import CapturePoint, Tap, event_text
from netemu.errors import InputError
from netemu.services.app import REPORT_PORT
from netemu.services.protocol import ComputeStatus, FrameFragment, Nemu, Track, TrackReport

from helpers import REPO, run_netemu

T0 = 1_795_621_193_288_667_123  # ns since the epoch


def tshark(*args: str) -> list[list[str]]:
    out = subprocess.run(["tshark", *args], capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_pcapng_round_trip_and_tshark_reads_it(tmp_path):
    path = tmp_path / "x.pcapng"
    with pcapng.Writer(path, comment="a run") as w:
        a = w.add_interface(pcapng.Interface("a>b tx", "netemu tap: ..."))
        e = w.add_interface(pcapng.Interface("netemu events", "", pcapng.LINKTYPE_USER0))
        w.write(pcapng.Record(a, T0, b"\x01" * 61, direction=pcapng.OUTBOUND))
        w.write(pcapng.Record(e, T0 + 999, b'{"type":"routes"}', comment="routes changed"))
        w.statistics(a, T0 + 1000, received=5, dropped=4)
    interfaces, records = pcapng.read(path)
    records = list(records)
    assert (interfaces[0].received, interfaces[0].dropped) == (5, 4)
    assert [i.name for i in interfaces] == ["a>b tx", "netemu events"]
    assert interfaces[1].linktype == pcapng.LINKTYPE_USER0
    assert records == [
        pcapng.Record(0, T0, b"\x01" * 61, None, pcapng.OUTBOUND),
        pcapng.Record(1, T0 + 999, b'{"type":"routes"}', "routes changed", None),
    ]
    rows = tshark("-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                  "-e", "frame.interface_name", "-e", "frame.comment")  # fmt: skip
    assert rows == [
        ["1795621193.288667123", "a>b tx", ""],
        ["1795621193.288668122", "netemu events", "routes changed"],
    ]


@pytest.mark.parametrize("magic,unit", [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)])
def test_classic_pcap_as_tcpdump_writes_it(tmp_path, magic, unit):
    path = tmp_path / "raw.pcap"
    header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    packet = struct.pack("<IIII", 1_795_621_193, 288_667, 3, 3) + b"abc"
    path.write_bytes(header + packet)
    interfaces, records = pcapng.read(path)
    assert interfaces[0].linktype == 1
    assert list(records) == [pcapng.Record(0, 1_795_621_193_000_000_000 + 288_667 * unit, b"abc")]


def test_capture_points_and_their_taps():
    nodes = ["sat3", "sat4", "jet1"]
    node = CapturePoint.parse("sat3", nodes)
    link = CapturePoint.parse(" link:sat3-sat4", nodes)
    assert (node.file_name, link.file_name) == ("sat3.pcapng", "link-sat3-sat4.pcapng")
    assert node.taps("sat4", "sat3") == [Tap("sat3", "sat4", "tx"), Tap("sat4", "sat3", "rx")]
    assert node.taps("sat4", "jet1") == []
    assert set(link.taps("sat4", "sat3")) == {
        Tap(a, b, side) for a, b in [("sat3", "sat4"), ("sat4", "sat3")] for side in ("tx", "rx")
    }
    assert link.taps("sat3", "jet1") == []
    tap = Tap("sat3", "sat4", "rx")
    assert (tap.node, tap.device, tap.name) == ("sat4", "rx-sat3", "sat3>sat4 rx")
    assert Tap.from_interface(pcapng.Interface(tap.name, tap.describe())) == tap
    assert Tap.from_interface(pcapng.Interface("eth0", "")) is None
    for bad, problem in [
        ("sat9", "no node named 'sat9'"),
        ("link:sat3", "write a link as link:NODE-NODE"),
        ("link:sat3-sat3", "write a link as link:NODE-NODE"),
        ("link:sat3-nope", "no node named 'nope'"),
    ]:
        with pytest.raises(InputError, match=problem):
            CapturePoint.parse(bad, nodes)


def test_events_read_as_sentences():
    assert event_text({"type": "handover", "node": "jet1", "from": "t3", "to": "t2"}) == (
        "netemu: handover of jet1 from t3 to t2"
    )
    assert event_text({"type": "link-down", "a": "t1", "b": "t2", "reason": "occulted"}) == (
        "netemu: link t1-t2 down (occulted)"
    )
    assert event_text({"type": "routes", "changed": 4}) == "netemu: routes changed (4 next hops)"


def frame(payload: bytes | Packet, ident: int) -> bytes:
    """An Ethernet frame as a tap records it, to the services' report port."""
    udp = UDP(sport=40000, dport=REPORT_PORT)
    return bytes(Ether() / IP(src="172.16.0.1", dst="172.16.0.3", id=ident) / udp / payload)


def write_taps(path, window, packets):
    """packets: (tap, time_ns, frame)."""
    taps = sorted({t for t, _, _ in packets}, key=lambda t: t.name)
    with pcapng.Writer(path) as w:
        index = {
            t: w.add_interface(
                pcapng.Interface(t.name, f"{t.describe()} [captured {window[0]} to {window[1]} ns]")
            )
            for t in taps
        }
        for tap, t, data in packets:
            w.write(pcapng.Record(index[tap], t, data))


def test_latency_and_loss_per_hop_and_end_to_end(tmp_path):
    ab_tx, ab_rx = Tap("a", "b", "tx"), Tap("a", "b", "rx")
    bc_tx, bc_rx = Tap("b", "c", "tx"), Tap("b", "c", "rx")
    ms = 1_000_000
    report = Nemu(type=2) / TrackReport(sensor=1, seq=9, tracks=[Track(id=1)])
    one, two, late, gap = frame(report, 1), frame(b"two", 2), frame(b"late", 3), frame(b"g", 4)
    end = T0 + 2_000 * ms
    # a: taps at a; c: taps at c (two files of one run, one clock).
    write_taps(tmp_path / "a.pcapng", (T0, end), [
        (ab_tx, T0, one), (ab_rx, T0 + 5 * ms, one),
        (ab_tx, T0 + 10 * ms, two), (ab_rx, T0 + 15 * ms, two),
    ])  # fmt: skip
    write_taps(tmp_path / "c.pcapng", (T0, end), [
        (bc_tx, T0 + 6 * ms, one), (bc_rx, T0 + 9 * ms, one),
        (bc_tx, T0 + 16 * ms, two),  # lost between b and c
        (bc_tx, end - 100 * ms, late),  # still in flight when the capture stopped
    ])  # fmt: skip
    captured = analysis.load([tmp_path / "a.pcapng", tmp_path / "c.pcapng"])
    hops = analysis.hops(captured)
    assert hops[("a", "b")].latencies_ms == [5.0, 5.0] and hops[("a", "b")].lost == 0
    assert hops[("b", "c")].latencies_ms == [3.0]
    assert (hops[("b", "c")].sent, hops[("b", "c")].lost) == (2, 1)
    e2e = analysis.end_to_end(captured)
    (r,) = e2e["netemu report"]
    assert r["latency_ms"] == 9.0 and r["path"] == ["a", "b", "c"] and r["seq"] == 9
    assert [x["latency_ms"] for x in e2e["udp"]] == [5.0]  # two: a to b, then lost
    # Taps on x>a and b>c only: the path says where it was not seen.
    write_taps(tmp_path / "g.pcapng", (T0, end), [
        (Tap("x", "a", "tx"), T0, gap), (Tap("x", "a", "rx"), T0 + ms, gap),
        (bc_rx, T0 + 4 * ms, gap),
    ])  # fmt: skip
    (g,) = analysis.end_to_end(analysis.load([tmp_path / "g.pcapng"]))["udp"]
    assert g["path"] == ["x", "a", "…", "b", "c"] and g["latency_ms"] == 4.0
    result = json.loads(analysis.to_json(analysis.summary(captured)))
    assert [(h["hop"], h["lost"]) for h in result["hops"]] == [("a>b", 0), ("b>c", 1)]


def layer_values(layer: type[Packet], base: int) -> dict:
    """Distinct values for every field (floats exact in 32 bits), ns stamps near now."""
    values = {}
    for i, f in enumerate(layer.fields_desc):
        if f.name in ("tracks", "n_tracks", "magic", "version", "type"):
            continue
        if f.name.endswith("_ns"):
            values[f.name] = T0 + base * 1000 + i
        elif "Float" in type(f).__name__:
            values[f.name] = base + i + 0.25
        else:
            values[f.name] = base + i
    return values


def decode(lua, path, where: str, fields: list[str]) -> list[list[str]]:
    fields = [a for f in fields for a in ("-e", f)]
    return tshark("-X", f"lua_script:{lua}", "-r", str(path), "-Y", where, "-T", "fields", *fields)


def test_the_dissector_decodes_every_field_of_every_message(tmp_path):
    lua = wireshark.install(tmp_path / "netemu.lua")
    messages = {
        "fragment": (FrameFragment, Nemu(type=1) / FrameFragment(**layer_values(FrameFragment, 9))),
        "report": (TrackReport, Nemu(type=2) / TrackReport(
            **layer_values(TrackReport, 20),
            tracks=[Track(**layer_values(Track, 40)), Track(**layer_values(Track, 50))],
        )),
        "status": (ComputeStatus, Nemu(type=3) / ComputeStatus(**layer_values(ComputeStatus, 3))),
    }  # fmt: skip
    path = tmp_path / "m.pcapng"
    with pcapng.Writer(path) as w:
        i = w.add_interface(pcapng.Interface("x", ""))
        for n, (_, message) in enumerate(messages.values()):
            w.write(pcapng.Record(i, T0 + n, frame(message, n)))
    for n, (short, (layer, message)) in enumerate(messages.items()):
        names = [f.name for f in layer.fields_desc if f.name != "tracks"]
        fields = [f"netemu.{short}.{name}" for name in names]
        (row,) = decode(lua, path, f"frame.number == {n + 1}", fields)
        for name, text in zip(names, row, strict=True):
            sent = getattr(Nemu(bytes(message))[layer], name)  # as built, counts filled in
            assert type(sent)(text) == sent, f"{short}.{name}: {text}"
    times = decode(lua, path, "netemu.type == 2", ["netemu.report.sent_time", "netemu.track.v_col"])
    assert times[0][0].startswith("Nov 25, 2026 15:39:53.288")
    assert times[0][1] == "44.25,54.25"


def test_analyze_and_wireshark_commands(tmp_path):
    missing = run_netemu("analyze", tmp_path / "none.pcapng")
    (tmp_path / "text.pcapng").write_text("not a capture")
    garbage = run_netemu("analyze", tmp_path / "text.pcapng")
    pcapng.Writer(tmp_path / "plain.pcapng").close()
    plain = run_netemu("analyze", tmp_path / "plain.pcapng")
    for result, problem in [
        (missing, "none.pcapng: no such file"),
        (garbage, "text.pcapng: not a readable capture"),
        (plain, "plain.pcapng: no netemu taps in this capture"),
    ]:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert problem in result.stderr and len(result.stderr.splitlines()) == 1
    installed = subprocess.run(
        [str(REPO / ".venv/bin/netemu"), "wireshark"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path), "SUDO_UID": "", "SUDO_GID": ""},
    )
    plugin = tmp_path / ".local/lib/wireshark/plugins/netemu.lua"
    assert installed.returncode == 0 and str(plugin) in installed.stdout
    assert plugin.read_text() == wireshark.dissector_lua()


def test_analysis_names_packets_by_what_their_protocol_registered():
    """A registered protocol names its messages; where it gives no label (a compute
    status), and for any other packet, the addresses do."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from netemu.services.protocol import ComputeStatus, Nemu

    def frame(payload) -> bytes:
        return bytes(Ether() / IP(src="172.16.0.3", dst="172.16.0.9", id=7)
                     / UDP(sport=5000, dport=5001) / payload)  # fmt: skip

    _, kind, label, _ = analysis.identify(frame(Nemu() / ComputeStatus()))
    assert (kind, label) == ("netemu status", "172.16.0.3:5000 > 172.16.0.9:5001")
    _, kind, label, _ = analysis.identify(frame(b"other"))
    assert (kind, label) == ("udp", "172.16.0.3:5000 > 172.16.0.9:5001")


def test_any_udp_or_tcp_flow_end_to_end_and_chosen_by_port(tmp_path):
    """A user's application's flows, no netemu protocol in them: per flow (protocol,
    addresses and ports), the end-to-end latency over the taps, chosen by port."""
    from scapy.layers.inet import TCP

    ms = 1_000_000
    ab_tx, ab_rx = Tap("a", "b", "tx"), Tap("a", "b", "rx")
    udp = bytes(Ether() / IP(src="172.16.0.1", dst="172.16.0.2", id=7)
                / UDP(sport=7000, dport=7001) / b"activations")  # fmt: skip
    tcp = bytes(Ether() / IP(src="172.16.0.1", dst="172.16.0.2", id=8)
                / TCP(sport=45000, dport=8080) / b"GET /")  # fmt: skip
    write_taps(tmp_path / "f.pcapng", (T0, T0 + 2_000 * ms), [
        (ab_tx, T0, udp), (ab_rx, T0 + 4 * ms, udp),
        (ab_tx, T0 + ms, tcp), (ab_rx, T0 + 7 * ms, tcp),
    ])  # fmt: skip
    captured = analysis.load([tmp_path / "f.pcapng"])
    every = analysis.summary(captured, per_flow=True)["flows"]
    assert [(f["flow"], f["messages"], f["latency_ms"]["p50"]) for f in every] == [
        ("tcp 172.16.0.1:45000 > 172.16.0.2:8080", 1, 6.0),
        ("udp 172.16.0.1:7000 > 172.16.0.2:7001", 1, 4.0),
    ]
    (chosen,) = analysis.summary(captured, ports={7001})["flows"]
    assert chosen["flow"].startswith("udp") and chosen["paths"] == ["a>b"]
    assert "flows" not in analysis.summary(captured)
