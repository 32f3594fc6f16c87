"""Constellations from anywhere: a Hypatia satellite-network directory (imported and
loaded as it is: the same positions, links and shortest paths as the network it was
made from), explicit ISL lists, +Grid over a TLE file's planes, CelesTrak 3-line
files, and a Walker shell given by its mean motion."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import yaml
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from sgp4.api import jday
from sgp4.exporter import export_tle

from netemu.errors import InputError
from netemu.model.constants import SPEED_OF_LIGHT_KM_S
from netemu.model.topology import load_topology
from netemu.plan.geometry import Geometry, epochs
from netemu.plan.links import ISL, LinkModel, plus_grid_pairs
from netemu.routes.routing import ShortestDelayRouter, path

from helpers import run_netemu

PLANES, PER_PLANE = 12, 12  # every ISL within Hypatia's maximum length, as it demands

SHELL = f"""
name: shell
start: 2026-06-21T00:00:00Z
satellites:
  - walker: {{altitude_km: 550, inclination_deg: 53, planes: {PLANES}, per_plane: {PER_PLANE}}}
    terminals: {{count: 5}}
"""


def teme_km(topo, when=None) -> np.ndarray:
    """Every satellite's SGP4 position (TEME, km) at the start, straight from sgp4."""
    t = when or topo.start
    jd, fr = jday(t.year, t.month, t.day, t.hour, t.minute, t.second)
    return np.array([rec.sgp4(jd, fr)[1] for rec in topo.satrecs])


def hypatia_dir(folder, shell, gs: bool = True):
    """A Hypatia satellite network of our own making: the shell's TLEs under Hypatia's
    header and name lines, Hypatia's +Grid (satgen's generate_plus_grid_isls, shift 0)
    and two ground stations."""
    folder.mkdir()
    lines = [f"{PLANES} {PER_PLANE}"]
    for i, rec in enumerate(shell.satrecs):
        one, two = export_tle(rec)
        lines += [f"Walker-{i} {i}", one, two]
    (folder / "tles.txt").write_text("\n".join(lines) + "\n")
    isls = set()
    for p, s in itertools.product(range(PLANES), range(PER_PLANE)):
        me = p * PER_PLANE + s
        for other in (p * PER_PLANE + (s + 1) % PER_PLANE, ((p + 1) % PLANES) * PER_PLANE + s):
            isls.add((min(me, other), max(me, other)))
    (folder / "isls.txt").write_text("".join(f"{a} {b}\n" for a, b in sorted(isls)))
    if gs:
        (folder / "ground_stations.txt").write_text(
            "0,Tokyo,35.6895,139.69171,0.0,0,0,0\n1,New-York-Newark,40.712775,-74.005973,0,0,0,0\n"
        )
    (folder / "description.txt").write_text(
        "max_gsl_length_m=1089686.4\nmax_isl_length_m=5016591.2\n"
    )
    return isls


def test_a_hypatia_directory_gives_the_same_positions_links_and_paths(tmp_path, write_topology):
    shell = load_topology(write_topology(SHELL))
    isls = hypatia_dir(tmp_path / "net", shell)
    topo = load_topology(tmp_path / "net")  # the directory, loaded as it is
    assert [n.name for n in topo.satellites] == [f"sat{i}" for i in range(PLANES * PER_PLANE)]
    assert [n.name for n in topo.ground_stations] == ["tokyo", "new_york_new"]
    assert topo.start == shell.start
    # Positions: the TLEs' rounding (1e-4 deg, 1e-8 rev/day) is metres.
    assert np.abs(teme_km(topo) - teme_km(shell)).max() < 0.05
    # Links: every pair of isls.txt, nothing else (the shell's own +Grid, F = 0).
    pos = Geometry(topo).positions_km(epochs(topo.start, 0, 1))[0]
    up = LinkModel(topo).evaluate(pos)
    isl = up.kind == ISL
    assert set(zip(up.a[isl].tolist(), up.b[isl].tolist(), strict=True)) == isls
    a, b, _ = plus_grid_pairs(shell)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == isls
    # Shortest paths: netemu's router against Dijkstra over isls.txt, with the lengths
    # computed from the TLEs alone (as Hypatia does).
    n_sat = PLANES * PER_PLANE
    sats = teme_km(topo)
    ia, ib = np.array(sorted(isls)).T
    length = np.linalg.norm(sats[ia] - sats[ib], axis=1)
    graph = csr_matrix((np.r_[length, length], (np.r_[ia, ib], np.r_[ib, ia])), shape=(n_sat,) * 2)
    want = dijkstra(graph, directed=False)
    router = ShortestDelayRouter(len(topo.nodes))
    router.update(up.a[isl], up.b[isl], up.distance_km[isl] / SPEED_OF_LIGHT_KM_S * 1000)
    ends = zip(up.a[isl].tolist(), up.b[isl].tolist(), up.distance_km[isl], strict=True)
    delay = {(x, y): d / SPEED_OF_LIGHT_KM_S * 1000 for x, y, d in ends}
    for src, dst in itertools.permutations(range(0, n_sat, 7), 2):
        hops = path(router.hops, src, dst)
        got = sum(delay[min(u, v), max(u, v)] for u, v in itertools.pairwise(hops))
        assert got == pytest.approx(want[src, dst] / SPEED_OF_LIGHT_KM_S * 1000, rel=1e-6)


