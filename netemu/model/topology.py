"""Topologies: the nodes of an emulated network and what each can do.

:func:`load_topology` reads a YAML topology file (format in :mod:`netemu.model.schema`
and ``docs/topology.md``), checks it, and returns a :class:`Topology`: every
satellite (from Walker shells or TLE files, with its SGP4 record), ground
station and aircraft as a :class:`Node`, their optical terminals, compute
payloads and roles, and the link and access policies. Any problem becomes one
:class:`~netemu.errors.InputError` naming the file, the key and the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError
from sgp4.api import Satrec

from netemu.errors import InputError, read_text
from netemu.model import physics, planes, schema
from netemu.model.faults import Fault, parse_target
from netemu.model.flight import FlightPath
from netemu.model.hypatia import is_hypatia_dir, topology_data
from netemu.model.orbits import (
    altitude_for_mean_motion_km,
    raan_for_ltan_deg,
    satrecs_for,
    sun_synchronous_inclination_deg,
    walker_orbits,
)
from netemu.model.placement import PlacementError, place
from netemu.model.planes import Grid
from netemu.model.tle import hypatia_header, parse_tle
from netemu.model.yamlsource import KeyPath, LocatedDocument, format_key_path, load_yaml


class NodeKind(StrEnum):
    SATELLITE = "satellite"
    GROUND = "ground"
    AIRCRAFT = "aircraft"


class LinkKind(StrEnum):
    ISL = "isl"
    SPACE_AIR = "space-air"
    SPACE_GROUND = "space-ground"

    @property
    def settings_key(self) -> str:
        """The key of this kind under ``link_defaults`` in topology files."""
        return self.value.replace("-", "_")


@dataclass(frozen=True)
class LinkParams:
    """What a link of one kind between two given terminals can do."""

    data_rate_gbps: float
    max_range_km: float
    acquisition_s: float
    reacquisition_s: float
    min_elevation_deg: float | None = None
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    zenith_transmittance: float = 1.0
    turbulence: bool = False
    mean_fade_ms: float = 5.0
    max_slew_deg_s: float | None = None
    acquisition_spread_s: float = 0.0
    tx_power_w: float = 2.5
    divergence_urad: float = 15.0
    aperture_m: float = 0.08
    wavelength_nm: float = 1553.33
    pointing_jitter_urad: float = 1.5
    modulation: str = "ook"
    sensitivity_ppb: float = 38.4
    fec: bool = True


@dataclass(frozen=True)
class Shell:
    """Where a Walker shell's satellites sit in :attr:`Topology.nodes`."""

    first: int
    planes: int
    per_plane: int
    phasing: int
    raan_spread_deg: float

    def index(self, plane: int, slot: int) -> int:
        return self.first + plane * self.per_plane + slot


@dataclass(frozen=True)
class Node:
    """A satellite, ground station or aircraft."""

    name: str
    kind: NodeKind
    index: int
    terminals: schema.Terminals
    compute: schema.Compute | None = None
    roles: frozenset[str] = frozenset()
    plane: int | None = None  # Walker satellites only
    slot: int | None = None

    @property
    def gpus(self) -> int:
        return self.compute.gpus if self.compute else 0


