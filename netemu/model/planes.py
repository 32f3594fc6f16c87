"""Orbital planes and slots of satellites given by their elements (a TLE file).

+Grid links need each satellite's plane and its place in it. A Walker shell
knows them; a TLE file's satellites get them from a Hypatia header, from a
mapping the user gives, or from their orbits at the run's start: satellites
whose inclination and right ascension of the ascending node agree (within a
tolerance, on the circle) share a plane; planes are ordered by that right
ascension, and satellites in a plane by argument of latitude. :class:`Grid` is
the result, and :meth:`Grid.pairs` the +Grid candidate links. Pure computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sgp4.api import Satrec, jday


@dataclass(frozen=True)
class Grid:
    """Satellites of one TLE group in planes: ``planes[p]`` their node indices in slot
    order, ``u_deg`` each node's argument of latitude at the start (by node index),
    ``raan_deg`` each plane's right ascension of the ascending node."""

    planes: list[list[int]]
    u_deg: dict[int, float]
    raan_deg: list[float]

    def pairs(self, cross_plane: bool = True) -> list[tuple[int, int, bool]]:
        """(a, b, is_cross_plane): each plane's ring, and each satellite's nearest (in
        argument of latitude) in the next plane; the last plane meets the first where
        the planes go all round (a gap there no wider than between the others)."""
        out: list[tuple[int, int, bool]] = []
        for plane in self.planes:
            n = len(plane)
            for k in range(n if n > 2 else n - 1):
                out.append((plane[k], plane[(k + 1) % n], False))
        if not cross_plane or len(self.planes) < 2:
            return out
        P = len(self.planes)
        neighbours = list(range(P - 1))
        if P > 2 and _closes(self.raan_deg):
            neighbours.append(P - 1)
        for p in neighbours:
            here, there = self.planes[p], self.planes[(p + 1) % P]
            u_there = np.array([self.u_deg[s] for s in there])
            for sat in here:
                gap = np.abs((u_there - self.u_deg[sat] + 180.0) % 360.0 - 180.0)
                out.append((sat, there[int(np.argmin(gap))], True))
        return out


def _closes(raan_deg: list[float]) -> bool:
    """Do the planes go all round: is the gap from the last to the first no wider than
    1.5 times the widest of the others?"""
    steps = np.diff(raan_deg) % 360.0
    seam = (raan_deg[0] - raan_deg[-1]) % 360.0
    return bool(seam <= 1.5 * steps.max())


def orbit_angles(satrecs: list[Satrec], at: datetime) -> np.ndarray:
    """(inclination, RAAN, argument of latitude) in degrees of each orbit at ``at``,
    from its SGP4 state (TEME), shape (N, 3)."""
    jd, fr = jday(at.year, at.month, at.day, at.hour, at.minute,
                  at.second + at.microsecond / 1e6)  # fmt: skip
    out = np.zeros((len(satrecs), 3))
    for i, rec in enumerate(satrecs):
        _, r, v = rec.sgp4(jd, fr)
        r, v = np.array(r), np.array(v)
        h = np.cross(r, v)
        h /= np.linalg.norm(h)
        node = np.cross([0.0, 0.0, 1.0], h)
        norm = np.linalg.norm(node)
        node = node / norm if norm > 1e-12 else np.array([1.0, 0.0, 0.0])  # equatorial
        u = np.arctan2(np.dot(r, np.cross(h, node)), np.dot(r, node))
        out[i] = np.degrees([np.arccos(np.clip(h[2], -1, 1)), np.arctan2(node[1], node[0]), u])
    return out % [360.0, 360.0, 360.0]


def from_elements(
    satrecs: list[Satrec], first: int, at: datetime, tolerance_deg: float
) -> tuple[Grid, list[tuple[int, int]]]:
    """Planes by agreeing inclination and RAAN, slots by argument of latitude; the
    grid and each satellite's (plane, slot). ``first``: the first one's node index."""
    angles = orbit_angles(satrecs, at)
    groups: list[list[int]] = []
    for i in np.argsort(angles[:, 1], kind="stable").tolist():
        for group in groups:
            inc, raan = angles[group[0], 0], angles[group[0], 1]
            d_raan = abs((angles[i, 1] - raan + 180.0) % 360.0 - 180.0)
            if abs(angles[i, 0] - inc) <= tolerance_deg and d_raan <= tolerance_deg:
                group.append(i)
                break
        else:
            groups.append([i])
    return _grid([sorted(g, key=lambda i: angles[i, 2]) for g in groups], angles, first)


def from_slots(
    satrecs: list[Satrec], first: int, at: datetime, place: list[tuple[int, int]]
) -> Grid:
    """The grid of given (plane, slot) per satellite (a Hypatia header, a mapping)."""
    angles = orbit_angles(satrecs, at)
    by_plane: dict[int, list[tuple[int, int]]] = {}
    for i, (plane, slot) in enumerate(place):
        by_plane.setdefault(plane, []).append((slot, i))
    planes = [[i for _, i in sorted(by_plane[p])] for p in sorted(by_plane)]
    grid, _ = _grid(planes, angles, first)
    return grid


def _grid(
    planes: list[list[int]], angles: np.ndarray, first: int
) -> tuple[Grid, list[tuple[int, int]]]:
    raan = [float(np.degrees(np.angle(np.exp(1j * np.radians(angles[p, 1])).mean())) % 360)
            for p in planes]  # fmt: skip
    order = np.argsort(raan, kind="stable").tolist()
    planes, raan = [planes[k] for k in order], [raan[k] for k in order]
    place = [(0, 0)] * len(angles)
    for p, plane in enumerate(planes):
        for s, i in enumerate(plane):
            place[i] = (p, s)
    grid = Grid(
        [[first + i for i in plane] for plane in planes],
        {first + i: float(angles[i, 2]) for i in range(len(angles))},
        raan,
    )
    return grid, place
