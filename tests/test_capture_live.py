"""Captures of a live run: files Wireshark and tshark read, nothing lost at stop,
events as comments, the dissector on real traffic, latency per hop from the taps."""

from __future__ import annotations

import bisect
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

import netemu.services.dissect  # noqa: F401 - registers the services' messages
from netemu.capture import analysis, pcapng, wireshark
from netemu.live.emulation import Emulation
from netemu.services.protocol import Nemu, Track, TrackReport

from helpers import REPO, TOPOLOGIES, leftovers, needs_root, train_topology

pytestmark = needs_root

#: Sends TrackReports numbered 0..count-1 to ADDR:9100, stamping sent_ns; prints how many.
SENDER = """
import socket, sys, time
from netemu.services.protocol import Nemu, Track, TrackReport
addr, first, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(first, first + count):
    tracks = [Track(id=seq, row=seq + 0.5, col=-0.25, v_row=1.5, v_col=-2.0)]
    m = Nemu(type=2) / TrackReport(compute=2, sensor=7, seq=seq, capture_ns=10**18 + seq,
        first_rx_ns=2 * 10**18 + seq, lost_fragments=seq % 5, tracks=tracks)
    m[TrackReport].sent_ns = time.time_ns()
    s.sendto(bytes(m), (addr, 9100))
    time.sleep(gap)
print(count)
"""


