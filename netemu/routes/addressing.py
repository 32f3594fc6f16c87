"""Names and addresses of the emulated network: deterministic, documented.

- Node ``i`` (its index in the topology) has a *service address*
  ``172.16.0.0 + i + 1`` (/32 on its loopback): applications address nodes, not
  links, and routes lead to these addresses. ``kep0`` in kepler.yaml is
  172.16.0.1.
- The link between nodes ``a < b`` (N nodes in all) is the /31 at
  ``10.0.0.0 + 2 (a N + b)``: ``a`` takes the even address, ``b`` the odd one.
  A link keeps its addresses however often it comes and goes. Its MACs are
  ``02:00`` followed by the IPv4 address, and each end knows the other's
  (permanent neighbour entries): no ARP crosses the links, and the first
  packet of a flow is not delayed by address resolution.
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
LINK_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
LINK_SIZE = 1 << 24  # 10.0.0.0/8
NETNS_PREFIX = "netemu-"
#: Largest topology whose every node pair has its own /31 in 10.0.0.0/8.
MAX_NODES = int((LINK_SIZE / 2) ** 0.5)


def check_size(n_nodes: int) -> None:
    if n_nodes > MAX_NODES:
        raise InputError(
            f"{n_nodes} nodes: the live emulation's address plan supports at most {MAX_NODES}"
        )


def service_address(index: int) -> str:
    return str(ipaddress.IPv4Address(SERVICE_BASE + index + 1))


def link_addresses(a: int, b: int, n_nodes: int) -> tuple[str, str]:
    """Addresses of ``a`` and ``b`` on their link (a /31)."""
    a, b = min(a, b), max(a, b)
    base = LINK_BASE + 2 * (a * n_nodes + b)
    return str(ipaddress.IPv4Address(base)), str(ipaddress.IPv4Address(base + 1))


def service_address_u32(index):
    """Service addresses as integers (vectorised)."""
    return SERVICE_BASE + np.asarray(index) + 1


def link_address_u32(node, peer, n_nodes: int):
    """``node``'s address on its link to ``peer``, as integers (vectorised)."""
    node, peer = np.asarray(node), np.asarray(peer)
    lo, hi = np.minimum(node, peer), np.maximum(node, peer)
    return LINK_BASE + 2 * (lo * n_nodes + hi) + (node == hi)


def mac_address(ip: str) -> str:
    """A link interface's MAC: locally administered, 02:00 + its IPv4 address."""
    return "02:00:" + ":".join(f"{int(x):02x}" for x in ip.split("."))


def mac_bytes(address_u32) -> np.ndarray:
    """:func:`mac_address` of integer addresses, as rows of 6 bytes (vectorised)."""
    address = np.asarray(address_u32, dtype=np.int64)
    shifts = np.array([24, 16, 8, 0])
    out = np.zeros((len(address), 6), dtype=np.uint8)
    out[:, 0] = 0x02
    out[:, 2:] = (address[:, None] >> shifts) & 0xFF
    return out


def interface_index(peer_index: int) -> int:
    return 1000 + peer_index


def interface_name(peer_name: str) -> str:
    return f"to-{peer_name}"


def default_run_name(topology_name: str) -> str:
    """A run's name when none is given: the topology's, with characters a run name
    may not have ('-' would make one run's namespace prefix another's) as '_'."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in topology_name)[:40]


def netns_name(run: str, node_name: str) -> str:
    return f"{NETNS_PREFIX}{run}-{node_name}"