def test_netemu_import_hypatia_writes_a_topology_file_that_loads(tmp_path, write_topology):
    hypatia_dir(tmp_path / "net", load_topology(write_topology(SHELL)))
    done = run_netemu("import", "hypatia", tmp_path / "net", "--name", "walker72")
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load(done.stdout)
    assert data["name"] == "walker72" and data["isl"]["policy"] == "list"
    assert data["link_defaults"]["isl"]["max_range_km"] == pytest.approx(5016.5912)
    (tmp_path / "t.yaml").write_text(done.stdout)
    again = load_topology(tmp_path / "t.yaml")
    direct = load_topology(tmp_path / "net")
    assert [n.name for n in again.nodes] == [n.name for n in direct.nodes]
    assert again.isl_pairs == direct.isl_pairs and len(again.isl_pairs) == 2 * PLANES * PER_PLANE


def test_hypatia_and_celestrak_files_say_what_is_wrong_where(tmp_path, write_topology):
    shell = load_topology(write_topology(SHELL))
    hypatia_dir(tmp_path / "net", shell)
    tles = tmp_path / "net" / "tles.txt"
    text = tles.read_text()
    tles.write_text(text.replace(f"{PLANES} {PER_PLANE}", f"{PLANES} {PER_PLANE + 1}", 1))
    with pytest.raises(InputError, match=r"tles.txt:1: the first line says 12 orbits of 13"):
        load_topology(tmp_path / "net")
    # A name line followed by something else: that line is named, not the one after.
    lines = text.splitlines()
    lines[2] = "not a TLE line"
    tles.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"tles.txt:3: expected TLE line 1 after the name line"):
        load_topology(tmp_path / "net")
    # CelesTrak's 3-line sets (no header) load, names and all.
    celestrak = tmp_path / "starlink.txt"
    celestrak.write_text("".join(f"STARLINK-{i}\n" + "\n".join(export_tle(r)) + "\n"
                                 for i, r in enumerate(shell.satrecs)))  # fmt: skip
    topo = load_topology(write_topology(f"""
        name: c
        start: 2026-06-21T00:00:00Z
        isl: {{policy: nearest-k, k: 2}}
        satellites: [{{tle: {{file: {celestrak}}}, names: "sl{{catnum}}"}}]
    """))  # fmt: skip
    assert len(topo.satellites) == PLANES * PER_PLANE
    (tmp_path / "net" / "isls.txt").write_text("0 1\n2 999\n")
    tles.write_text(text)
    with pytest.raises(InputError, match=r"isls.txt:2: expected two satellite ids below 144"):
        load_topology(tmp_path / "net")


