"""One emulation across several machines: the links between them, and machines to test with.

- :mod:`.tunnels`: one machine's ends of the links whose peers are on another
  machine (a VXLAN tunnel each over the machines' own network, the delay the
  geometry says less what that network adds, measured);
- :mod:`.underlay`: machines simulated on one host (a network namespace each,
  joined by a bridge) for tests and benchmarks.

Which node goes on which machine is :mod:`netemu.plan.partition`'s.
"""
