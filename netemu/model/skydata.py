"""Skyfield's time scale and ephemeris, loaded offline.

Nothing is downloaded at run time: the time scale uses the UT1 and leap-second
tables built into Skyfield, and the planetary ephemeris (for the Sun's position,
which fixes a sun-synchronous orbit's local time) comes from the
``skyfield-data`` package.
"""

from __future__ import annotations

import warnings
from functools import cache

from skyfield.api import Loader, Timescale, load


@cache
def timescale() -> Timescale:
    """Skyfield's time scale from its built-in tables (no network)."""
    return load.timescale(builtin=True)


@cache
def ephemeris():
    """JPL DE421 (1900-2050) from ``skyfield-data``."""
    from skyfield_data import get_skyfield_data_path

    with warnings.catch_warnings():
        # skyfield-data warns that its bundled finals2000A.all (IERS Earth
        # orientation) has expired. netemu never reads that file: UT1 comes
        # from Skyfield's built-in tables above and DE421 does not expire.
        warnings.filterwarnings("ignore", "The file finals2000A.all has expired")
        path = get_skyfield_data_path()
    return Loader(path, verbose=False)("de421.bsp")
