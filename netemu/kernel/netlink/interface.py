"""Interface messages: addresses, link state and permanent neighbours, many at a time.

``ifaddrmsg``, ``ifinfomsg`` and ``ndmsg``: what ``ip addr add``, ``ip link set up``
and ``ip neigh replace ... nud permanent`` send.
"""

from __future__ import annotations

import socket

import numpy as np

from netemu.kernel.netlink.message import (
    ATTR,
    HEADER,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    messages,
)

RTM_NEWLINK, RTM_NEWADDR, RTM_NEWNEIGH = 16, 20, 28
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP, IFF_NOARP = 0x1, 0x80
NUD_PERMANENT = 0x80

ADDRESS = np.dtype(
    [
        *HEADER,
        *[("family", "u1"), ("prefixlen", "u1"), ("ifa_flags", "u1"), ("scope", "u1")],
        *[("index", "=u4"), ("local_rta", *ATTR), ("local", ">u4")],
        *[("address_rta", *ATTR), ("address", ">u4")],
    ]
)
LINK = np.dtype(
    [
        *HEADER,
        *[("family", "u1"), ("pad", "u1"), ("ltype", "=u2"), ("index", "=i4")],
        *[("ifi_flags", "=u4"), ("change", "=u4")],
    ]
)
NEIGHBOUR = np.dtype(
    [
        *HEADER,
        *[("family", "u1"), ("pad1", "u1"), ("pad2", "=u2"), ("index", "=i4")],
        *[("state", "=u2"), ("ndm_flags", "u1"), ("ntype", "u1")],
        *[("dst_rta", *ATTR), ("dst", ">u4")],
        *[("ll_rta", *ATTR), ("lladdr", "u1", (8,))],
    ]
)


def encode_addresses(index, address, prefixlen) -> np.ndarray:
    """RTM_NEWADDR: IPv4 ``address/prefixlen`` (integers) on interface ``index``."""
    msgs = messages(ADDRESS, len(index), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)
    msgs["family"], msgs["prefixlen"], msgs["index"] = socket.AF_INET, prefixlen, index
    msgs["local_rta"], msgs["local"] = (8, IFA_LOCAL), address
    msgs["address_rta"], msgs["address"] = (8, IFA_ADDRESS), address
    return msgs


def encode_links_up(index, noarp) -> np.ndarray:
    """RTM_NEWLINK: interface ``index`` up, and without ARP where ``noarp``."""
    msgs = messages(LINK, len(index), RTM_NEWLINK, 0)
    msgs["family"], msgs["index"] = socket.AF_UNSPEC, index
    msgs["change"] = IFF_UP | IFF_NOARP
    msgs["ifi_flags"] = IFF_UP | np.where(noarp, IFF_NOARP, 0)
    return msgs


def encode_neighbours(index, address, lladdr) -> np.ndarray:
    """RTM_NEWNEIGH: a permanent neighbour ``address`` (integers) with MAC ``lladdr``
    (rows of 6 bytes) on interface ``index``."""
    msgs = messages(NEIGHBOUR, len(index), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE)
    msgs["family"], msgs["index"], msgs["state"] = socket.AF_INET, index, NUD_PERMANENT
    msgs["dst_rta"], msgs["dst"] = (8, NDA_DST), address
    msgs["ll_rta"] = (10, NDA_LLADDR)
    msgs["lladdr"][:, :6] = lladdr
    return msgs
