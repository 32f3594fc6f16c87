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


def test_vectorised_encoding_matches_the_single_message_encoder():
    import ipaddress

    import numpy as np

    from netemu.netlink import encode_deletes, encode_replaces

    def ip(text):
        return int(ipaddress.IPv4Address(text))

    many = encode_replaces(
        np.array([ip("172.16.0.12"), ip("172.16.0.13")]),
        np.array([ip("10.0.0.3"), ip("10.0.0.5")]),
        np.array([1005, 1007]),
        np.array([ip("172.16.0.3"), ip("172.16.0.3")]),
    )
    assert many[0].tobytes() == route_message(1, "172.16.0.12", "10.0.0.3", 1005, "172.16.0.3")
    assert many[1].tobytes() == route_message(2, "172.16.0.13", "10.0.0.5", 1007, "172.16.0.3")
    gone = encode_deletes(np.array([ip("172.16.0.9")]))
    assert gone[0].tobytes() == route_message(1, "172.16.0.9", delete=True)
