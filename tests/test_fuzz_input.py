"""Hostile and random input, explored by machine (hypothesis).

Topology files, TLE files, command lines, fault specs and capture points, valid and
mutated, generated in the thousands: every one is either accepted or refused with
an InputError (``netemu`` prints it as one line and exits 2) that names the file,
with no other exception and nothing created on the machine. A live sample runs
generated files through ``netemu run`` for real. The classes covered are listed in
docs/bad-input.md.

The exploration is derandomized (the same cases each run: CI stays stable); set
NETEMU_FUZZ_RANDOM=1 to explore new ones, NETEMU_FUZZ_EXAMPLES for more of them.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netemu import cli
from netemu.capture.taps import CapturePoint
from netemu.errors import InputError
from netemu.kernel import netns
from netemu.model.faults import parse_cli
from netemu.model.topology import Topology, load_topology
from netemu.shaping.netem import NETEM_PROBE

from helpers import REPO, TOPOLOGIES, leftovers, needs_root

FIXED = not os.environ.get("NETEMU_FUZZ_RANDOM")
PURE = settings(
    max_examples=int(os.environ.get("NETEMU_FUZZ_EXAMPLES", 700)),
    deadline=None,
    derandomize=FIXED,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
TLE = (TOPOLOGIES / "train.tle").read_text()

#: A valid file using every section (small: 2 x 3 walker, 4 TLE satellites).
BASE = {
    "name": "fuzz",
    "description": "generated",
    "start": "2026-06-21T03:05:00Z",
    "seed": 1,
    "satellites": [
        {
            "walker": {"altitude_km": 550, "inclination_deg": 53, "planes": 2, "per_plane": 3},
            "names": "w{n}",
            "terminals": {"count": 4, "data_rate_gbps": 10},
            "compute": {"gpus": 2, "kind": "orin"},
        },
        {"tle": {"file": "sats.tle"}, "names": "t{n}"},
    ],
    "ground_stations": [
        {"name": "gs1", "lat_deg": 10.0, "lon_deg": 20.0, "cloud_free_probability": 0.7},
        {"name": "gs2", "lat_deg": -6.0, "lon_deg": 59.6, "altitude_km": 0.1},
    ],
    "aircraft": [
        {
            "name": "jet1",
            "speed_kmh": 850,
            "loop": False,
            "waypoints": [
                {"lat_deg": 4.0, "lon_deg": 64.0, "altitude_km": 10.0},
                {"lat_deg": 10.0, "lon_deg": 70.0, "altitude_km": 10.0},
            ],
        }
    ],
    "link_defaults": {
        "isl": {"loss_percent": 1, "jitter_ms": 0.1, "turbulence": False},
        "space_ground": {"min_elevation_deg": 20, "modulation": "ook", "fec": True},
    },
    "isl": {"policy": "plus-grid", "cross_plane": True},
    "access": {"selection": "highest-elevation", "hysteresis_deg": 2, "priority": ["gs1"]},
    "weather": {"cloud_free_probability": 0.6, "seed": 3},
    "faults": [{"kind": "cut", "target": "w0-w1", "at_s": 5, "for_s": 10}],
    "roles": {"sensor": ["w0"]},
}

#: Values no key expects, and values shells, paths and parsers choke on.
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=1001),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(
        [
            "w0",
            "gs1",
            "t9",
            "w0-w1",
            "../../etc/passwd",
            "/dev/zero",
            "$(reboot)",
            "a;b",
            "-rf",
            "",
            " ",
            "\x00",
            "1e400",
            "nan",
            "-inf",
            "2026-13-45T99:00:00Z",
            "sun-synchronous",
            "x" * 300,
            "{n}{n}",
            "{bad}",
            "sat{n:>99999}",
            "ütf",
            "\u202e",
        ]
    ),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.sampled_from(["file", "name", "kind", "count", "x"]), st.integers(0, 3)),
)


def _paths(doc, prefix=()):
    """Every place in the document: (path to a container, key or index)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        yield prefix, key
        if isinstance(value, dict | list):
            yield from _paths(value, (*prefix, key))


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_documents(draw) -> dict:
    """BASE with one to four random changes: a value replaced, a key removed or
    added, a list entry duplicated (same names twice), a section emptied."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        places = list(_paths(doc))
        if not places:
            break
        path, key = draw(st.sampled_from(places))
        container = _at(doc, path)
        op = draw(st.sampled_from(["set", "set", "delete", "add", "duplicate", "empty"]))
        if op == "set":
            container[key] = draw(HOSTILE)
        elif op == "delete":
            del container[key]
        elif op == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(["extra", "names", "k", "file", "kind"]))] = draw(
                HOSTILE
            )
        elif op == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        elif op == "empty":
            container[key] = {} if isinstance(container[key], dict) else []
    return doc


@st.composite
def topology_texts(draw) -> bytes:
    """A mutated document as YAML, sometimes then changed as text or bytes."""
    text = yaml.safe_dump(draw(mutated_documents()), allow_unicode=True).encode()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        noise = draw(
            st.one_of(
                st.sampled_from([b":", b"- ", b"\n", b"  ", b"{", b"[", b"'", b'"', b"&a", b"*a",
                                 b"!!python/object:os.system", b"\t", b"\xff\xfe", b"<<: *a"]),
                st.binary(max_size=4),
            )
        )  # fmt: skip
        text = text[:at] + noise + text[at + cut :]
    return text


@st.composite
def tle_texts(draw) -> str:
    """train.tle with characters, lines or checksums changed."""
    lines = TLE.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["char", "char", "drop", "dup", "trim", "pad"]))
        line = lines[i]
        if op == "char" and line:
            at = draw(st.integers(0, len(line) - 1))
            c = draw(st.sampled_from(list("0123456789 .-+Ux\t")))
            lines[i] = line[:at] + c + line[at + 1 :]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "trim":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        elif op == "pad":
            lines[i] = line + draw(st.text(alphabet="0123456789 ", max_size=5))
        if not lines:
            break
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


def _check_refusal(exc: InputError, *files: Path) -> None:
    message = str(exc)
    assert "\n" not in message, message
    assert len(message) < 2000, message  # one line, never a file or a traceback in it
    assert any(str(f) in message for f in files), f"no file named in: {message}"


@pytest.fixture(scope="class")
def workdir():
    """A folder for the generated files; while the checks run, anything that would
    create something on the machine (a process, a folder, a run's state) fails."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a check of input tried to create something: {args[1:3]}")

    popen = subprocess.Popen.__init__

    def only_the_probe(self, cmd, *args, **kwargs):  # its namespace ends with it
        if cmd != NETEM_PROBE:
            refuse(self, cmd)
        popen(self, cmd, *args, **kwargs)

    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as guard:
        guard.setattr(subprocess.Popen, "__init__", only_the_probe)
        guard.setattr(os, "mkdir", refuse)
        guard.setattr(netns, "write_state", refuse)
        yield Path(d)


def _load(workdir: Path, text: bytes, tle: str = TLE) -> Topology | None:
    (workdir / "sats.tle").write_text(tle)
    path = workdir / "topo.yaml"
    path.write_bytes(text)
    try:
        return load_topology(path)
    except InputError as exc:
        _check_refusal(exc, path, workdir / "sats.tle")
        return None


OPTIONS = {
    "run": ["--start", "--duration", "--step", "--speed", "--shaper", "--name", "--log",
            "--capture", "--capture-dir", "--fault", "--cli", "--debug"],
    "plan": ["--start", "--duration", "--step", "--json", "--debug"],
}  # fmt: skip
VALUES = st.one_of(
    HOSTILE.map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e9",
            "nan",
            "inf",
            "0.05",
            "3600.1",
            "2026-06-21T03:05:00Z",
            "noon",
            "wire",
            "netem",
            "nfqueue",
            "auto",
            "x" * 50,
            "a.b",
            "w0",
            "link:w0-w1",
            "link:w0",
            "gs1,link:w0-w1",
            "link:w0-w9",
            "cut:w0-w1@+5/10",
            "cut:w0@+5",
            "lose:w9",
            "degrade:w0-w1@+0/5:loss=20",
            "reboot:w0@+1",
            "terminal:gs1@+2/3",
            "cut:w0-w1@-5",
            "degrade:w0-w1:loss=200",
            "cut:w0-w1@+5/0",
            "--",
            "-",
        ]
    ),
)


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(["run", "plan", "run", "plans", "", "--debug"]))
    argv = [command] if command else []
    if draw(st.booleans()):
        argv.append("TOPO")
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 4)) == 0:
            argv.append(draw(VALUES))  # a stray word
        else:
            argv.append(draw(st.sampled_from(OPTIONS.get(command, OPTIONS["run"]))))
            if draw(st.integers(0, 5)):
                argv.append(draw(VALUES))
    return argv