@dataclass
class Topology:
    """A loaded, checked topology."""

    name: str
    file: Path | None
    start: datetime
    nodes: list[Node]
    satrecs: list[Satrec]  # one per satellite, in node order (satellites come first)
    ground_sites: list[schema.GroundStation]  # one per ground node, in node order
    flights: list[FlightPath]  # one per aircraft node, in node order
    shells: list[Shell]
    #: TLE groups in planes and slots, for plus-grid (netemu.model.planes).
    grids: list[Grid]
    #: policy list: the ISL candidates, (a, b) node indices with a < b.
    isl_pairs: list[tuple[int, int]]
    isl: schema.IslPolicy
    access: schema.AccessPolicy
    link_defaults: dict[LinkKind, LinkParams]
    description: str = ""
    weather: schema.Weather | None = None
    seed: int = 0
    faults: list[Fault] = field(default_factory=list)
    random_faults: schema.RandomFaults | None = None
    #: Users' containers, checked to fit (netemu.model.placement); run by netemu.live.workloads.
    containers: list[schema.ContainerSpec] = field(default_factory=list)
    by_name: dict[str, Node] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {n.name: n for n in self.nodes}

    @property
    def satellites(self) -> list[Node]:
        return [n for n in self.nodes if n.kind is NodeKind.SATELLITE]

    @property
    def ground_stations(self) -> list[Node]:
        return [n for n in self.nodes if n.kind is NodeKind.GROUND]

    @property
    def aircraft(self) -> list[Node]:
        return [n for n in self.nodes if n.kind is NodeKind.AIRCRAFT]

    def flight(self, index: int) -> FlightPath:
        """The flight path of the aircraft that is node ``index``."""
        return self.flights[[n.index for n in self.aircraft].index(index)]

    def site(self, index: int) -> schema.GroundStation:
        """The ground station (as written in the file) that is node ``index``."""
        return self.ground_sites[[n.index for n in self.ground_stations].index(index)]

    def with_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if role in n.roles]

    def link_params(self, kind: LinkKind, a: Node, b: Node) -> LinkParams:
        """The kind's defaults, narrowed by both ends' terminals."""
        base = self.link_defaults[kind]
        ends = (a.terminals, b.terminals)

        def narrowed(attr: str, pick) -> float:
            given = [getattr(t, attr) for t in ends if getattr(t, attr) is not None]
            return pick([getattr(base, attr), *given]) if given else getattr(base, attr)

        return LinkParams(
            data_rate_gbps=narrowed("data_rate_gbps", min),
            max_range_km=narrowed("max_range_km", min),
            acquisition_s=narrowed("acquisition_s", max),
            reacquisition_s=narrowed("reacquisition_s", max),
            min_elevation_deg=base.min_elevation_deg,
            loss_percent=base.loss_percent,
            jitter_ms=base.jitter_ms,
            zenith_transmittance=base.zenith_transmittance,
            turbulence=base.turbulence,
            mean_fade_ms=base.mean_fade_ms,
            acquisition_spread_s=base.acquisition_spread_s,
            max_slew_deg_s=min(
                (
                    v
                    for v in (base.max_slew_deg_s, *(t.max_slew_deg_s for t in ends))
                    if v is not None
                ),
                default=None,
            ),
        )

    def terminal(self, kind: LinkKind, node: Node) -> physics.Terminal:
        """The optical terminal ``node`` uses on links of ``kind``."""
        base = self.link_defaults[kind]
        own = node.terminals

        def pick(attr: str):
            value = getattr(own, attr, None)
            return getattr(base, attr) if value is None else value

        return physics.Terminal(
            tx_power_w=pick("tx_power_w"),
            divergence_urad=pick("divergence_urad"),
            aperture_m=pick("aperture_m"),
            wavelength_nm=base.wavelength_nm,
            pointing_jitter_urad=pick("pointing_jitter_urad"),
            modulation=base.modulation,
            sensitivity_ppb=base.sensitivity_ppb,
            fec=base.fec,
        )


#: Beyond any constellation filed (Starlink's ~42,000); 10^6 satellites took minutes to plan.
MAX_NODES = 100_000


