"""The topology file format: what a YAML topology may say, with defaults.

These pydantic models check types, ranges and unknown keys. They describe the
*file*; :mod:`netemu.model.topology` turns a validated file into nodes and links.
The defaults for optical terminals come from ``shared/notes/link-physics.md``
(sources cited next to each value). The same schema is documented, key by key,
in ``docs/topology.md``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

#: Node names become host names, file names and parts of interface names, and
#: must be safe as shell words: a letter, then letters, digits or '_', at most
#: 12 characters.
NODE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")


def _check_node_name(name: str) -> str:
    if not NODE_NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not a valid node name: use a letter, then letters, digits "
            "or '_', 12 characters at most"
        )
    return name


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


NodeName = Annotated[str, AfterValidator(_check_node_name)]
UtcTime = Annotated[datetime, AfterValidator(_as_utc)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Built-in parameters per link kind, used where the file gives none.
#: SDA Tranche-1 optical terminal standard: 2.5 Gbps OOK-NRZ at 1553.33 nm,
#: 5,500 km reference range, 2.5 W, 15 urad divergence (1/e² half-angle),
#: LDPC FEC; an 80 mm telescope (Tesat SCOT80); acquisition <= 100 s
#: required, < 10 s goal [link-physics.md]. Pointing jitter 1.5 urad rms per
#: axis keeps it under ~7% of the beamwidth [P].
_SDA_TERMINAL = dict(
    data_rate_gbps=2.5,
    max_range_km=5500,
    acquisition_s=10,
    loss_percent=0.0,
    jitter_ms=0.0,
    tx_power_w=2.5,
    divergence_urad=15.0,
    aperture_m=0.08,
    wavelength_nm=1553.33,
    pointing_jitter_urad=1.5,
    modulation="ook",
    sensitivity_ppb=38.4,
    fec=True,
)
#: Built-in parameters per link kind, used where the file gives none.
BUILTIN_LINK_DEFAULTS: dict[str, dict[str, float]] = {
    # Re-acquisition of a recently held partner: assumed 1-10 s (notes).
    "isl": {**_SDA_TERMINAL, "reacquisition_s": 2},
    # GA-EMS airborne terminal: 2.5 Gbps rated at 5,500 km (Kepler demo, 2025).
    # Aircraft at ~10 km fly above most weather: a low 15 deg mask.
    # Above ~10 km the air is thin and dry: ~99% clear-sky zenith transmittance [?].
    "space_air": {
        **_SDA_TERMINAL,
        "reacquisition_s": 3,
        "min_elevation_deg": 15,
        "zenith_transmittance": 0.99,
    },
    # Hypatia's Starlink ground links use a 25 deg minimum elevation; clear-sky
    # zenith transmittance at 1550 nm ~0.9 at sea level [?].
    "space_ground": {
        **_SDA_TERMINAL,
        "reacquisition_s": 3,
        "min_elevation_deg": 25,
        "zenith_transmittance": 0.9,
    },
}


class LinkKindSettings(Strict):
    """Parameters of one link kind; unset ones keep the built-in default."""

    data_rate_gbps: float | None = Field(None, gt=0, le=10_000)
    max_range_km: float | None = Field(None, gt=0, le=100_000)
    acquisition_s: float | None = Field(None, ge=0, le=3600)
    reacquisition_s: float | None = Field(None, ge=0, le=3600)
    #: Space-to-air and space-to-ground only: the elevation mask at the
    #: aircraft or ground station.
    min_elevation_deg: float | None = Field(None, ge=0, lt=90)
    #: Extra random packet loss on every link of the kind, percent.
    loss_percent: float | None = Field(None, ge=0, le=100)
    #: Random extra delay (one standard deviation), milliseconds.
    jitter_ms: float | None = Field(None, ge=0, le=1000)
    #: Access kinds: clear-sky transmittance straight up (slant paths: T^(1/sin e)).
    zenith_transmittance: float | None = Field(None, gt=0, le=1)
    #: Each acquisition lasts up to this much longer, drawn uniformly (seeded).
    acquisition_spread_s: float | None = Field(None, ge=0, le=3600)
    #: Fastest the terminals can turn (line-of-sight angular rate), deg/s;
    #: a link that needs more cannot be held. Unset: no limit.
    max_slew_deg_s: float | None = Field(None, gt=0, le=1000)
    #: Access kinds: scintillation fades (Hufnagel-Valley 5/7) as burst loss.
    turbulence: bool | None = None
    mean_fade_ms: float | None = Field(None, gt=0, le=10_000)
    # The terminals at both ends, unless a node's `terminals` say otherwise.
    tx_power_w: float | None = Field(None, gt=0, le=1000)
    divergence_urad: float | None = Field(None, gt=0, le=10_000)
    aperture_m: float | None = Field(None, gt=0, le=10)
    wavelength_nm: float | None = Field(None, ge=300, le=12_000)
    pointing_jitter_urad: float | None = Field(None, gt=0, le=10_000)
    modulation: Literal["ook", "dpsk", "bpsk"] | None = None
    sensitivity_ppb: float | None = Field(None, gt=0, le=100_000)
    fec: bool | None = None


class LinkDefaults(Strict):
    isl: LinkKindSettings = LinkKindSettings()
    space_air: LinkKindSettings = LinkKindSettings()
    space_ground: LinkKindSettings = LinkKindSettings()


class Terminals(Strict):
    """A node's optical terminals: how many, and limits that narrow the link kind's."""

    count: int = Field(ge=0, le=64)
    max_range_km: float | None = Field(None, gt=0, le=100_000)
    data_rate_gbps: float | None = Field(None, gt=0, le=10_000)
    acquisition_s: float | None = Field(None, ge=0, le=3600)
    reacquisition_s: float | None = Field(None, ge=0, le=3600)
    #: This node's terminal hardware, where it differs from the link kind's.
    max_slew_deg_s: float | None = Field(None, gt=0, le=1000)
    tx_power_w: float | None = Field(None, gt=0, le=1000)
    divergence_urad: float | None = Field(None, gt=0, le=10_000)
    aperture_m: float | None = Field(None, gt=0, le=10)
    pointing_jitter_urad: float | None = Field(None, gt=0, le=10_000)


class Compute(Strict):
    """In-orbit compute payload: GPUs of one kind (e.g. Nvidia Jetson Orin)."""

    gpus: int = Field(ge=0, le=64)
    kind: str = Field("orin", pattern=r"^[a-z][a-z0-9_-]{0,31}$")


class WalkerShell(Strict):
    """A Walker-delta (or star) shell: T = planes * per_plane circular orbits."""

    #: Above the WGS72 equatorial radius (6,378.135 km, SGP4's): the orbit's mean
    #: semi-major axis is 6,378.135 km + altitude_km. Or give the mean motion.
    altitude_km: float | None = Field(None, ge=100, le=40_000)
    #: Revolutions per day (a TLE's mean motion, Kozai), instead of altitude_km.
    mean_motion_rev_day: float | None = Field(None, gt=0.9, le=17)
    #: Degrees, or ``sun-synchronous`` to derive it from the altitude (J2).
    inclination_deg: Annotated[float, Field(ge=0, le=180)] | Literal["sun-synchronous"]
    planes: int = Field(ge=1, le=1000)
    per_plane: int = Field(ge=1, le=1000)
    #: Walker phasing factor F, 0 <= F < planes.
    phasing: int = Field(0, ge=0)
    #: 360 for a Walker delta (planes spread all round), 180 for a star pattern.
    raan_spread_deg: float = Field(360, gt=0, le=360)
    #: Right ascension of the first plane's ascending node, degrees. Or give
    #: ``ltan_h`` instead: the local solar time of the ascending node (6 for a
    #: dawn-dusk orbit), which fixes it from the Sun's position at the epoch.
    raan_deg: float | None = Field(None, ge=0, lt=360)
    ltan_h: float | None = Field(None, ge=0, lt=24)
    #: Element epoch; defaults to the topology's start.
    epoch: UtcTime | None = None

    @model_validator(mode="after")
    def _check(self) -> WalkerShell:
        if self.phasing >= self.planes:
            raise ValueError(f"phasing must be below planes ({self.planes}), got {self.phasing}")
        if self.raan_deg is not None and self.ltan_h is not None:
            raise ValueError("give either raan_deg or ltan_h, not both")
        if (self.altitude_km is None) == (self.mean_motion_rev_day is None):
            raise ValueError("give either altitude_km or mean_motion_rev_day")
        return self


class TleSource(Strict):
    #: Path of a 2- or 3-line TLE file (CelesTrak's, or Hypatia's tles.txt with its
    #: "N_ORBITS N_SATS_PER_ORBIT" line first), relative to the topology file.
    file: str
    #: Each satellite's orbital plane and slot, for ``isl: {policy: plus-grid}``:
    #: ``auto`` takes them from a Hypatia header (satellite i in plane i // N_SATS,
    #: slot i % N_SATS), else derives them from the elements (planes: satellites whose
    #: inclination and right ascension of the ascending node agree within
    #: ``plane_tolerance_deg``; slots: by argument of latitude at the start); or a
    #: mapping of every satellite's name to ``[plane, slot]``.
    planes: Literal["auto"] | dict[str, tuple[int, int]] = "auto"
    plane_tolerance_deg: float = Field(2.0, gt=0, le=30)


class SatelliteGroup(Strict):
    """Satellites from one Walker shell or one TLE file, sharing their payload."""

    walker: WalkerShell | None = None
    tle: TleSource | None = None
    #: Name pattern. Walker: fields {n} (index in the group), {plane}, {slot}.
    #: TLE: {n} and {catnum} (NORAD catalog number).
    names: str = "sat{n}"
    terminals: Terminals = Terminals(count=4)
    compute: Compute | None = None

    @model_validator(mode="after")
    def _check(self) -> SatelliteGroup:
        if (self.walker is None) == (self.tle is None):
            raise ValueError("give exactly one of 'walker' or 'tle'")
        try:
            self.names.format(n=0, plane=0, slot=0, catnum=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad name pattern {self.names!r}: {exc}") from None
        return self


class GroundStation(Strict):
    name: NodeName
    lat_deg: Latitude
    lon_deg: Longitude
    altitude_km: float = Field(0.0, ge=-0.5, le=9)
    terminals: Terminals = Terminals(count=1)
    #: This site's share of cloud-free time (default: the weather's).
    cloud_free_probability: float | None = Field(None, ge=0, le=1)


class Waypoint(Strict):
    lat_deg: Latitude
    lon_deg: Longitude
    altitude_km: float = Field(ge=0, le=30)


class Aircraft(Strict):
    name: NodeName
    speed_kmh: float = Field(gt=0, le=4000)
    waypoints: list[Waypoint] = Field(min_length=2)
    #: Fly the route round and round (back to the first waypoint at the end).
    loop: bool = True
    #: When the aircraft leaves the first waypoint; defaults to the start.
    departure: UtcTime | None = None
    terminals: Terminals = Terminals(count=1)


class IslPolicy(Strict):
    """Which satellite pairs may hold inter-satellite links."""

    #: plus-grid: in-plane neighbours and one satellite in each adjacent plane
    #: (Walker shells, and TLE satellites by their planes and slots); nearest-k:
    #: each satellite links to its k nearest feasible partners, terminals
    #: permitting; list: the pairs in ``links`` and ``file``; none: no ISLs.
    policy: Literal["plus-grid", "nearest-k", "list", "none"] = "plus-grid"
    cross_plane: bool = True
    #: Cross-plane links are switched off while either end is above this
    #: latitude (Iridium-style), if given.
    cross_plane_cutoff_lat_deg: float | None = Field(None, gt=0, le=90)
    k: int = Field(4, ge=1, le=64)
    #: A link's straight line must stay this far above the Earth (Hypatia: 80 km).
    grazing_altitude_km: float = Field(80, ge=0, le=1000)
    #: policy list: satellite pairs by name, and/or a file of pairs, one per line,
    #: by name or by 0-based satellite index (Hypatia's isls.txt), relative to the
    #: topology file.
    links: list[tuple[str, str]] = []
    file: str | None = None

    @model_validator(mode="after")
    def _listed(self) -> IslPolicy:
        if self.policy == "list" and not (self.links or self.file):
            raise ValueError("policy list needs links (pairs of satellites) or a file of them")
        if self.policy != "list" and (self.links or self.file):
            raise ValueError(f"links and file are for policy list, not {self.policy}")
        return self


class AccessPolicy(Strict):
    """How an aircraft or ground station picks the satellite it links to."""

    selection: Literal["highest-elevation", "nearest", "longest-visibility"] = "highest-elevation"
    #: Voluntary handovers: leave a held satellite for one higher in the sky by
    #: more than this margin (degrees). Unset: keep a satellite until it is lost.
    hysteresis_deg: float | None = Field(None, ge=0, le=90)
    #: ... and only after holding it this long (orbital seconds).
    min_dwell_s: float = Field(0.0, ge=0, le=86_400)
    #: Ground stations and aircraft served first when satellite terminals are
    #: scarce; the others follow in file order (ground stations, then aircraft).
    priority: list[str] = []


class Weather(Strict):
    """Clouds over ground stations and aircraft below the cloud tops (netemu.model.weather)."""

    #: Single-site optical ground stations are cloud-free ~69% of the time (notes).
    cloud_free_probability: float = Field(0.69, ge=0, le=1)
    #: Mean length of a cloudy spell, orbital seconds.
    mean_cloudy_spell_s: float = Field(3 * 3600, gt=0, le=30 * 86_400)
    #: Aircraft above this altitude are above the weather (notes: ~10 km).
    cloud_top_km: float = Field(10.0, ge=0, le=20)
    seed: int = 0


FaultKind = Literal["cut", "terminal", "lose", "reboot", "degrade"]


class FaultEntry(Strict):
    """One fault on purpose (see netemu.model.faults): ``{kind: cut, target: kep3-kep4, at_s: 60,
    for_s: 30}``."""

    kind: FaultKind
    #: A node (lose, reboot) or a link NODE-NODE (cut, terminal: the first node's terminal,
    #: degrade).
    target: str
    #: Orbital seconds after the run's start.
    at_s: float = Field(0.0, ge=0)
    #: How long (orbital seconds); without it, until the end of the run.
    for_s: float | None = Field(None, gt=0)
    loss_percent: float = Field(0.0, ge=0, le=100)
    jitter_ms: float = Field(0.0, ge=0, le=10_000)


class RandomFaults(Strict):
    """``count`` faults drawn from ``seed``: kinds, times within ``within_s``, durations."""

    seed: int = 0
    count: int = Field(ge=1, le=10_000)
    kinds: list[FaultKind] = ["cut", "terminal", "reboot", "degrade"]
    within_s: float = Field(gt=0)
    for_s: tuple[float, float] = (30.0, 300.0)
    loss_percent: float = Field(20.0, ge=0, le=100)


ContainerName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,23}$")]


class ImageBuild(Strict):
    """An image built with ``podman build`` (a Containerfile and its context folder,
    relative to the topology file)."""

    context: str
    containerfile: str = "Containerfile"


class Placement(Strict):
    """Where a container's replicas run: over the nodes with a compute payload (or
    those listed), ``per: gpu`` one instance per free GPU slot (filling one node's
    slots before the next), ``per: node`` one per node in turn."""

    per: Literal["gpu", "node"] = "gpu"
    nodes: list[NodeName] = []


class ContainerSpec(Strict):
    """A user's container on emulated nodes (``containers:``; netemu.live.workloads)."""

    name: ContainerName
    #: ``podman``: a container of ``image``; ``process``: ``command`` as a plain process
    #: in the node's namespace (no image: where there is no container engine, or for a
    #: tool run as on a Mininet host).
    engine: Literal["podman", "process"] = "podman"
    #: The image: a name podman knows or can pull, or made from ``archive`` (podman
    #: load: a docker-archive or OCI tarball) or ``build`` under this name.
    image: str | None = Field(None, min_length=1, max_length=256)
    archive: str | None = None
    build: ImageBuild | None = None
    #: What runs (the image's default command if absent): a list of words or one string.
    command: list[str] | str | None = None
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    #: HOST:CONTAINER[:ro|rw], the host path relative to the topology file.
    volumes: list[str] = []
    workdir: str | None = None
    cpus: float | None = Field(None, gt=0, le=1024)
    memory_mib: int | None = Field(None, ge=6, le=4_194_304)
    #: GPU slots each instance takes on its node (a node's ``compute: {gpus: N}``).
    gpus: int = Field(0, ge=0, le=64)
    #: The first port of the instances on one node: the k-th gets port + k (NETEMU_PORT).
    port: int = Field(7000, ge=1, le=65_000)
    restart: Literal["no", "on-failure", "always"] = "no"
    #: Text its output prints once it serves: it counts as started when it has (and as
    #: failed if it exits or stays silent ``ready_timeout_s``); without it, once it has
    #: run for a second.
    ready: str | None = Field(None, min_length=1, max_length=200)
    ready_timeout_s: float = Field(120.0, gt=0, le=3600)
    #: One node or a list; or ``replicas`` placed by ``placement``.
    nodes: list[NodeName] | NodeName | None = None
    replicas: int | None = Field(None, ge=1, le=10_000)
    placement: Placement = Placement()

    @model_validator(mode="after")
    def _where(self) -> ContainerSpec:
        if (self.nodes is None) == (self.replicas is None):
            raise ValueError("give either nodes (one or a list) or replicas (with placement)")
        if self.archive and self.build:
            raise ValueError("give an image's archive or its build, not both")
        if self.engine == "podman" and self.image is None:
            raise ValueError("give the image (or engine: process, with a command)")
        if self.engine == "process":
            if not self.command:
                raise ValueError("engine process runs its command: give one")
            given = [k for k in ("image", "archive", "build", "volumes", "cpus", "memory_mib")
                     if getattr(self, k)]  # fmt: skip
            if given:
                raise ValueError(f"engine process has no image or limits: drop {given[0]}")
        return self


class TopologyFile(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    #: Default start of plans and runs (ISO 8601; UTC unless a zone is given).
    start: UtcTime
    satellites: list[SatelliteGroup] = Field(min_length=1)
    ground_stations: list[GroundStation] = []
    aircraft: list[Aircraft] = []
    link_defaults: LinkDefaults = LinkDefaults()
    isl: IslPolicy = IslPolicy()
    access: AccessPolicy = AccessPolicy()
    #: Clouds, if modelled: without this key the sky is always clear.
    weather: Weather | None = None
    #: Seed for what else is random (acquisition spread).
    seed: int = 0
    #: Faults on purpose, at given times (netemu.model.faults).
    faults: list[FaultEntry] = []
    #: And faults drawn at random (reproducibly, from a seed).
    random_faults: RandomFaults | None = None
    #: Users' containers on the nodes (netemu.live.workloads).
    containers: list[ContainerSpec] = []
    #: Role name -> node names, e.g. ``sensor: [kep3]``.
    roles: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], list[str]] = {}