def send_reports(emu, src: str, dst: str, first: int, count: int, gap: float) -> None:
    out = emu.host(src).popen(
        [sys.executable, "-c", SENDER, emu.address(dst), str(first), str(count), str(gap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = out.communicate(timeout=60)
    assert out.returncode == 0 and stdout.strip() == str(count), stderr


def tshark(path, *args: str, lua=None) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), *(["-X", f"lua_script:{lua}"] if lua else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_captures_on_two_hops_of_a_live_run(tmp_path):
    """gs_south -> gs_north crosses t1-t2 and t2-t3 until gs_north hands over from t3 to t2."""
    topo = train_topology(
        tmp_path,
        "link_defaults:\n  space_ground: {acquisition_s: 2, reacquisition_s: 1}\n",
        start="2026-06-21T03:06:20Z",  # gs_north hands over at 8.2 s wall; gs_south sets at 12 s
    )
    captures = tmp_path / "captures"
    with Emulation(
        topo,
        shaper="wire",
        speed=10,
        step_s=0.2,
        run_name="tcap",
        keep_history=True,
        capture=["link:t1-t2", "link:t2-t3"],
        capture_dir=captures,
    ) as emu:
        emu.start_controller()
        assert emu.route("gs_south", "gs_north") == ["gs_south", "t0", "t1", "t2", "t3", "gs_north"]
        send_reports(emu, "gs_south", "gs_north", 0, 300, 0.005)
        assert emu.wait_until(lambda: emu.handovers > 0, timeout=15)
        # gs_north acquires t2 (2 s), then the path is gs_south t0 t1 t2 gs_north.
        assert emu.wait_until(lambda: emu.route("gs_south", "gs_north"), timeout=10)
        assert emu.route("gs_south", "gs_north")[-2:] == ["t2", "gs_north"]
        # The last burst, then stop at once: a capture must hold every packet that arrived.
        send_reports(emu, "gs_south", "gs_north", 1000, 50, 0.0)
        emu.wait(0.05)
    history = emu.history
    assert not leftovers("tcap")

    files = {p.name for p in emu.capture_files}
    assert files == {"link-t1-t2.pcapng", "link-t2-t3.pcapng", "all.pcapng"}
    for p in emu.capture_files:
        assert subprocess.run(["capinfos", str(p)], capture_output=True).returncode == 0

    # Every report, at every tap it should have passed; the last burst only crosses t1-t2.
    rows = tshark(
        captures / "all.pcapng", "-Y", "netemu", "-T", "fields",
        "-e", "frame.interface_name", "-e", "netemu.report.seq",
        lua=wireshark.install(tmp_path / "netemu.lua"),
    )  # fmt: skip
    seen: dict[str, set[int]] = {}
    for interface, seq in rows:
        seen.setdefault(interface, set()).add(int(seq))
    before, burst = set(range(300)), set(range(1000, 1050))
    for tap in ("t1>t2 tx", "t1>t2 rx"):
        assert seen[tap] == before | burst, tap
    for tap in ("t2>t3 tx", "t2>t3 rx"):
        assert seen[tap] == before, tap

    # The handover (and the routes it changed) are in the file as comments, in time.
    comments = tshark(captures / "all.pcapng", "-Y", "frame.comment", "-T", "fields",
                      "-e", "frame.time_epoch", "-e", "frame.comment")  # fmt: skip
    handover = [float(t) for t, c in comments if "handover of gs_north from t3 to t2" in c]
    assert len(handover) == 1
    event = next(e for e in emu.events if e["type"] == "handover" and e["node"] == "gs_north")
    assert abs(handover[0] - event["unix_s"]) < 1e-6
    assert any("routes changed" in c for _, c in comments)

    # Per hop latency from the taps = the link's geometric delay in force (within 0.5 ms).
    stamps = history.times
    captured = analysis.load([captures / "link-t1-t2.pcapng", captures / "link-t2-t3.pcapng"])
    per_hop = analysis.hops(captured)
    assert set(per_hop) == {("t1", "t2"), ("t2", "t1"), ("t2", "t3"), ("t3", "t2")}
    for key in [("t1", "t2"), ("t2", "t3")]:
        hop = per_hop[key]
        assert hop.lost == 0 and hop.arrived == len(seen[f"{key[0]}>{key[1]} rx"])
        link = tuple(sorted(topo.by_name[n].index for n in key))
        errors = []
        for t_ns, latency in hop.series:
            carrying = history[bisect.bisect_right(stamps, t_ns / 1e9) - 1][1]
            errors.append(latency - carrying[link])
        assert min(errors) > -0.05, "faster than light"
        # Single packets may wait for the scheduler (2 cores): the tail is bounded by
        # share. A fresh VM stalls now and then (96.3% within 0.5 ms, max 5.4 ms, seen on a
        # fresh clone 2026-12-03): 95%.
        within = sum(e < 0.5 for e in errors) / len(errors)
        assert statistics.median(errors) < 0.2 and within >= 0.95, (
            f"{key}: median {statistics.median(errors):.3f} ms, {within:.1%} within 0.5 ms, "
            f"max {max(errors):.3f} ms"
        )
    result = analysis.summary(captured)
    assert json.loads(analysis.to_json(result))["hops"][0]["hop"] == "t1>t2"


def test_the_dissector_decodes_every_field_of_a_report_from_a_real_run(tmp_path):
    topo = train_topology(tmp_path)
    with Emulation(topo, shaper="wire", run_name="tdis", capture_dir=tmp_path) as emu:
        emu.start_controller()
        emu.capture("t0")  # from now on, as a script would
        send_reports(emu, "gs_south", "t0", 41, 2, 0.01)
        emu.wait(0.1)
    lua = wireshark.install(tmp_path / "netemu.lua")
    names = [f.name for f in TrackReport.fields_desc if f.name != "tracks"]
    track = [f.name for f in Track.fields_desc]
    fields = [f"netemu.report.{n}" for n in names] + [f"netemu.track.{n}" for n in track]
    rows = tshark(tmp_path / "t0.pcapng", "-Y", 'frame.interface_name == "gs_south>t0 rx"',
                  "-T", "fields", *(a for f in fields for a in ("-e", f)), lua=lua)  # fmt: skip
    # What was sent, read back from the same capture with the scapy layers.
    interfaces, records = pcapng.read(tmp_path / "t0.pcapng")
    sent = []
    for rec in records:
        if interfaces[rec.interface].name == "gs_south>t0 rx":
            sent.append(Nemu(bytes(Ether(rec.data)[UDP].payload))[TrackReport])
    assert [r.seq for r in sent] == [41, 42] and len(rows) == 2
    for row, report in zip(rows, sent, strict=True):
        values = dict(zip(fields, row, strict=True))
        for n in names:
            assert int(values[f"netemu.report.{n}"]) == getattr(report, n), n
        t = report.tracks[0]
        for n in track:
            assert float(values[f"netemu.track.{n}"]) == getattr(t, n), n
    # And the values are the ones the sender chose.
    assert sent[1].capture_ns == 10**18 + 42 and sent[1].tracks[0].row == 42.5


def test_netemu_run_captures_for_the_user_behind_sudo(tmp_path):
    """A CLI run with --capture, stopped by SIGTERM: the files exist, hold packets, belong to
    the sudo user; a capture point naming no node is bad input (exit 2, nothing made)."""
    out = tmp_path / "caps"
    cmd = [sys.executable, "-m", "netemu.cli", "run", str(TOPOLOGIES / "train.yaml"), "--name",
           "tcapcli", "--shaper", "wire", "--log", str(tmp_path / "run.jsonl")]  # fmt: skip
    bad = subprocess.run([*cmd, "--capture", "t1,link:t1-t9"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "capture point 'link:t1-t9': no node named 't9'" in bad.stderr
    assert leftovers("tcapcli") == [] and not out.exists()

    tmp_path.chmod(0o755)
    env = {**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534"}
    proc = subprocess.Popen(
        [*cmd, "--capture", "t1", "--capture", "link:t0-t1", "--capture-dir", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    log = tmp_path / "run.jsonl"
    deadline = time.monotonic() + 30
    while not (log.exists() and '"epoch"' in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    ping = subprocess.run(
        ["ip", "netns", "exec", "netemu-tcapcli-t0", "ping", "-c", "3", "-i", "0.2", "172.16.0.4"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert leftovers("tcapcli") == []
    files = sorted(p.name for p in out.iterdir())
    assert files == ["all.pcapng", "link-t0-t1.pcapng", "t1.pcapng"]
    assert f"capture {out / 't1.pcapng'}" in err
    for p in [out, *out.iterdir()]:
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p
        assert not p.stat().st_mode & 0o002, f"{p} is world-writable"
    echo = tshark(out / "link-t0-t1.pcapng", "-Y", "icmp.type == 8", "-T", "fields",
                  "-e", "frame.interface_name")  # fmt: skip
    assert sorted(r[0] for r in echo) == ["t0>t1 rx"] * 3 + ["t0>t1 tx"] * 3


def test_a_recorder_killed_mid_run_is_reported_and_its_file_kept(tmp_path):
    """kill -9 of one tap's tcpdump: the run goes on, the other taps keep recording,
    and at stop the file holds the killed tap's packets up to then, marked as such."""
    topo = train_topology(tmp_path)
    with Emulation(
        topo, shaper="wire", run_name="tdump", capture=["link:t1-t2"],
        capture_dir=tmp_path / "caps",
    ) as emu:  # fmt: skip
        emu.start_controller()
        send_reports(emu, "t1", "t2", 0, 20, 0.01)
        victim = next(r for t, r in emu.captures.recorders.items() if t.name == "t1>t2 rx")
        os.kill(victim.process.pid, signal.SIGKILL)
        send_reports(emu, "t1", "t2", 20, 20, 0.01)
        emu.wait(0.2)
    assert emu.captures.stopped_early == {"t1>t2 rx": -signal.SIGKILL}
    interfaces, records = pcapng.read(tmp_path / "caps" / "link-t1-t2.pcapng")
    names = [interfaces[rec.interface].name for rec in records]  # (read as it goes)
    assert names.count("t1>t2 tx") >= 40 and 15 <= names.count("t1>t2 rx") <= 25
    rx = next(i for i in interfaces if i.name == "t1>t2 rx")
    assert "recorder stopped early" in rx.description
    assert not [x for x in leftovers("tdump") if "tdump" in x or "tcpdump" in x]
