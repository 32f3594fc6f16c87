"""Routing: the emulated network's addresses and shortest-delay routes.

Pure computation, no root: the address plan (service addresses, link addresses,
namespace and interface names), incremental shortest-path trees (:mod:`.routing`)
and their aggregation into few prefixes per node (:mod:`.aggregation`).
"""
