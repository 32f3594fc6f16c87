"""The services' messages in netemu's capture tools, registered with them.

They are registered with :mod:`netemu.capture.analysis` (what ``netemu analyze``
calls each packet) and :mod:`netemu.capture.wireshark` (the dissector it generates),
as scapy layers register themselves with ``bind_layers``; those tools know no
protocol of their own.
Imported by the commands that use them (``netemu analyze``, ``netemu wireshark``).
"""

from __future__ import annotations

from netemu.capture import analysis, wireshark
from netemu.services.app import FRAGMENT_PORT, REPORT_PORT, STATUS_PORT
from netemu.services.protocol import FRAGMENT, MAGIC, Layout, Nemu, TrackReport

_KINDS = {1: "netemu fragment", 2: "netemu report", 3: "netemu status"}
_REPORT = Layout(Nemu, TrackReport, upto="capture_ns")


@analysis.register_payload
def recognise(data: bytes) -> tuple[str, str | None, dict] | None:
    """(kind, label, fields) of a services message (label None: the packet's addresses
    say it best), None for any other payload."""
    if data[:4] != MAGIC or len(data) < 6 or data[5] not in _KINDS:
        return None
    kind, label, fields = _KINDS[data[5]], None, {}
    if data[5] == 1 and len(data) >= FRAGMENT.size:
        fields = FRAGMENT.unpack(data)
        label = f"sensor {fields['sensor']} frame {fields['seq']} #{fields['index']}"
    elif data[5] == 2 and len(data) >= _REPORT.size:
        fields = _REPORT.unpack(data)
        label = f"report of sensor {fields['sensor']} frame {fields['seq']}"
    return kind, label, fields


wireshark.register(
    wireshark.Protocol(
        Nemu, MAGIC, (FRAGMENT_PORT, REPORT_PORT, STATUS_PORT), "netemu/services/protocol.py"
    )
)