def load_topology(path: str | Path, overrides: dict | None = None) -> Topology:
    """Read and check a topology file (or a Hypatia satellite-network directory:
    :mod:`netemu.model.hypatia`); raise :class:`InputError` on any problem.

    ``overrides`` are merged into the file's keys before checking (mappings key
    by key, anything else replaced), e.g. ``{"link_defaults": {"isl":
    {"loss_percent": 5}}}`` for a degraded variant of a file in a test.
    """
    if is_hypatia_dir(Path(path)):  # a Hypatia satellite network, read as it is
        data = _merged(topology_data(Path(path)), overrides or {})
        try:
            spec = schema.TopologyFile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{first['msg']} (imported)", Path(path), key) from None
        return build_topology(spec)
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a topology file must be a mapping of keys (name, start, ...)")
    if overrides:
        doc.data = _merged(doc.data, overrides)
    try:
        spec = schema.TopologyFile.model_validate(doc.data)
    except ValidationError as exc:
        raise _first_error(doc, exc) from None
    return build_topology(spec, doc)


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def build_topology(spec: schema.TopologyFile, doc: LocatedDocument | None = None) -> Topology:
    """Turn a validated file into nodes; cross-references are checked here."""

    def fail(path: KeyPath, problem: str) -> InputError:
        return doc.error(path, problem) if doc else InputError(problem, None, str(path))

    base_dir = doc.file.parent if doc else Path.cwd()
    nodes: list[Node] = []
    satrecs: list[Satrec] = []
    shells: list[Shell] = []
    grids: list[Grid] = []
    seen: dict[str, KeyPath] = {}

    def add(node: Node, where: KeyPath) -> None:
        if node.name in seen:
            raise fail(
                where,
                f"duplicate node name {node.name!r} (also at {format_key_path(seen[node.name])})",
            )
        seen[node.name] = where
        nodes.append(node)

    for g, group in enumerate(spec.satellites):
        where: KeyPath = ("satellites", g)
        if group.walker is not None:
            w = group.walker
            epoch = w.epoch or spec.start
            inclination = w.inclination_deg
            altitude = w.altitude_km
            if w.mean_motion_rev_day is not None:  # J2 makes it depend on the inclination
                guess = 97.5 if inclination == "sun-synchronous" else inclination
                altitude = altitude_for_mean_motion_km(w.mean_motion_rev_day, guess)
            if inclination == "sun-synchronous":
                try:
                    inclination = sun_synchronous_inclination_deg(altitude)
                except ValueError as exc:
                    raise fail((*where, "walker", "inclination_deg"), str(exc)) from None
                if w.mean_motion_rev_day is not None:
                    altitude = altitude_for_mean_motion_km(w.mean_motion_rev_day, inclination)
            if altitude < 100:
                raise fail((*where, "walker", "mean_motion_rev_day"),
                           f"{w.mean_motion_rev_day} rev/day is below 100 km altitude")  # fmt: skip
            if len(nodes) + w.planes * w.per_plane > MAX_NODES:
                raise fail(
                    (*where, "walker"),
                    f"{w.planes} planes of {w.per_plane} make more than {MAX_NODES:,} nodes, "
                    "the most a topology may have",
                )
            raan0 = w.raan_deg if w.raan_deg is not None else 0.0
            if w.ltan_h is not None:
                raan0 = raan_for_ltan_deg(epoch, w.ltan_h)
            orbits = walker_orbits(
                altitude,
                inclination,
                w.planes,
                w.per_plane,
                w.phasing,
                raan0,
                epoch,
                w.raan_spread_deg,
            )
            shells.append(Shell(len(nodes), w.planes, w.per_plane, w.phasing, w.raan_spread_deg))
            for i, rec in enumerate(satrecs_for(orbits, first_satnum=90000 + len(satrecs))):
                plane, slot = divmod(i, w.per_plane)
                name = group.names.format(n=i, plane=plane, slot=slot, catnum=rec.satnum)
                _check_generated_name(name, fail, (*where, "names"))
                add(
                    Node(
                        name,
                        NodeKind.SATELLITE,
                        len(nodes),
                        group.terminals,
                        group.compute,
                        plane=plane,
                        slot=slot,
                    ),
                    (*where, "names"),
                )
                satrecs.append(rec)
        else:
            assert group.tle is not None
            tle_path = base_dir / group.tle.file
            if not tle_path.is_file():
                raise fail((*where, "tle", "file"), f"TLE file not found: {tle_path}")
            text = read_text(tle_path, "TLE file", encoding="ascii")
            recs = [e.satrec() for e in parse_tle(text, str(tle_path))]
            names = [group.names.format(n=i, plane=0, slot=i, catnum=rec.satnum)
                     for i, rec in enumerate(recs)]  # fmt: skip
            place = [(None, None)] * len(recs)
            if spec.isl.policy == "plus-grid":
                grid, place = _tle_grid(group.tle, recs, names, len(nodes), text, spec.start,
                                        fail, (*where, "tle", "planes"))  # fmt: skip
                grids.append(grid)
            for name, rec, (plane, slot) in zip(names, recs, place, strict=True):
                _check_generated_name(name, fail, (*where, "names"))
                add(
                    Node(name, NodeKind.SATELLITE, len(nodes), group.terminals, group.compute,
                         plane=plane, slot=slot),
                    (*where, "names"),
                )  # fmt: skip
                satrecs.append(rec)

    for i, gs in enumerate(spec.ground_stations):
        add(
            Node(gs.name, NodeKind.GROUND, len(nodes), gs.terminals), ("ground_stations", i, "name")
        )
    flights = []
    for i, ac in enumerate(spec.aircraft):
        add(Node(ac.name, NodeKind.AIRCRAFT, len(nodes), ac.terminals), ("aircraft", i, "name"))
        flights.append(FlightPath.from_spec(ac, spec.start))

    roles: dict[str, set[str]] = {}
    for role, members in spec.roles.items():
        for j, member in enumerate(members):
            if member not in seen:
                raise fail(("roles", role, j), f"unknown node {member!r}")
            roles.setdefault(member, set()).add(role)
    kinds = {n.name: n.kind for n in nodes}
    for j, name in enumerate(spec.access.priority):
        if name not in kinds:
            raise fail(("access", "priority", j), f"unknown node {name!r}")
        if kinds[name] is NodeKind.SATELLITE:
            raise fail(("access", "priority", j), f"{name!r} is a satellite, not an access node")
    nodes = [
        Node(
            n.name,
            n.kind,
            n.index,
            n.terminals,
            n.compute,
            frozenset(roles.get(n.name, ())),
            n.plane,
            n.slot,
        )
        for n in nodes
    ]

    link_defaults = {}
    for kind in LinkKind:
        given = getattr(spec.link_defaults, kind.settings_key).model_dump(exclude_none=True)
        params = {**schema.BUILTIN_LINK_DEFAULTS[kind.settings_key], **given}
        if kind is LinkKind.ISL:
            params.pop("min_elevation_deg", None)
            for key in ("zenith_transmittance", "turbulence", "mean_fade_ms"):
                params.pop(key, None)
        link_defaults[kind] = LinkParams(**params)

    return Topology(
        name=spec.name,
        file=doc.file if doc else None,
        start=spec.start,
        nodes=nodes,
        satrecs=satrecs,
        ground_sites=list(spec.ground_stations),
        flights=flights,
        shells=shells,
        grids=grids,
        isl_pairs=_isl_pairs(spec.isl, nodes, len(satrecs), base_dir, fail),
        isl=spec.isl,
        access=spec.access,
        link_defaults=link_defaults,
        description=spec.description,
        weather=spec.weather,
        seed=spec.seed,
        faults=_faults(spec, {n.name for n in nodes}, fail),
        random_faults=spec.random_faults,
        containers=_containers(spec, nodes, fail),
    )


