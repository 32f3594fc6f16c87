"""Route messages (``rtmsg``): replace, unreachable and delete, many at a time.

What ``ip route replace DST/LEN via GW dev IF src SRC onlink``, ``ip route replace
unreachable DST/LEN`` and ``ip route del DST/LEN`` send, for arrays of routes.
"""

from __future__ import annotations

import socket

import numpy as np

from netemu.kernel.netlink.message import (
    ATTR,
    HEADER,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    messages,
)

RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE = 254, 4, 0
RTN_UNSPEC, RTN_UNICAST, RTN_UNREACHABLE = 0, 1, 7
#: The gateway is on the interface's link whatever its addresses (unnumbered links).
RTNH_F_ONLINK = 4

#: struct rtmsg and its destination: every route message has them (addresses big-endian).
_RTMSG = [
    ("family", "u1"), ("dst_len", "u1"), ("src_len", "u1"), ("tos", "u1"),
    ("table", "u1"), ("protocol", "u1"), ("scope", "u1"), ("rtype", "u1"), ("rflags", "=u4"),
    ("dst_rta", *ATTR), ("dst", ">u4"),
]  # fmt: skip
#: A unicast route's interface, gateway and preferred source.
_VIA = [("oif_rta", *ATTR), ("oif", "=u4"), ("gw_rta", *ATTR), ("gw", ">u4"),
        ("src_rta", *ATTR), ("src", ">u4")]  # fmt: skip
ROUTE = np.dtype(HEADER + _RTMSG)
ROUTE_VIA = np.dtype(HEADER + _RTMSG + _VIA)

_CREATE_OR_REPLACE = NLM_F_REPLACE | NLM_F_CREATE


def _routes(dtype: np.dtype, kind: int, flags: int, dst, dst_len, rtype: int) -> np.ndarray:
    msgs = messages(dtype, len(dst), kind, flags)
    msgs["family"], msgs["dst_len"], msgs["table"] = socket.AF_INET, dst_len, RT_TABLE_MAIN
    msgs["protocol"], msgs["scope"], msgs["rtype"] = RTPROT_STATIC, RT_SCOPE_UNIVERSE, rtype
    msgs["dst_rta"], msgs["dst"] = (8, RTA_DST), dst
    return msgs


def encode_replaces(dst, gateway, oif, prefsrc, dst_len=32) -> np.ndarray:
    """RTM_NEWROUTE (replace/create) messages, all fields as integer arrays; the
    gateway is reached directly on ``oif`` (onlink)."""
    msgs = _routes(ROUTE_VIA, RTM_NEWROUTE, _CREATE_OR_REPLACE, dst, dst_len, RTN_UNICAST)
    msgs["rflags"] = RTNH_F_ONLINK
    msgs["oif_rta"], msgs["oif"] = (8, RTA_OIF), oif
    msgs["gw_rta"], msgs["gw"] = (8, RTA_GATEWAY), gateway
    msgs["src_rta"], msgs["src"] = (8, RTA_PREFSRC), prefsrc
    return msgs


def encode_unreachables(dst, dst_len=32) -> np.ndarray:
    """RTM_NEWROUTE messages making ``unreachable`` routes (ICMP net unreachable)."""
    return _routes(ROUTE, RTM_NEWROUTE, _CREATE_OR_REPLACE, dst, dst_len, RTN_UNREACHABLE)


def encode_deletes(dst, dst_len=32) -> np.ndarray:
    """RTM_DELROUTE messages for routes of any type (unicast or unreachable)."""
    return _routes(ROUTE, RTM_DELROUTE, 0, dst, dst_len, RTN_UNSPEC)
