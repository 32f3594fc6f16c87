"""Physical constants, with their units in their names."""

SPEED_OF_LIGHT_KM_S = 299_792.458
#: WGS84 equatorial radius. Used for the spherical-Earth line-of-sight test, as
#: Hypatia does; it gives the 5,017 km maximum ISL at 550 km quoted in the notes.
EARTH_RADIUS_KM = 6378.137
#: Earth's gravitational parameter (WGS72, the value SGP4 is built on).
EARTH_MU_KM3_S2 = 398_600.8
#: Second zonal harmonic (WGS72), for the sun-synchronous inclination.
EARTH_J2 = 0.001082616
#: Mean motion of the Sun around the Earth: the nodal precession rate a
#: sun-synchronous orbit must have (360 degrees per tropical year).
SUN_SYNCHRONOUS_RATE_RAD_S = 2 * 3.141592653589793 / (365.2421897 * 86400.0)
#: IUGG mean Earth radius, for great-circle distances along the surface.
EARTH_MEAN_RADIUS_KM = 6371.0088
