"""Hypatia's satellite-network directories, read as netemu topologies.

A directory that Hypatia's ``satgen`` writes (and StarPerf-style tools copy)
holds ``tles.txt`` (a line "N_ORBITS N_SATS_PER_ORBIT", then one 3-line set per
satellite, in id order), ``isls.txt`` (one "A B" pair of satellite ids per line),
``ground_stations.txt`` (``gid,name,lat,lon,elevation_m[,x,y,z]``), and optionally
``description.txt`` (``max_isl_length_m=...``, ``max_gsl_length_m=...``) and
``gsl_interfaces_info.txt`` (``id,interfaces,bandwidth``). :func:`topology_data`
turns it into a topology file's keys: satellite i is ``sat{i}``, in its Hypatia
plane and slot; the ISLs are ``isls.txt`` as a fixed list; a ground station or
satellite reaches another within Hypatia's maximum lengths (any elevation above
the horizon, as Hypatia decides it); ground stations are named after Hypatia's
names, made valid node names. The TLEs' epoch is the start.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from netemu.errors import InputError, read_text
from netemu.model.tle import hypatia_header, parse_tle

FILES = ("tles.txt", "isls.txt", "ground_stations.txt")


def is_hypatia_dir(path: Path) -> bool:
    return path.is_dir() and (path / "tles.txt").is_file()


def topology_data(folder: Path, name: str | None = None) -> dict:
    """The topology file's keys for Hypatia's ``folder`` (InputError naming the file
    and line of anything it cannot read)."""
    folder = Path(folder).resolve()
    if not is_hypatia_dir(folder):
        raise InputError(f"not a Hypatia satellite network directory: no tles.txt in {folder}")
    tles = folder / "tles.txt"
    text = read_text(tles, "Hypatia TLE file", encoding="ascii")
    if hypatia_header(text) is None:
        raise InputError("expected 'N_ORBITS N_SATS_PER_ORBIT' on the first line", tles, None, 1)
    sets = parse_tle(text, str(tles))
    n_sat = len(sets)
    degree = [0] * n_sat
    isls = folder / "isls.txt"
    if isls.is_file():
        for n, line in enumerate(read_text(isls, "Hypatia ISL file").splitlines(), 1):
            words = line.split()
            if not words:
                continue
            if len(words) != 2 or not all(w.isdigit() and int(w) < n_sat for w in words):
                raise InputError(f"expected two satellite ids below {n_sat}, got {line!r}",
                                 isls, None, n)  # fmt: skip
            for w in words:
                degree[int(w)] += 1
    gsl = _gsl_interfaces(folder / "gsl_interfaces_info.txt", n_sat)
    limits = _description(folder / "description.txt")
    stations = _ground_stations(folder / "ground_stations.txt", gsl)
    epoch = sets[0].satrec()
    start = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(
        days=epoch.jdsatepoch + epoch.jdsatepochF - 2451544.5
    )
    data: dict = {
        "name": _node_name(name or folder.name, set(), "hypatia")[:64],
        "description": f"imported from the Hypatia satellite network {folder}",
        "start": start.isoformat().replace("+00:00", "Z"),
        "satellites": [
            {
                "tle": {"file": str(tles)},
                "names": "sat{n}",
                "terminals": {"count": max(degree, default=0) + max(gsl[:n_sat], default=1)},
            }
        ],
        "isl": {"policy": "list", "file": str(isls)} if isls.is_file() else {"policy": "none"},
        "ground_stations": stations,
        "link_defaults": {
            "isl": _range(limits, "max_isl_length_m"),
            "space_ground": {"min_elevation_deg": 0, **_range(limits, "max_gsl_length_m")},
        },
    }
    return data


def _description(path: Path) -> dict[str, float]:
    """Hypatia's lengths (m) as km."""
    out: dict[str, float] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(read_text(path, "Hypatia description").splitlines(), 1):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            out[key.strip()] = float(value) / 1000.0
        except ValueError:
            raise InputError(
                f"{key.strip()}: not a number: {value.strip()!r}", path, None, n
            ) from None
    return out


def _range(limits: dict[str, float], key: str) -> dict[str, float]:
    return {"max_range_km": limits[key]} if key in limits else {}


def _gsl_interfaces(path: Path, n_sat: int) -> list[int]:
    """Interfaces per node id (satellites, then ground stations); 1 each without the file."""
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(read_text(path, "Hypatia GSL interfaces").splitlines(), 1):
        parts = line.split(",")
        if not line.strip():
            continue
        if len(parts) != 3 or not parts[1].strip().isdigit():
            raise InputError(f"expected id,interfaces,bandwidth, got {line!r}", path, None, n)
        out.append(int(parts[1]))
    return out


def _ground_stations(path: Path, gsl: list[int]) -> list[dict]:
    if not path.is_file():
        return []
    out, taken = [], set()
    rows = [r for r in enumerate(read_text(path, "Hypatia ground stations").splitlines(), 1)
            if r[1].strip()]  # fmt: skip
    n_sat = len(gsl) - len(rows) if gsl else 0
    for gid, (n, line) in enumerate(rows):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (5, 8) or parts[0] != str(gid):
            raise InputError(
                f"expected gid,name,lat,lon,elevation_m[,x,y,z] with gid {gid}, got {line!r}",
                path, None, n,
            )  # fmt: skip
        try:
            lat, lon, elevation_m = (float(x) for x in parts[2:5])
        except ValueError:
            raise InputError(f"latitude, longitude and elevation must be numbers: {line!r}",
                             path, None, n) from None  # fmt: skip
        out.append({
            "name": _node_name(parts[1], taken, f"gs{gid}"),
            "lat_deg": lat,
            "lon_deg": lon,
            "altitude_km": elevation_m / 1000.0,
            "terminals": {"count": gsl[n_sat + gid] if gsl else 1},
        })  # fmt: skip
    return out


def _node_name(text: str, taken: set[str], fallback: str) -> str:
    """A valid node name (a letter, then letters, digits or '_', 12 at most) like
    ``text``, not yet ``taken``."""
    base = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")[:12] or fallback
    if not base[0].isalpha():
        base = f"g{base}"[:12]
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base[: 12 - len(str(k)) - 1]}_{k}"
    taken.add(name)
    return name
