"""rtnetlink messages encoded by netemu.kernel.netlink, decoded by pyroute2 (an
independent parser), and sent to real namespaces, read back with ip and tc."""

import ipaddress
import json
import os
import struct
import subprocess

import numpy as np
import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from netemu.kernel.netlink.message import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, errors_in
from netemu.kernel.netlink.qdisc import RTM_NEWQDISC, netem_change, probability_u32
from netemu.kernel.netlink.route import (
    RTA_NH_ID,
    RTM_DELROUTE,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    RTN_UNREACHABLE,
    RTNH_F_ONLINK,
    encode_deletes,
    encode_nexthops,
    encode_replaces,
    encode_unreachables,
)
from netemu.kernel.netlink.sockets import send_all, send_requests, socket_in


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def decoded(msgs: np.ndarray) -> list[rtmsg]:
    out = []
    for m in msgs:
        msg = rtmsg(m.tobytes())
        msg.decode()
        out.append(msg)
    return out


def _attributes(msg: bytes, start: int) -> dict[int, bytes]:
    """A message's attributes from ``start`` on, by type (pyroute2 knows neither
    RTA_NH_ID nor nexthop messages, so these are read here from the bytes)."""
    out, at = {}, start
    while at < len(msg):
        length, kind = struct.unpack_from("=HH", msg, at)
        out[kind] = msg[at + 4 : at + length]
        at += (length + 3) & ~3
    return out


def test_replace_route_messages():
    msgs = encode_replaces(
        np.array([ip("172.16.0.12"), ip("172.16.0.16")]),
        np.array([1005, 1007]),
        np.array([ip("172.16.0.3")] * 2),
        np.array([32, 30]),
    )
    first, second = decoded(msgs)
    for msg in (first, second):
        assert msg["header"]["type"] == RTM_NEWROUTE
        flags = msg["header"]["flags"]
        assert flags & (NLM_F_REPLACE | NLM_F_CREATE) == NLM_F_REPLACE | NLM_F_CREATE
        assert not flags & NLM_F_ACK  # only the last of a batch asks, when sent
        assert msg["table"] == 254 and msg["header"]["length"] == msgs.dtype.itemsize
        assert msg.get_attr("RTA_PREFSRC") == "172.16.0.3"
        assert msg.get_attr("RTA_GATEWAY") is None and msg.get_attr("RTA_OIF") is None
    assert (first["dst_len"], second["dst_len"]) == (32, 30)
    assert first.get_attr("RTA_DST") == "172.16.0.12"
    nexthops = [_attributes(m.tobytes(), 16 + 12)[RTA_NH_ID] for m in msgs]
    assert [struct.unpack("=I", x)[0] for x in nexthops] == [1005, 1007]


def test_nexthop_messages():
    (msg,) = encode_nexthops(np.array([1005]), np.array([ip("172.16.0.6")]), np.array([1005]))
    raw = msg.tobytes()
    length, kind, flags = struct.unpack_from("=IHH", raw)
    assert (length, kind) == (len(raw), RTM_NEWNEXTHOP)
    assert flags & (NLM_F_REPLACE | NLM_F_CREATE) == NLM_F_REPLACE | NLM_F_CREATE
    family, _scope, _protocol, _, nhflags = struct.unpack_from("=BBBBI", raw, 16)
    assert family == 2 and nhflags == RTNH_F_ONLINK  # the gateway is on the link
    attrs = _attributes(raw, 24)
    assert struct.unpack("=I", attrs[1])[0] == 1005 and struct.unpack("=I", attrs[5])[0] == 1005
    assert attrs[6] == ipaddress.IPv4Address("172.16.0.6").packed


def test_unreachable_and_delete_route_messages():
    (unreachable,) = decoded(encode_unreachables(np.array([ip("172.16.0.8")]), 29))
    assert unreachable["header"]["type"] == RTM_NEWROUTE and unreachable["type"] == RTN_UNREACHABLE
    assert unreachable["dst_len"] == 29 and unreachable.get_attr("RTA_GATEWAY") is None
    (gone,) = decoded(encode_deletes(np.array([ip("172.16.0.9")])))
    assert gone["header"]["type"] == RTM_DELROUTE and gone["type"] == 0  # any type
    assert gone.get_attr("RTA_DST") == "172.16.0.9" and gone.get_attr("RTA_GATEWAY") is None


def test_netem_change_request():
    kind, flags, body = netem_change(1005, 0x10010, 0x100000, 3_221_400, 500_000, 900, 0.01,
                                     (0.001, 0.2, 0.0, 0.01))  # fmt: skip
    header = struct.pack("=IHHII", 16 + len(body), kind, flags | 1, 1, 0)
    msg = tcmsg(header + body)
    msg.decode()
    assert kind == RTM_NEWQDISC and msg["index"] == 1005
    assert (msg["parent"], msg["handle"]) == (0x10010, 0x100000)
    assert msg.get_attr("TCA_KIND") == "netem"
    assert probability_u32(1.0) == 0xFFFF_FFFF and probability_u32(-1) == 0


