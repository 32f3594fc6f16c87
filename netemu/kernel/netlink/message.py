"""The netlink message header and attributes, declared once for every message kind.

A message is a header (:data:`HEADER`), a fixed body and attributes, each attribute
a (length, type) pair (:data:`ATTR`) and its payload padded to 4 bytes.
"""

from __future__ import annotations

import struct

import numpy as np

NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLA_F_NESTED = 0x8000

#: struct nlmsghdr, as fields of a numpy dtype ('=' is host byte order, as netlink wants).
HEADER = [("len", "=u4"), ("type", "=u2"), ("flags", "=u2"), ("seq", "=u4"), ("pid", "=u4")]
#: struct nlattr's header; in a dtype, a fixed attribute is ("<name>_rta", ATTR) + payload.
ATTR = ("=u2", (2,))

_HEADER = np.dtype(HEADER)
_ATTR = struct.Struct("=HH")
_ERROR = np.dtype([("header", _HEADER), ("error", "=i4")])  # struct nlmsgerr's start


def messages(dtype: np.dtype, count: int, kind: int, flags: int) -> np.ndarray:
    """``count`` zeroed messages of a fixed layout with their header filled in
    (sequence numbers are given when sent)."""
    msgs = np.zeros(count, dtype)
    msgs["len"], msgs["type"], msgs["flags"] = dtype.itemsize, kind, flags | NLM_F_REQUEST
    return msgs


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def packed(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A whole message: the header before ``body``."""
    length = _HEADER.itemsize + len(body)
    return np.array([(length, kind, flags | NLM_F_REQUEST, seq, 0)], _HEADER).tobytes() + body


def errors_in(data: bytes) -> list[tuple[int, int]]:
    """(sequence number, errno) of each error in netlink replies; errno 0 is an ack."""
    out, offset = [], 0
    while offset + _HEADER.itemsize <= len(data):
        header = np.frombuffer(data, _HEADER, 1, offset)[0]
        if header["len"] < _HEADER.itemsize:
            break
        if header["type"] == NLMSG_ERROR and offset + _ERROR.itemsize <= len(data):
            code = int(np.frombuffer(data, _ERROR, 1, offset)[0]["error"])
            out.append((int(header["seq"]), -code))
        offset += (int(header["len"]) + 3) & ~3
    return out
