"""Names and addresses of the emulated network: deterministic, documented.

- Node ``i`` (its index in the topology) has a *service address*
  ``172.16.0.0 + i + 1`` (/32 on its loopback): applications address nodes, not
  links, and routes lead to these addresses. ``kep0`` in kepler.yaml is
  172.16.0.1.
- Links are *unnumbered*, as routers' point-to-point links often are: an
  interface has no address of its own, and a route's next hop is the
  neighbour's service address, reached directly on the interface toward it
  (``via 172.16.0.2 dev to-kep1 onlink``). So the address plan does not grow
  with the node pairs (a /31 per pair ran out at 2,896 nodes), and traceroute
  shows the nodes' own addresses. Node ``a``'s end of its link to ``b`` has the
  MAC ``02:`` followed by ``a`` and ``b`` in five hex digits each
  (``02:00:00:30:00:05``: node 3 toward node 5), and each end knows the other's
  (a permanent neighbour entry for the peer's service address): no ARP
  crosses the links, and the first packet of a flow is not delayed by address
  resolution. Routes name the neighbour by a nexthop object (``ip nexthop``)
  whose id is the interface's index.
- In node ``a`` the interface toward ``b`` is named ``to-<b>`` (at most 15
  characters, since node names have at most 12) and has interface index
  ``1000 + index of b``; names and indices only need to be unique inside a
  node's own network namespace.
- A run's namespaces are named ``netemu-<run>-<node>``; ``netemu clean``
  finds them by that prefix.

Pure computation.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from netemu.errors import InputError

SERVICE_BASE = int(ipaddress.IPv4Address("172.16.0.0"))
SERVICE_SIZE = 1 << 20  # 172.16.0.0/12
NETNS_PREFIX = "netemu-"
#: Largest topology: a service address each (172.16.0.0/12 less its first and last),
#: and a node index in five hex digits of a MAC.
MAX_NODES = SERVICE_SIZE - 2


def check_size(n_nodes: int) -> None:
    if n_nodes > MAX_NODES:
        raise InputError(
            f"{n_nodes} nodes: the live emulation's address plan supports at most {MAX_NODES}"
        )


def service_address(index: int) -> str:
    return str(ipaddress.IPv4Address(SERVICE_BASE + index + 1))


def service_address_u32(index):
    """Service addresses as integers (vectorised)."""
    return SERVICE_BASE + np.asarray(index) + 1


def mac_bytes(node, peer) -> np.ndarray:
    """The MACs of ``node``'s ends toward ``peer``, as rows of 6 bytes (vectorised):
    locally administered 02, then node and peer in 20 bits each."""
    value = (np.asarray(node, dtype=np.int64) << 20) | np.asarray(peer, dtype=np.int64)
    shifts = np.array([32, 24, 16, 8, 0])
    out = np.zeros((value.size, 6), dtype=np.uint8)
    out[:, 0] = 0x02
    out[:, 1:] = (value.reshape(-1)[:, None] >> shifts) & 0xFF
    return out


def mac_address(node: int, peer: int) -> str:
    """:func:`mac_bytes` of one end, as ``ip link`` writes it."""
    return ":".join(f"{x:02x}" for x in mac_bytes(node, peer)[0].tolist())


def interface_index(peer_index: int) -> int:
    return 1000 + peer_index


def nexthop_id(peer_index):
    """The id of the nexthop object toward ``peer_index`` (vectorised): its
    interface's index, unique in the node's namespace as the interface is."""
    return interface_index(peer_index)


def interface_name(peer_name: str) -> str:
    return f"to-{peer_name}"


def default_run_name(topology_name: str) -> str:
    """A run's name when none is given: the topology's, with characters a run name
    may not have ('-' would make one run's namespace prefix another's) as '_'."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in topology_name)[:40]


def netns_name(run: str, node_name: str) -> str:
    return f"{NETNS_PREFIX}{run}-{node_name}"
