"""Mininet as Mininet users use it, on live runs: ``IP()``, ``pingAll``, ``pingFull``,
``iperf``, ``net.links`` following the links that carry, ``link a b down``/``up`` as
netemu faults, and the CLI (Mininet's commands and netemu's) through a terminal."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from netemu.errors import InputError
from netemu.live.emulation import Emulation
from netemu.model.topology import load_topology

from helpers import TOPOLOGIES, cli_prompt, leftovers, needs_root, train_topology

pytestmark = needs_root


def carrying_pairs(emu) -> set[frozenset]:
    return {frozenset((v.a, v.b)) for v in emu.links_now() if v.state == "up"}


def mininet_pairs(net) -> set[frozenset]:
    return {frozenset((link.intf1.node.name, link.intf2.node.name)) for link in net.links}


def test_pingall_over_kepler_loses_exactly_what_the_plan_leaves_unconnected(tmp_path):
    """Every node's ``IP()`` is its service address; ``pingAll`` over Kepler loses
    nothing between the nodes the plan connects, and every ping to a node it does not
    connect now (svalbard until 03:02:25): the loss is what the routes say. ``link kep3
    kep4 down`` cuts the ring there (routes go the other way round, ``net.links`` loses
    it); ``up`` ends the cut, and the ring link is back once it has re-acquired."""
    yaml = tmp_path / "kepler.yaml"
    short = "link_defaults:\n  isl: {acquisition_s: 1, reacquisition_s: 1}\n"
    yaml.write_text((TOPOLOGIES / "kepler.yaml").read_text().replace("link_defaults:\n", short))
    with Emulation(load_topology(yaml), shaper="wire", run_name="tmnkep") as emu:
        emu.start_controller()
        names = list(emu.names)

        def routed() -> set[tuple[str, str]]:
            return {(a, b) for a, b in itertools.permutations(names, 2) if emu.route(a, b)}

        # Links acquire at the start: until the routes the first epochs give are in.
        assert emu.wait_until(lambda: len(routed()) >= 12 * 11, timeout=30)
        net = emu.mininet()
        assert [h.IP() for h in net.hosts] == [emu.address(n) for n in names]
        before = routed()
        loss = net.pingAll(timeout=1)
        assert routed() == before  # nothing changed while it pinged
        connected = [n for n in names if any((n, m) in before for m in names)]
        assert len(connected) >= 12
        assert all((a, b) in before for a, b in itertools.permutations(connected, 2))
        connected = [net.get(n) for n in connected]
        assert net.ping(connected, timeout=1) == 0.0
        assert mininet_pairs(net) == carrying_pairs(emu)

        net.configLinkStatus("kep3", "kep4", "down")
        assert emu.wait_until(lambda: emu.link_state("kep3", "kep4") == "down", timeout=5)
        assert emu.route("kep3", "kep4") == [f"kep{i % 10}" for i in range(3, -7, -1)]
        assert frozenset(("kep3", "kep4")) not in mininet_pairs(net)
        assert mininet_pairs(net) == carrying_pairs(emu)
        net.configLinkStatus("kep3", "kep4", "up")
        assert emu.wait_until(lambda: emu.link_state("kep3", "kep4") == "up", timeout=10)
        assert emu.route("kep3", "kep4") == ["kep3", "kep4"]
        assert frozenset(("kep3", "kep4")) in mininet_pairs(net)
        faults = [(e["type"], e["target"]) for e in emu.events if e.get("fault") == "cut"]
        assert faults == [("fault", "kep3-kep4"), ("fault-cleared", "kep3-kep4")]
    unreachable = len(names) * (len(names) - 1) - len(before)
    assert loss == pytest.approx(100 * unreachable / (len(names) * (len(names) - 1)))
    assert leftovers("tmnkep") == []


def test_links_pingfull_and_iperf(tmp_path):
    """``net.links`` are the links carrying; ``pingFull`` and ``iperf`` work (TCP
    through a 20 Mbit/s ISL with iperf 2.1, which Mininet's own iperf waits for
    forever); ``link`` on nodes that are not there, or ``up`` on a link not cut so,
    is refused in one line."""
    topo = train_topology(tmp_path, "link_defaults:\n  isl: {data_rate_gbps: 0.02}\n")
    with Emulation(topo, shaper="wire", run_name="tmnlinks") as emu:
        emu.start_controller()
        net = emu.mininet()
        assert mininet_pairs(net) == carrying_pairs(emu) and len(net.links) >= 5
        t0, t1 = net.get("t0"), net.get("t1")
        full = net.pingFull([t0, t1], timeout=1)
        assert [sent - received for _, _, (sent, received, *_) in full] == [0, 0], full
        server, client = net.iperf([t0, t1], seconds=3)
        mbit = float(re.match(r"([\d.]+) Mbits/sec", server).group(1))
        assert 0.8 * 20 <= mbit <= 1.02 * 20, (server, client)
        with pytest.raises(InputError, match="not cut by 'link t0 t1 down'"):
            emu.link_status("t0", "t1", "up")
        with pytest.raises(InputError, match="no node named 'mars'"):
            emu.link_status("t0", "mars", "down")
    assert leftovers("tmnlinks") == []


def test_the_cli_as_a_user_types_it():
    """``netemu run --cli``: Mininet's commands on node names (``t0 ping -c1 t1``,
    ``pingall``, ``links``, ``net``, ``dump``, ``nodes``, ``link ... down``) and
    netemu's (``route``, ``delay``, ``status``, ``events``, ``fault``, ``capture``);
    a bad command is one line and the prompt goes on."""
    run = "tmncli"
    with cli_prompt(run) as term:
        term.type("t0 ping -c 1 t1\n")
        assert "1 received" in term.expect("mininet>")
        term.type("pingall\n")
        assert "0% dropped (42/42 received)" in term.expect("mininet>", timeout=60)
        term.type("nodes\n")
        assert "gs_north" in term.expect("mininet>")
        term.type("links\n")
        out = term.expect("mininet>")
        assert "t0:to-t1<->t1:to-t0" in out and "(OK OK)" in out, out
        term.type("net\n")
        assert "to-t1:to-t0" in term.expect("mininet>")
        term.type("dump\n")
        assert "172.16.0.1" in term.expect("mininet>")
        term.type("route gs_south gs_north\n")
        out = term.expect("mininet>")
        assert re.search(r"gs_south -> (t\d -> )+gs_north", out), out
        term.type("delay gs_south gs_north\n")
        assert re.search(r"gs_south -> gs_north: [\d.]+ ms over \d links", term.expect("mininet>"))
        term.type("status\n")
        assert "links up" in term.expect("mininet>")
        term.type("link t0 t1 down\n")
        term.expect("mininet>")
        term.type("fault reboot:t3/5\n")
        assert "reboot t3 from the next epoch" in term.expect("mininet>")
        term.type("capture t0\n")
        assert "capturing t0" in term.expect("mininet>")
        for _ in range(20):  # the faults apply from the next epoch (1 s)
            term.type("events 50\n")
            out = term.expect("mininet>")
            if '"fault": "reboot", "target": "t3"' in out:
                break
            time.sleep(0.5)
        assert '"fault": "cut", "target": "t0-t1"' in out, out
        assert '"fault": "reboot", "target": "t3"' in out, out
        term.type("route t0 nowhere\n")
        assert "no node named 'nowhere'" in term.expect("mininet>")
        term.type("fault melt:t3\n")
        assert "unknown fault kind 'melt'" in term.expect("mininet>")
        term.type("exit\n")
        rest = term.close()
    assert term.proc.returncode == 0 and "Traceback" not in rest, rest
    assert leftovers(run) == []