def _tle_grid(tle: schema.TleSource, recs, names, first, text, start, fail, where):
    """A TLE group's grid and each satellite's (plane, slot): from a Hypatia header,
    the file's mapping, or the elements (netemu.model.planes)."""
    if tle.planes == "auto":
        header = hypatia_header(text)
        if header is None:
            return planes.from_elements(recs, first, start, tle.plane_tolerance_deg)
        place = [divmod(i, header[1]) for i in range(len(recs))]
    else:
        missing = [n for n in names if n not in tle.planes]
        if missing:
            raise fail(where, f"no [plane, slot] for {missing[0]!r} ({len(missing)} missing)")
        unknown = sorted(set(tle.planes) - set(names))
        if unknown:
            raise fail(where, f"{unknown[0]!r} is not a satellite of this file")
        place = [tuple(tle.planes[n]) for n in names]
        if len(set(place)) < len(place):
            raise fail(where, "two satellites have the same [plane, slot]")
    return planes.from_slots(recs, first, start, place), place


def _isl_pairs(isl: schema.IslPolicy, nodes: list[Node], n_sat: int, base_dir: Path, fail):
    """policy list: the pairs given, by name or by 0-based satellite index (a < b)."""
    if isl.policy != "list":
        return []
    index = {n.name: n.index for n in nodes[:n_sat]}
    given = [(("isl", "links", i), a, b) for i, (a, b) in enumerate(isl.links)]
    if isl.file:
        path = base_dir / isl.file
        if not path.is_file():
            raise fail(("isl", "file"), f"ISL file not found: {path}")
        for n, line in enumerate(read_text(path, "ISL file").splitlines(), 1):
            words = line.split("#")[0].split()
            if not words:
                continue
            if len(words) != 2:
                raise InputError(f"expected two satellites, got {line.strip()!r}", path, None, n)
            given.append(((str(path), n), *words))
    out = set()
    for where, *ends in given:
        pair = []
        for end in ends:
            if end.isdigit() and end not in index:
                node = int(end) if int(end) < n_sat else None
            else:
                node = index.get(end)
            if node is None:
                if isinstance(where[0], str) and where[0] != "isl":
                    raise InputError(f"no satellite {end!r}", where[0], None, where[1])
                raise fail(where, f"no satellite {end!r}")
            pair.append(node)
        if pair[0] != pair[1]:
            out.add((min(pair), max(pair)))
    return sorted(out)