@pytest.mark.parametrize("code", [0, -3, -22])
def test_errors_in_replies(code):
    err = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", code) + b"\0" * 16
    assert errors_in(err + err) == [(5, -code), (5, -code)]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_interface_messages_configure_a_real_namespace():
    """Addresses, link state, permanent neighbours, a nexthop object and a route
    through it sent as netemu encodes them, read back with `ip -j` (the kernel's own
    account)."""
    from netemu.kernel.netlink.interface import (
        encode_addresses,
        encode_links_up,
        encode_neighbours,
    )
    from netemu.routes.addressing import mac_bytes

    def ip_json(*args):
        out = subprocess.run(["ip", "-n", "nltest", "-j", *args], capture_output=True, text=True)
        return json.loads(out.stdout)

    subprocess.run(["ip", "netns", "add", "nltest"], check=True)
    try:
        subprocess.run(
            ["ip", "-n", "nltest", "link", "add", "v0", "index", "1005", "type", "veth",
             "peer", "name", "v1", "index", "1006"],
            check=True,
        )  # fmt: skip
        peer = int(ipaddress.IPv4Address("172.16.0.7"))
        service = int(ipaddress.IPv4Address("172.16.0.4"))
        sock = socket_in("/run/netns/nltest")
        send_all(
            sock,
            [
                encode_addresses([1], [service], [32]),
                encode_links_up(np.array([1005, 1006, 1]), np.array([True, True, False])),
                encode_neighbours([1005], [peer], mac_bytes([6], [3])),
                # Unnumbered: the next hop is the peer's service address, on the link.
                encode_nexthops([1005], [peer], [1005]),
                encode_replaces([ip("172.16.0.9")], [1005], [service], [32]),
            ],
        )
        sock.close()
        links = {x["ifname"]: x for x in ip_json("link")}
        assert "UP" in links["v0"]["flags"] and "NOARP" in links["v0"]["flags"]
        assert "UP" in links["lo"]["flags"] and "NOARP" not in links["lo"]["flags"]
        addrs = {
            x["ifname"]: {
                (a["local"], a["prefixlen"]) for a in x["addr_info"] if a["family"] == "inet"
            }
            for x in ip_json("addr")
        }
        assert addrs["v0"] == set() and ("172.16.0.4", 32) in addrs["lo"]
        (neigh,) = ip_json("neigh", "show", "dev", "v0")
        assert neigh["dst"] == "172.16.0.7" and neigh["lladdr"] == "02:00:00:60:00:03"
        assert neigh["state"] == ["PERMANENT"]
        (nexthop,) = ip_json("nexthop", "show")
        assert (nexthop["id"], nexthop["gateway"], nexthop["dev"]) == (1005, "172.16.0.7", "v0")
        assert "onlink" in nexthop["flags"]
        (route,) = ip_json("route", "show", "172.16.0.9")
        assert route["nhid"] == 1005 and route["prefsrc"] == "172.16.0.4"
        assert route["gateway"] == "172.16.0.7" and route["dev"] == "v0"
    finally:
        subprocess.run(["ip", "netns", "del", "nltest"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.parametrize("rate_mbit", [20.0, 100_000.0])  # 100 Gbit/s: 64-bit rates
def test_htb_limiters_are_what_tc_would_make(rate_mbit):
    """The same limiter made by netlink on one interface and by tc on another:
    `tc -d class show` and `tc qdisc show` read them back the same."""
    from netemu.kernel.netlink.qdisc import htb_requests
    from netemu.shaping import htb_burst_bytes, htb_rate

    def tc(*args):
        return subprocess.run(["tc", "-n", "htbtest", *args], capture_output=True, text=True)

    subprocess.run(["ip", "netns", "add", "htbtest"], check=True)
    try:
        for name, index in (("a0", 2001), ("b0", 2003)):
            subprocess.run(
                ["ip", "-n", "htbtest", "link", "add", name, "index", str(index), "type", "veth",
                 "peer", "name", f"{name}p"],
                check=True,
            )  # fmt: skip
        sock = socket_in("/run/netns/htbtest")
        send_requests(
            sock,
            htb_requests(2001, 0x10000, 0x10010, 0x10, round(rate_mbit * 1e6 / 8),
                         htb_burst_bytes(rate_mbit)),
        )  # fmt: skip
        sock.close()
        tc("qdisc", "replace", "dev", "b0", "root", "handle", "1:", "htb", "default", "10")
        tc("class", "replace", "dev", "b0", "parent", "1:", "classid", "1:10", "htb",
           *htb_rate(rate_mbit).split())  # fmt: skip
        for what in (["-d", "class", "show"], ["qdisc", "show"]):
            ours, theirs = tc(*what, "dev", "a0").stdout, tc(*what, "dev", "b0").stdout
            assert ours and ours.split("\n")[0] == theirs.split("\n")[0]
    finally:
        subprocess.run(["ip", "netns", "del", "htbtest"])
