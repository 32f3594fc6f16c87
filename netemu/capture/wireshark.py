"""The Wireshark dissector for netemu's protocol and events, generated from the scapy layers.

The tracking protocol is defined once, as scapy layers in
:mod:`netemu.services.protocol`. This module turns their ``fields_desc`` into
a Lua dissector, so Wireshark and tshark decode exactly what the services
send: every field with the filter name ``netemu.<layer>.<field>`` (e.g.
``netemu.report.seq``), nanosecond timestamps (``*_ns``) also as UTC times
(``netemu.report.sent_time``), track lists as subtrees. It finds the protocol
on the services' ports and, by its magic, on any other UDP port (a heuristic
dissector; ports that another dissector claims, like 53, need "Try heuristic
sub-dissectors first" in Wireshark's UDP preferences). It also decodes the
``netemu events`` records of netemu's captures (``netemu_event.type``).

``netemu wireshark`` installs it into the user's personal plugin folder, or
writes it where ``wireshark -X lua_script:FILE`` can load it.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from scapy.fields import (
    ByteField,
    FieldLenField,
    IEEEFloatField,
    IntField,
    LongField,
    PacketListField,
    ShortField,
    StrFixedLenField,
)
from scapy.packet import Packet

from netemu.kernel.privileges import invoking_user

PLUGIN_DIR = Path(".local/lib/wireshark/plugins")  # under the home folder (Wireshark >= 2.5)
FILE_NAME = "netemu.lua"


@dataclass(frozen=True)
class Protocol:
    """A UDP protocol declared as scapy layers: the ``header`` every message starts
    with (its ``magic`` first, its ``type`` field choosing the message layer bound to
    it with ``bind_layers``), the ``ports`` its senders use, the file declaring it."""

    header: type[Packet]
    magic: bytes
    ports: tuple[int, ...]
    source: str


_PROTOCOL: list[Protocol] = []  # the one registered (netemu.services.dissect)


def register(protocol: Protocol) -> None:
    """The protocol the dissector decodes (this module knows none of its own)."""
    _PROTOCOL[:] = [protocol]


def _protocol() -> Protocol:
    if not _PROTOCOL:
        raise RuntimeError("no protocol registered: import netemu.services.dissect first")
    return _PROTOCOL[0]


# scapy field class -> (ProtoField constructor, bytes, how to read it, display base)
_TYPES = [
    (FieldLenField, "uint16", 2, None),  # before ShortField: count fields are !H
    (LongField, "uint64", 8, "base.DEC"),
    (IntField, "uint32", 4, "base.DEC"),
    (ShortField, "uint16", 2, "base.DEC"),
    (ByteField, "uint8", 1, "base.HEX"),  # XByteField too
    (IEEEFloatField, "float", 4, None),
]


def _short(layer: type[Packet]) -> str:
    """Filter name of a layer: the last word of its scapy name ('netemu track report' -> report)."""
    return "" if layer is _protocol().header else layer().name.split()[-1].lower()


def _abbrev(layer: type[Packet], name: str) -> str:
    return ".".join(p for p in ("netemu", _short(layer), name) if p)


def _var(layer: type[Packet], name: str) -> str:
    return f"f_{_short(layer) or 'nemu'}_{name}"


def _layer_lua(layer: type[Packet], fields: list[str], funcs: list[str]) -> None:
    """ProtoField declarations (into ``fields``) and a dissect function (into ``funcs``)."""
    body = []
    for f in layer.fields_desc:
        var, abbrev = _var(layer, f.name), _abbrev(layer, f.name)
        label = f.name.replace("_", " ")
        if isinstance(f, StrFixedLenField):
            size = f.length_from(None)
            fields.append(f'{var} = ProtoField.string("{abbrev}", "{label}")')
            body.append(f"tree:add({var}, buf(off, {size})); off = off + {size}")
            continue
        if isinstance(f, PacketListField):
            count = next(
                g.name
                for g in layer.fields_desc
                if isinstance(g, FieldLenField) and g.count_of == f.name
            )
            item = f.cls
            body += [
                f'local {f.name} = tree:add(buf(off), "{label}: " .. v_{count})',
                f"for i = 1, v_{count} do",
                f'  local t = {f.name}:add(buf(off, {_size(item)}), "{item().name} " .. i)',
                f"  off = dissect_{_short(item)}(t, buf, off)",
                "end",
            ]
            continue
        ctor, size, base = next((t[1], t[2], t[3]) for t in _TYPES if isinstance(f, t[0]))
        args = f'"{abbrev}", "{label}"' + (f", {base}" if base else "")
        fields.append(f"{var} = ProtoField.{ctor}({args})")
        reader = {8: "uint64", 4: "uint", 2: "uint", 1: "uint"}[size]
        if ctor == "float":
            body.append(f"tree:add({var}, buf(off, 4)); off = off + 4")
            continue
        body.append(f"local v_{f.name} = buf(off, {size}):{reader}()")
        body.append(f"tree:add({var}, buf(off, {size}))")
        if f.name.endswith("_ns"):
            tvar, tname = f"{var[:-3]}_time", f.name[:-3] + "_time"
            fields.append(
                f'{tvar} = ProtoField.absolute_time("{_abbrev(layer, tname)}", '
                f'"{tname.replace("_", " ")}", base.UTC)'
            )
            body.append(f"tree:add({tvar}, buf(off, 8), ns_time(v_{f.name}))")
        body.append(f"off = off + {size}")
    info = [
        f.name
        for f in layer.fields_desc
        if not f.name.endswith("_ns") and isinstance(f, IntField | ShortField)
    ][:4]
    info_expr = ' .. " " .. '.join(f'"{n}=" .. tostring(v_{n})' for n in info) or '""'
    funcs.append(
        "\n".join(
            [
                f"function dissect_{_short(layer) or 'nemu'}(tree, buf, off)",
                *(f"  {line}" for line in body),
                f"  info_{_short(layer) or 'nemu'} = {info_expr}",
                "  return off",
                "end",
            ]
        )
    )


def _size(layer: type[Packet]) -> int:
    return len(bytes(layer()))


def _offset(layer: type[Packet], name: str) -> int:
    """Bytes before the field ``name`` of ``layer``."""
    before = layer.fields_desc[: [f.name for f in layer.fields_desc].index(name)]
    return sum(len(f.addfield(None, b"", f.default)) for f in before)


def _layers() -> list[type[Packet]]:
    """The header, the message layers bound to it (by type), and the layers those contain."""
    header = _protocol().header
    out = [header]
    for _fields, cls in header.payload_guess:
        for f in cls.fields_desc:
            if isinstance(f, PacketListField) and f.cls not in out:
                out.append(f.cls)
        out.append(cls)
    return out


def dissector_lua() -> str:
    """The Lua source of the dissector, from the scapy layers as they are now."""
    protocol = _protocol()
    header, magic, size = protocol.header, protocol.magic.decode(), _size(protocol.header)
    kind_at = _offset(header, "type")  # the byte that says which message follows
    not_ours = f'buf:len() < {size} or buf(0, {len(magic)}):string() ~= "{magic}"'
    fields: list[str] = []
    funcs: list[str] = []
    for layer in _layers():
        _layer_lua(layer, fields, funcs)
    types = [
        f'  [{values["type"]}] = {{name = "{cls().name}", dissect = function(t, b, o) '
        f"local r = dissect_{_short(cls)}(t, b, o); return r, info_{_short(cls)} end}},"
        for values, cls in header.payload_guess
    ]
    names = [line.split(" = ")[0] for line in fields]
    return "\n".join(
        [
            "-- netemu.lua: Wireshark dissector for netemu's tracking protocol and events.",
            f"-- Generated by 'netemu wireshark' from {protocol.source}; do not edit.",
            'local netemu = Proto("netemu", "netemu tracking protocol")',
            *(f"local {line}" for line in fields),
            f"netemu.fields = {{{', '.join(names)}}}",
            "",
            "local function ns_time(v)",
            "  return NSTime((v / 1000000000):tonumber(), (v % 1000000000):tonumber())",
            "end",
            "",
            *(f"local info_{_short(layer) or 'nemu'}" for layer in _layers()),
            *(f"local dissect_{_short(layer) or 'nemu'}" for layer in _layers()),
            *funcs,
            "",
            "local types = {",
            *types,
            "}",
            "",
            "function netemu.dissector(buf, pinfo, tree)",
            f"  if {not_ours} then return 0 end",
            '  pinfo.cols.protocol = "netemu"',
            "  local root = tree:add(netemu, buf())",
            "  local off = dissect_nemu(root, buf, 0)",
            f"  local kind = types[buf({kind_at}, 1):uint()]",
            "  if kind then",
            "    local sub = root:add(buf(off), kind.name)",
            "    local info",
            "    off, info = kind.dissect(sub, buf, off)",
            '    pinfo.cols.info = kind.name .. " " .. info',
            "  end",
            "  return buf:len()",
            "end",
            "",
            "local function heuristic(buf, pinfo, tree)",
            f"  if {not_ours} then return false end",
            "  netemu.dissector(buf, pinfo, tree)",
            "  return true",
            "end",
            'netemu:register_heuristic("udp", heuristic)',
            "-- The services' own ports too: there no other dissector claims them first.",
            f"for _, port in ipairs({{{', '.join(map(str, protocol.ports))}}}) do",
            '  DissectorTable.get("udp.port"):add(port, netemu)',
            "end",
            "",
            "-- The 'netemu events' interface of netemu captures (link type USER0): JSON lines.",
            'local event = Proto("netemu_event", "netemu event")',
            'local f_event_json = ProtoField.string("netemu_event.json", "event")',
            'local f_event_type = ProtoField.string("netemu_event.type", "type")',
            "event.fields = {f_event_json, f_event_type}",
            "function event.dissector(buf, pinfo, tree)",
            '  pinfo.cols.protocol = "netemu event"',
            "  local text = buf():string()",
            "  local t = tree:add(event, buf())",
            "  t:add(f_event_json, buf())",
            '  local kind = text:match(\'"type":"(.-)"\')',
            "  if kind then t:add(f_event_type, buf(), kind) end",
            "  pinfo.cols.info = text",
            "  return buf:len()",
            "end",
            'DissectorTable.get("wtap_encap"):add((wtap_encaps or wtap).USER0, event)',
            "",
        ]
    )


def install(output: str | Path | None = None) -> Path:
    """Write the dissector to ``output``, or into the (sudo-invoking) user's plugin folder."""
    user = invoking_user()
    if output is None:
        home = Path(pwd.getpwuid(user[0]).pw_dir) if user else Path.home()
        path = home / PLUGIN_DIR / FILE_NAME
        made = [p for p in reversed(path.parents) if p.is_relative_to(home) and not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path, made = Path(output), []
    path.write_text(dissector_lua())
    if user:
        for p in [*made, path]:
            os.chown(p, *user)
    return path