def test_plus_grid_over_a_tle_file_finds_the_planes(tmp_path, write_topology):
    """The shell as a CelesTrak file in scrambled order: +Grid from the elements gives
    the shell's own +Grid (its seam included, phasing 1)."""
    shell = load_topology(
        write_topology(SHELL.replace("per_plane: 12}", "per_plane: 12, phasing: 1}"))
    )
    order = np.random.default_rng(3).permutation(len(shell.satrecs))
    tle = tmp_path / "shell.tle"
    tle.write_text(
        "".join(f"S{i}\n" + "\n".join(export_tle(shell.satrecs[i])) + "\n" for i in order)
    )
    topo = load_topology(write_topology(f"""
        name: t
        start: 2026-06-21T00:00:00Z
        satellites: [{{tle: {{file: {tle}}}, names: "x{{n}}", terminals: {{count: 4}}}}]
    """))  # fmt: skip
    grid = topo.grids[0]
    assert [len(p) for p in grid.planes] == [PER_PLANE] * PLANES
    a, b, cross = plus_grid_pairs(topo)
    back = {int(k): int(i) for k, i in enumerate(order)}  # node -> the shell's satellite
    got = {tuple(sorted((back[x], back[y]))) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
    sa, sb, _ = plus_grid_pairs(shell)
    assert got == set(zip(sa.tolist(), sb.tolist(), strict=True))
    assert cross.sum() == PLANES * PER_PLANE
    # Planes and slots: the mapping's, as given.
    mapping = {f"x{k}": [int(order[k]) // PER_PLANE, int(order[k]) % PER_PLANE]
               for k in range(len(order))}  # fmt: skip
    given = load_topology(write_topology(f"""
        name: t
        start: 2026-06-21T00:00:00Z
        satellites: [{{tle: {{file: {tle}, planes: {mapping}}}, names: "x{{n}}"}}]
    """))  # fmt: skip
    assert [(n.plane, n.slot) for n in given.satellites] == [
        tuple(mapping[n.name]) for n in given.satellites
    ]
    with pytest.raises(InputError, match=r"planes: no \[plane, slot\] for 'x0'"):
        load_topology(write_topology(f"""
            name: t
            start: 2026-06-21T00:00:00Z
            satellites: [{{tle: {{file: {tle}, planes: {{x1: [0, 0]}}}}, names: "x{{n}}"}}]
        """))  # fmt: skip


def test_an_explicit_isl_list_by_name_and_by_file(tmp_path, write_topology):
    (tmp_path / "isls.txt").write_text("# Hypatia's ids, or names\n0 1\nsat2 sat3\n")
    topo = load_topology(write_topology(SHELL.replace("name: shell", "name: l") + """
isl: {policy: list, links: [[sat0, sat12]], file: isls.txt}
"""))  # fmt: skip
    assert topo.isl_pairs == [(0, 1), (0, 12), (2, 3)]
    pos = Geometry(topo).positions_km(epochs(topo.start, 0, 1))[0]
    up = LinkModel(topo).evaluate(pos)
    assert set(zip(up.a.tolist(), up.b.tolist(), strict=True)) == {(0, 1), (0, 12), (2, 3)}
    (tmp_path / "isls.txt").write_text("0 1\nsat2 mars\n")
    with pytest.raises(InputError, match=r"isls.txt:2: no satellite 'mars'"):
        load_topology(write_topology(SHELL + "isl: {policy: list, file: isls.txt}\n"))
    with pytest.raises(InputError, match="policy list needs links"):
        load_topology(write_topology(SHELL + "isl: {policy: list}\n"))


def test_a_walker_shell_by_its_mean_motion(write_topology):
    """15.056 rev/day is the 550 km shell at 53° (altitude above SGP4's 6,378.135 km)."""
    by_altitude = load_topology(write_topology(SHELL))
    n = by_altitude.satrecs[0].no_kozai * 1440 / (2 * math.pi)
    text = SHELL.replace("altitude_km: 550", f"mean_motion_rev_day: {n:.10f}")
    by_motion = load_topology(write_topology(text))
    assert np.abs(teme_km(by_motion) - teme_km(by_altitude)).max() < 0.01
    with pytest.raises(InputError, match="give either altitude_km or mean_motion_rev_day"):
        load_topology(
            write_topology(
                SHELL.replace("altitude_km: 550", "altitude_km: 550, mean_motion_rev_day: 15")
            )
        )
