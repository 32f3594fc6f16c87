"""pcapng, the capture format Wireshark opens: written block by block, read back.

Only what netemu needs, after the format's specification
(draft-ietf-opsawg-pcapng): a section header (with the application and a
comment), interfaces (name, description, nanosecond timestamps), enhanced
packet blocks (comment, direction) and interface statistics (packets received
and dropped by the capture). :func:`read` also reads classic pcap files
(microsecond or nanosecond), which is what tcpdump writes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
#: "Reserved for private use": netemu's event records (the dissector decodes them).
LINKTYPE_USER0 = 147

_SHB, _IDB, _EPB, _SPB, _ISB = 0x0A0D0D0A, 1, 6, 3, 5
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_SHB_USERAPPL = 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS = 2
_ISB_IFRECV, _ISB_IFDROP = 4, 5
INBOUND, OUTBOUND = 1, 2
_PCAP_MAGIC = {0xA1B2C3D4: 1_000, 0xA1B23C4D: 1}  # classic pcap: ns per timestamp unit


@dataclass
class Interface:
    name: str
    description: str = ""
    linktype: int = LINKTYPE_ETHERNET
    #: From the interface's statistics: packets the capture saw, and dropped (None: unknown).
    received: int | None = None
    dropped: int | None = None


@dataclass
class Record:
    """One captured packet: on which interface (index), when (ns since the epoch), what."""

    interface: int
    time_ns: int
    data: bytes
    comment: str | None = None
    direction: int | None = None  # INBOUND or OUTBOUND


def _options(options: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for code, value in options:
        out += struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack("<HH", _OPT_END, 0) if out else b""


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class Writer:
    """A pcapng file: interfaces first, then records in any order (Wireshark sorts by time)."""

    def __init__(self, path: str | Path, application: str = "netemu", comment: str = ""):
        self.path = Path(path)
        self._file: BinaryIO = self.path.open("wb")
        options = [(_SHB_USERAPPL, application.encode())]
        if comment:
            options.append((_OPT_COMMENT, comment.encode()))
        header = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _options(options)
        self._file.write(_block(_SHB, header))
        self.interfaces: list[Interface] = []

    def add_interface(self, interface: Interface) -> int:
        options = [(_IF_NAME, interface.name.encode()), (_IF_TSRESOL, bytes([9]))]
        if interface.description:
            options.append((_IF_DESCRIPTION, interface.description.encode()))
        body = struct.pack("<HHI", interface.linktype, 0, 0) + _options(options)
        self._file.write(_block(_IDB, body))
        self.interfaces.append(interface)
        return len(self.interfaces) - 1

    def write(self, record: Record) -> None:
        options = []
        if record.comment:
            options.append((_OPT_COMMENT, record.comment.encode()))
        if record.direction:
            options.append((_EPB_FLAGS, struct.pack("<I", record.direction)))
        n = len(record.data)
        body = struct.pack(
            "<IIIII", record.interface, record.time_ns >> 32, record.time_ns & 0xFFFFFFFF, n, n
        )
        body += record.data + b"\0" * (-n % 4) + _options(options)
        self._file.write(_block(_EPB, body))

    def statistics(self, interface: int, time_ns: int, received: int, dropped: int) -> None:
        """What the capture on an interface saw and dropped (Wireshark shows the drops)."""
        options = [
            (_ISB_IFRECV, struct.pack("<Q", received)),
            (_ISB_IFDROP, struct.pack("<Q", dropped)),
        ]
        body = struct.pack("<III", interface, time_ns >> 32, time_ns & 0xFFFFFFFF)
        self._file.write(_block(_ISB, body + _options(options)))
        self.interfaces[interface].received = received
        self.interfaces[interface].dropped = dropped

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FormatError(ValueError):
    """Not a pcap or pcapng file, or a damaged one."""


def read(path: str | Path) -> tuple[list[Interface], Iterator[Record]]:
    """A capture's interfaces and its records (a pcap file has one interface).

    The interface list of a pcapng file fills as its records are read.
    """
    with Path(path).open("rb") as f:
        head = f.read(24)
    if len(head) < 24:
        raise FormatError("too short for a capture file")
    magic_le = struct.unpack("<I", head[:4])[0]
    for endian in "<>":
        unit = _PCAP_MAGIC.get(struct.unpack(endian + "I", head[:4])[0])
        if unit:
            linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
            return [Interface("pcap", "", linktype)], _pcap_records(path, endian, unit)
    if magic_le != _SHB:
        raise FormatError("neither pcap nor pcapng")
    interfaces: list[Interface] = []
    return interfaces, _pcapng_records(path, interfaces)


def _pcap_records(path, endian: str, unit_ns: int) -> Iterator[Record]:
    with Path(path).open("rb") as f:
        f.seek(24)
        while len(h := f.read(16)) == 16:
            sec, frac, caplen, _ = struct.unpack(endian + "IIII", h)
            yield Record(0, sec * 1_000_000_000 + frac * unit_ns, f.read(caplen))


def _parse_options(data: bytes, endian: str) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    at = 0
    while at + 4 <= len(data):
        code, length = struct.unpack_from(endian + "HH", data, at)
        if code == _OPT_END:
            break
        out.setdefault(code, []).append(data[at + 4 : at + 4 + length])
        at += 4 + length + (-length % 4)
    return out


def _pcapng_records(path, interfaces: list[Interface]) -> Iterator[Record]:
    endian, resolutions = "<", []
    with Path(path).open("rb") as f:
        while len(h := f.read(8)) == 8:
            kind = struct.unpack("<I", h[:4])[0]
            if kind == _SHB:
                body_start = f.read(4)
                endian = "<" if struct.unpack("<I", body_start)[0] == _BYTE_ORDER_MAGIC else ">"
                length = struct.unpack(endian + "I", h[4:])[0]
                f.read(length - 12)
                interfaces.clear()
                resolutions.clear()
                continue
            kind, length = struct.unpack(endian + "II", h)
            if length < 12:
                raise FormatError(f"damaged block (length {length})")
            body = f.read(length - 8)[:-4]
            if kind == _IDB:
                linktype = struct.unpack_from(endian + "H", body)[0]
                opts = _parse_options(body[8:], endian)
                resol = opts.get(_IF_TSRESOL, [bytes([6])])[0][0]
                if resol & 0x80:
                    raise FormatError("power-of-two timestamp resolution not supported")
                resolutions.append((10 ** max(0, 9 - resol), 10 ** max(0, resol - 9)))
                interfaces.append(
                    Interface(
                        opts.get(_IF_NAME, [b""])[0].decode(errors="replace"),
                        opts.get(_IF_DESCRIPTION, [b""])[0].decode(errors="replace"),
                        linktype,
                    )
                )
            elif kind == _EPB:
                ifid, high, low, caplen, _ = struct.unpack_from(endian + "IIIII", body)
                data = body[20 : 20 + caplen]
                opts = _parse_options(body[20 + caplen + (-caplen % 4) :], endian)
                mul, div = resolutions[ifid]
                comment = opts.get(_OPT_COMMENT, [None])[0]
                flags = opts.get(_EPB_FLAGS, [None])[0]
                yield Record(
                    ifid,
                    ((high << 32) | low) * mul // div,
                    data,
                    comment.decode(errors="replace") if comment else None,
                    struct.unpack(endian + "I", flags)[0] & 3 if flags else None,
                )
            elif kind == _ISB:
                opts = _parse_options(body[12:], endian)
                iface = interfaces[struct.unpack_from(endian + "I", body)[0]]
                for code, attr in ((_ISB_IFRECV, "received"), (_ISB_IFDROP, "dropped")):
                    if code in opts:
                        setattr(iface, attr, struct.unpack(endian + "Q", opts[code][0])[0])
            elif kind == _SPB:
                caplen = struct.unpack_from(endian + "I", body)[0]
                yield Record(0, 0, body[4 : 4 + caplen])
