"""Route messages encoded by netemu.netlink, decoded by pyroute2 (an independent parser)."""

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netemu.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    errors_in,
    route_message,
)


def decode(data: bytes) -> rtmsg:
    msg = rtmsg(data)
    msg.decode()
    return msg


def test_replace_route_message():
    msg = decode(route_message(7, "172.16.0.12", "10.0.0.3", 1005, "172.16.0.3", ack=True))
    assert msg["header"]["type"] == RTM_NEWROUTE and msg["header"]["sequence_number"] == 7
    assert msg["header"]["flags"] & (NLM_F_REPLACE | NLM_F_CREATE | NLM_F_ACK) == (
        NLM_F_REPLACE | NLM_F_CREATE | NLM_F_ACK
    )
    assert msg["dst_len"] == 32 and msg["table"] == 254
    assert msg.get_attr("RTA_DST") == "172.16.0.12"
    assert msg.get_attr("RTA_GATEWAY") == "10.0.0.3"
    assert msg.get_attr("RTA_OIF") == 1005
    assert msg.get_attr("RTA_PREFSRC") == "172.16.0.3"
    assert msg["header"]["length"] == len(
        route_message(7, "172.16.0.12", "10.0.0.3", 1005, "172.16.0.3")
    )


def test_delete_route_message():
    msg = decode(route_message(3, "172.16.0.9", delete=True))
    assert msg["header"]["type"] == RTM_DELROUTE
    assert not msg["header"]["flags"] & NLM_F_ACK
    assert msg.get_attr("RTA_DST") == "172.16.0.9" and msg.get_attr("RTA_GATEWAY") is None


@pytest.mark.parametrize("code", [0, -3, -22])
def test_errors_in_replies(code):
    import struct

    err = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", code) + b"\0" * 16
    assert errors_in(err + err) == [(5, -code), (5, -code)]