class TestWithNothingCreated:
    """Pure checks, in the thousands; the guard (workdir) fails any that would create
    something on the machine."""

    @PURE
    @given(text=topology_texts())
    def test_topology_files(self, workdir, text):
        topo = _load(workdir, text)
        if topo is not None:  # accepted: what a run then checks, nothing created yet
            args = cli._parser().parse_args(["run", str(workdir / "topo.yaml"), "--name", "fz"])
            try:
                cli.emulation_for(args)
            except InputError as exc:
                assert "\n" not in str(exc), str(exc)

    @PURE
    @given(tle=tle_texts())
    def test_tle_files(self, workdir, tle):
        _load(workdir, yaml.safe_dump(BASE).encode(), tle)

    @PURE
    @given(argv=command_lines())
    def test_command_lines(self, workdir, argv):
        """What `netemu run|plan ...` checks before it creates anything."""
        (workdir / "sats.tle").write_text(TLE)
        topo = workdir / "topo.yaml"
        topo.write_text(yaml.safe_dump(BASE))
        argv = [str(topo) if a == "TOPO" else a for a in argv]
        try:
            args = cli._parser().parse_args(argv)
            if args.command == "run":
                cli.emulation_for(args)
            elif args.command == "plan":
                load_topology(args.topology)
        except InputError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)

    @PURE
    @given(spec=VALUES, point=VALUES)
    def test_fault_specs_and_capture_points(self, workdir, spec, point):
        (workdir / "sats.tle").write_text(TLE)
        topo = _load(workdir, yaml.safe_dump(BASE).encode())
        try:
            fault = parse_cli(spec)
            from netemu.plan.planner import Planner

            Planner(topo).faults.add(fault)
        except InputError as exc:
            assert "\n" not in str(exc), str(exc)
        try:
            for p in point.split(","):
                CapturePoint.parse(p, topo.by_name)
        except InputError as exc:
            assert "\n" not in str(exc), str(exc)


@needs_root
@settings(max_examples=12, deadline=None, derandomize=FIXED, database=None)
@given(text=topology_texts(), argv=command_lines())
def test_live_sample_through_netemu_run(text, argv):
    """Generated files and arguments through a real `netemu run` (1 s): exit 0 or 2,
    no traceback, a refusal in one line, nothing of the run left."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "sats.tle").write_text(TLE)
        topo = Path(d) / "topo.yaml"
        topo.write_bytes(text)
        # Not where files go (a generated --capture-dir could land in the checkout).
        extra = [
            a for a in argv[1:] if a not in ("TOPO", "--cli", "--name", "--log", "--capture-dir")
        ]
        run = "fuzzlive"
        cmd = [sys.executable, "-m", "netemu.cli", "run", str(topo), *extra]
        cmd += ["--duration", "1", "--name", run, "--log", f"{d}/run.jsonl"]
        p = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert p.returncode in (0, 2), p.stderr
        assert "Traceback" not in p.stderr, p.stderr
        if p.returncode == 2:
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert leftovers(run) == []
