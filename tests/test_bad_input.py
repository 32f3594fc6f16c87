"""Bad topology files and command lines: one clear line, exit status 2, no traceback."""

import os
import subprocess
import sys

import pytest

from netemu.errors import InputError
from netemu.model.topology import load_topology

from helpers import REPO, TOPOLOGIES, needs_root, run_netemu
from helpers import VANGUARD_L1 as L1
from helpers import VANGUARD_L2 as L2

GOOD = """\
name: t
start: 2026-06-21T00:00:00Z
satellites:
  - walker:
      altitude_km: 550
      inclination_deg: 53
      planes: 2
      per_plane: 10
ground_stations:
  - {name: gs1, lat_deg: 10, lon_deg: 20}
aircraft:
  - name: ac1
    speed_kmh: 800
    waypoints:
      - {lat_deg: 1, lon_deg: 2, altitude_km: 10}
      - {lat_deg: 3, lon_deg: 4, altitude_km: 10}
roles:
  sensor: [sat0]
"""


def check_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("netemu: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("      planes: 2\n", "      planes: 2\n     bad: [\n", [":8:", "invalid YAML"]),
        (
            "      planes: 2\n",
            "      planes: 2\n      colour: red\n",
            [":8: satellites[0].walker.colour: unknown key 'colour'"],
        ),
        (
            "planes: 2",
            "planes: two",
            [":7: satellites[0].walker.planes: Input should be a valid integer", "'two'"],
        ),
        (
            "altitude_km: 550",
            "altitude_km: 50",
            [":5: satellites[0].walker.altitude_km:", "greater than or equal to 100", "(got 50"],
        ),
        (
            "lat_deg: 10,",
            "lat_deg: 95,",
            [":10: ground_stations[0].lat_deg:", "less than or equal to 90", "(got 95"],
        ),
        ("sensor: [sat0]", "sensor: [sat99]", [":18: roles.sensor[0]: unknown node 'sat99'"]),
        (
            "name: ac1",
            "name: gs1",
            [":12: aircraft[0].name: duplicate node name 'gs1' (also at ground_stations[0].name)"],
        ),
        (
            "name: gs1",
            "name: 'gs 1; rm -rf'",
            [":10: ground_stations[0].name:", "not a valid node name"],
        ),
        ("start: 2026-06-21T00:00:00Z\n", "", [":1: start: required key is missing"]),
        ("start: 2026-06-21T00:00:00Z", "start: yesterday", [":2: start:"]),
        ("name: t\n", "name: t\nname: u\n", [":2: name: duplicate key 'name'"]),
        (
            "per_plane: 10",
            "per_plane: 10\n      phasing: 5",
            ["satellites[0].walker:", "phasing must be below planes (2), got 5"],
        ),
        (
            "inclination_deg: 53",
            "inclination_deg: 200",
            [":6: satellites[0].walker.inclination_deg: Input should be less", "180"],
        ),
        ("speed_kmh: 800", "speed_kmh: -1", ["aircraft[0].speed_kmh:", "greater than 0"]),
        (
            "      - {lat_deg: 3, lon_deg: 4, altitude_km: 10}\n",
            "",
            ["aircraft[0].waypoints:", "at least 2"],
        ),
    ],
)
def test_bad_topology_files(tmp_path, old, new, fragments):
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    line = check_error(run_netemu("plan", path, "--duration", "10"), *fragments)
    assert str(path) in line


def test_the_good_file_is_good(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = run_netemu("plan", path, "--duration", "10", "--json")
    assert result.returncode == 0, result.stderr


def test_tle_with_a_bad_checksum(tmp_path):
    (tmp_path / "sats.tle").write_text(f"VANGUARD\n{L1}\n{L2[:68]}0\n")
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nstart: 2000-06-28T00:00:00Z\nsatellites:\n  - tle: {file: sats.tle}\n"
    )
    check_error(run_netemu("plan", path), f"{tmp_path / 'sats.tle'}:3: TLE checksum mismatch")


