"""Testing with netemu: assertions on measured packets, the pytest plugin, the probe.

:class:`.network.Network` measures a live emulation and explains failures, the
pytest plugin makes emulations fixtures, and the probe sends and receives packets.
"""
