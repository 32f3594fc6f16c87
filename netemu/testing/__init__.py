"""Testing with netemu: :class:`.network.Network` (assertions on measured packets),
the pytest plugin and its fixtures, and the probe that sends and receives them.
"""