def test_missing_tle_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nstart: 2000-06-28T00:00:00Z\nsatellites:\n  - tle: {file: x.tle}\n")
    check_error(run_netemu("plan", path), ":4: satellites[0].tle.file: TLE file not found")


def test_generated_names_must_be_valid(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        GOOD.replace("      per_plane: 10\n", "      per_plane: 10\n    names: 'x-{n}'\n")
    )
    check_error(run_netemu("plan", path), "satellites[0].names:", "the pattern makes 'x-0'")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "nope.yaml"], "nope.yaml: file not found"),
        (["plan", "topologies/kepler.yaml", "--start", "noon"], "not an ISO 8601 time"),
        (["plan", "topologies/kepler.yaml", "--duration", "-5"], "must be a positive number"),
        (["plan", "topologies/kepler.yaml", "--step", "0"], "must be a positive number"),
        (["plan", "topologies/kepler.yaml", "--step", "1e-9"], "epochs, more than"),
        (["plan"], "the following arguments are required: topology"),
        (["fly"], "invalid choice: 'fly'"),
        (["plan", "topologies/kepler.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_command_lines(args, fragment):
    check_error(run_netemu(*args), fragment)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    check_error(run_netemu("plan", path), "a topology file must be a mapping")


def test_a_topology_too_large_for_the_machine_is_refused():
    from netemu.live.machine import check_memory

    check_memory(1000, available=(4096, "this machine"))
    with pytest.raises(InputError, match=r"100,000 nodes need about 195\.4 GiB .* 4\.0 GiB"):
        check_memory(100_000, available=(4096, "this machine"))


def _path_without(tmp_path, *missing: str) -> str:
    """A PATH with the tools a live run uses, less ``missing``."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mnexec", "ip", "tc", "iptables", "tcpdump", "sh", "bash", "grep", "unshare"):
        if tool not in missing and (found := shutil.which(tool)):
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@needs_root
@pytest.mark.parametrize(
    ("missing", "extra", "fragment"),
    [
        ("mnexec", [], "missing system tools: mnexec (run scripts/provision"),
        ("tcpdump", ["--capture", "t1"], "missing system tools: tcpdump"),
        ("grep", [], "missing system tools: grep"),  # Mininet's, once a traceback
    ],
)
def test_missing_system_tools(tmp_path, missing, extra, fragment):
    env = {"PATH": _path_without(tmp_path, missing)}
    result = subprocess.run(
        [sys.executable, "-m", "netemu.cli", "run", str(TOPOLOGIES / "train.yaml"), *extra],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    check_error(result, fragment)
    assert not any(n.startswith("netemu-train-") for n in os.listdir("/run/netns"))


@needs_root
def test_not_root(tmp_path):
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "netemu.cli", "run", str(TOPOLOGIES / "train.yaml")],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    check_error(result, "netemu run needs root for network namespaces (try: sudo netemu run")


def test_a_topology_name_with_a_dash_gives_a_usable_default_run_name():
    """starlink-shell1 runs as starlink_shell1 ('-' in a run name would make one
    run's namespace prefix match another's)."""
    from netemu.live.emulation import Emulation

    emu = Emulation(load_topology(TOPOLOGIES / "starlink-shell1.yaml"), shaper="wire")
    assert emu.run_name == "starlink_shell1"
    assert emu.netns[0] == "netemu-starlink_shell1-sl0_0"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (MemoryError(), "out of memory"),
        (OSError(12, "Cannot allocate memory"),
         "out of memory ([Errno 12] Cannot allocate memory)"),
        (ImportError("x.so: failed to map segment from shared object"),
         "out of memory (x.so: failed to map segment from shared object)"),
        (KeyError("t1"), "KeyError: 't1'"),
        (RuntimeError("two\nlines\x1b[2J"), "RuntimeError: two lines\\x1b[2J"),
    ],
)  # fmt: skip
def test_a_runtime_failure_is_described_in_one_line(exc, line):
    from netemu.errors import describe

    assert describe(exc) == line
