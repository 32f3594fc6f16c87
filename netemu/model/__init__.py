"""The model: what the topology file says and what the sky is.

Pure computation, no root: the topology file's schema and its loader (with errors
naming file, line and key), TLEs and Walker shells, flights, ground sites, laser
terminals and their link budget (:mod:`.physics`), weather, faults (what the file's
``faults:`` list schedules), users' containers placed on nodes and GPU slots
(:mod:`.placement`), the events a run can have (:mod:`.events`, typed, one JSON
form), and the constants and sky data (ephemerides) they rest on.
"""