def _containers(spec: schema.TopologyFile, nodes: list[Node], fail) -> list[schema.ContainerSpec]:
    """The file's containers, each placed after the ones before it (the slots they take)."""
    gpus, taken, names = {n.name: n.gpus for n in nodes}, {}, set()
    for i, c in enumerate(spec.containers):
        if c.name in names:
            raise fail(("containers", i, "name"), f"duplicate container name {c.name!r}")
        names.add(c.name)
        try:
            place([c], gpus, taken)
        except PlacementError as exc:
            raise fail(("containers", i, exc.key), str(exc)) from None
    return list(spec.containers)


def _faults(spec: schema.TopologyFile, names: set[str], fail) -> list[Fault]:
    out = []
    for i, f in enumerate(spec.faults):
        where = ("faults", i, "target")
        try:
            target = parse_target(f.kind, f.target, "target")
        except InputError as exc:
            raise fail(where, exc.problem) from None
        for name in target:
            if name not in names:
                raise fail(where, f"unknown node {name!r}")
        out.append(Fault(f.kind, target, f.at_s, f.for_s, f.loss_percent, f.jitter_ms))
    return out


def _check_generated_name(name: str, fail, where: KeyPath) -> None:
    if not schema.NODE_NAME_RE.match(name):
        raise fail(
            where,
            f"the pattern makes {name!r}, not a valid node name: use a letter, then letters, "
            "digits or '_', 12 characters at most",
        )


# pydantic error types -> the words we use
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _document_path(data, loc, missing: bool) -> KeyPath:
    """A pydantic error location as a key path in the document.

    pydantic adds the names of union members ("constrained-float",
    "literal['sun-synchronous']") to locations: keep only the parts that are
    list indices or keys of the document, and the last part if it names a
    missing key.
    """
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        elif not (missing and i == len(loc) - 1):
            continue
        path.append(part)
    return tuple(path)


def _first_error(doc: LocatedDocument, exc: ValidationError) -> InputError:
    """The first pydantic error, as one line naming the key path and line."""
    err = exc.errors(include_url=False)[0]
    path = _document_path(doc.data, err["loc"], missing=err["type"] == "missing")
    problem = _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        problem = f"unknown key {path[-1]!r}"
    elif err["type"] != "missing" and not isinstance(err.get("input"), dict | list | None):
        problem += f" (got {err['input']!r})"
    return doc.error(path, problem)
