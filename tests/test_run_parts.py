"""Parts of a live run that compute, tested without root: the run's folder and names
(netemu.live.run) and the route messages each node is sent (netemu.live.routes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netemu.errors import InputError
from netemu.kernel.netlink.route import (
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTN_UNICAST,
    RTN_UNREACHABLE,
)
from netemu.live.routes import route_messages
from netemu.live.run import Run
from netemu.routes import addressing
from netemu.routes.aggregation import PrefixChanges
from netemu.routes.routing import UNREACHABLE


def test_a_run_is_named_after_its_topology_and_kept_in_results():
    run = Run.make("Kepler-6 (test)")
    assert run.name == "Kepler_6__test_"
    assert run.folder == Path("results") / run.name and run.log is None
    assert run.captures == run.folder / "captures"
    assert run.namespace("kep0") == f"netemu-{run.name}-kep0"
    assert run.env["NETEMU_RUN"] == run.name


def test_a_run_log_goes_in_its_folder_or_where_asked(tmp_path):
    kept = Run.make("kepler", "k1", log=True)
    assert kept.log == Path("results/k1/run.jsonl")
    elsewhere = Run.make("kepler", "k1", log=tmp_path / "logs" / "mine.jsonl")
    assert (
        elsewhere.folder == tmp_path / "logs" and elsewhere.captures == tmp_path / "logs/captures"
    )
    given = Run.make("kepler", "k1", folder=tmp_path, log=True, captures=tmp_path / "pcap")
    assert (given.log, given.captures) == (tmp_path / "run.jsonl", tmp_path / "pcap")


@pytest.mark.parametrize("name", ["a-b", "a b", "x" * 41, "../up"])
def test_a_run_name_that_would_clash_or_escape_is_refused(name):
    with pytest.raises(InputError, match="run name"):
        Run.make("kepler", name)


def test_route_messages_go_to_their_nodes():
    """Node 0: a route to node 3 via node 1 and an unreachable one; node 2: one route
    deleted. Each node gets its messages only, with the addresses the plan says."""
    dst = addressing.service_address_u32([3, 2, 1])
    changes = PrefixChanges(
        replace=(np.array([0, 0]), dst[:2], np.array([32, 32]), np.array([1, UNREACHABLE])),
        delete=(np.array([2]), dst[2:], np.array([32])),
    )
    sent = dict(route_messages(changes))
    assert set(sent) == {0, 2}
    replaces, unreachables, deletes = sent[0]
    assert len(replaces) == len(unreachables) == 1 and len(deletes) == 0
    (r,) = replaces
    assert (r["type"], r["rtype"], r["dst"]) == (RTM_NEWROUTE, RTN_UNICAST, dst[0])
    assert r["nh"] == addressing.nexthop_id(1) == addressing.interface_index(1)  # toward node 1
    assert r["src"] == addressing.service_address_u32([0])[0]
    assert (unreachables[0]["rtype"], unreachables[0]["dst"]) == (RTN_UNREACHABLE, dst[1])
    assert [len(m) for m in sent[2]] == [0, 0, 1]
    assert sent[2][2][0]["type"] == RTM_DELROUTE and sent[2][2][0]["dst"] == dst[2]


def test_the_open_files_limit_is_raised_as_far_as_allowed():
    """Soft up to hard, hard up to fs.nr_open where the process may (CAP_SYS_RESOURCE);
    where it may not, the hard limit stays and nothing fails."""
    import resource

    from netemu.kernel import netns

    _, before = resource.getrlimit(resource.RLIMIT_NOFILE)
    netns.raise_open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = int(Path("/proc/sys/fs/nr_open").read_text())
    assert soft == hard and hard in (before, max(before, most))


class _FakeKernel:
    """Stands in for the namespaces' sockets: records what is sent, in order, and can
    hold a send until released or fail one."""

    def __init__(self):
        import threading

        self.sent: list[str] = []
        self.batches: list[tuple[str, list]] = []  # (namespace, messages) as sent
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()  # a send has begun
        self.fail_on: str | None = None

    def send_all(self, sock, messages):
        self.entered.set()
        self.release.wait(10)
        if sock == self.fail_on:
            raise OSError(100, "Network is down")
        self.sent.append(sock)
        self.batches.append((sock, messages))


@pytest.fixture
def installer(monkeypatch):
    from netemu.live import routes

    kernel = _FakeKernel()
    monkeypatch.setattr(routes, "send_all", kernel.send_all)
    inst = routes.Installer(backlog_prefixes=100)
    inst.sockets.close()
    inst.sockets = lambda netns: netns  # the namespace's name stands for its socket
    inst.sockets.close = lambda: None
    yield inst, kernel
    inst.close()


def test_the_installer_sends_updates_in_order_and_bounds_its_backlog(installer):
    """Updates queue behind the one being sent and go out in order; an update that
    would pass the backlog waits for room; wait() returns once all are in force."""
    import threading
    import time

    inst, kernel = installer
    kernel.release.clear()  # the kernel is busy with the first update
    done: list[int] = []
    inst.start([("ns-a", []), ("ns-b", [])], 60, lambda: done.append(1))
    assert inst.busy()
    inst.start([("ns-c", [])], 30, lambda: done.append(2))  # 91 of 100: fits
    third = threading.Thread(target=inst.start, args=([("ns-d", [])], 30, lambda: done.append(3)))
    third.start()
    time.sleep(0.2)
    assert third.is_alive() and done == []  # no room: it waits, as the epoch would
    kernel.release.set()
    third.join(5)
    inst.wait()
    assert kernel.sent == ["ns-a", "ns-b", "ns-c", "ns-d"] and done == [1, 2, 3]
    assert not inst.busy() and inst.sent == 3


def test_the_ends_of_a_link_gone_skip_the_queue_and_updates_stay_in_force_in_order(installer):
    """A namespace flagged urgent (an end of a link gone) is sent before the queued
    updates' other namespaces, its own batches still in their updates' order; every
    update is in force only once it and all before it are in the kernel."""

    inst, kernel = installer
    kernel.release.clear()
    done: list[int] = []
    inst.start([("ns-a", ["1a"]), ("ns-b", ["1b"]), ("ns-c", ["1c"])], 30, lambda: done.append(1))
    assert kernel.entered.wait(5)  # ns-a is in the kernel's hands
    inst.start([("ns-d", ["2d"]), ("ns-c", ["2c"])], 20, lambda: done.append(2))
    inst.start([("ns-e", ["3e"]), ("ns-c", ["3c"])], 20, lambda: done.append(3), urgent=["ns-c"])
    kernel.release.set()
    inst.wait()
    assert kernel.batches == [
        ("ns-a", ["1a"]),  # already being sent
        ("ns-c", ["1c"]), ("ns-c", ["2c"]), ("ns-c", ["3c"]),  # urgent, in order
        ("ns-b", ["1b"]), ("ns-d", ["2d"]), ("ns-e", ["3e"]),
    ]  # fmt: skip
    assert done == [1, 2, 3] and inst.sent == 3 and not inst.busy()


def test_an_urgent_update_is_in_force_only_after_the_ones_before_it(installer):

    inst, kernel = installer
    kernel.release.clear()
    done: list[int] = []
    inst.start([("ns-a", ["1a"]), ("ns-b", ["1b"])], 20, lambda: done.append(1))
    assert kernel.entered.wait(5)
    inst.start([("ns-x", ["2x"])], 10, lambda: done.append(2), urgent=["ns-x", "ns-y"])
    kernel.release.set()
    inst.wait()
    assert [ns for ns, _ in kernel.batches] == ["ns-a", "ns-x", "ns-b"] and done == [1, 2]


def test_routes_flag_the_ends_of_links_gone_as_urgent(monkeypatch):
    """Routes.update passes the installer the namespaces at the ends of the links that
    carried at the last update and no longer do (either end may be given first)."""
    from netemu.kernel.netlink.sockets import NamespaceSockets
    from netemu.live import routes

    monkeypatch.setattr(routes, "send_all", lambda sock, messages: None)
    r = routes.Routes([f"ns{i}" for i in range(4)], NamespaceSockets())
    flagged: list[list[str]] = []
    r.background_prefixes = 0  # every update through the installer
    real_start = r.installer.start

    def start(batches, prefixes, done, urgent=()):
        flagged.append(sorted(urgent))
        real_start(batches, prefixes, done, urgent)

    monkeypatch.setattr(r.installer, "start", start)
    r.installer.sockets = lambda netns: netns
    r.installer.sockets.close = lambda: None
    line = np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([1.0, 1.0, 1.0])
    r.update(*line, True, 0.0)
    r.update(np.array([1, 2, 3]), np.array([0, 1, 0]), np.ones(3), True, 0.0)  # 2-3 gone
    r.update(np.array([3]), np.array([0]), np.array([5.0]), True, 0.0)  # 0-1, 1-2 gone
    r.settle()
    r.close()
    assert flagged == [[], ["ns2", "ns3"], ["ns0", "ns1", "ns2"]]


def test_the_installer_spreads_to_every_cpu_only_while_far_behind(installer, monkeypatch):
    """Its thread keeps to its creator's CPUs, and takes every CPU the process had while
    more than SPREAD_PREFIXES wait, until fewer than a quarter of that do."""
    import os
    import time

    from netemu.live import routes

    inst, kernel = installer
    monkeypatch.setattr(routes, "SPREAD_PREFIXES", 40)
    inst._cpus = {"every"}
    moves: list[set] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: moves.append(cpus))
    monkeypatch.setattr(os, "setpriority", lambda *args: None)
    kernel.release.clear()
    inst.start([("ns-a", [])], 30, lambda: None)  # 31 waiting: stays near
    assert kernel.entered.wait(5)
    inst.start([("ns-b", [])], 30, lambda: None)
    inst.start([("ns-c", [])], 30, lambda: None)  # 62 still waiting once ns-a is sent
    kernel.release.set()
    inst.wait()
    deadline = time.monotonic() + 5  # it looks once more before it waits: back near
    while len(moves) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert moves[0] == {"every"} and len(moves) == 2 and moves[1] != {"every"}, moves


def test_a_failed_send_fails_the_next_update_and_drops_the_queue(installer):
    inst, kernel = installer
    kernel.fail_on = "ns-b"
    kernel.release.clear()
    done: list[int] = []
    inst.start([("ns-a", []), ("ns-b", [])], 10, lambda: done.append(1))
    inst.start([("ns-c", [])], 10, lambda: done.append(2))
    kernel.release.set()
    with pytest.raises(OSError, match="Network is down"):
        inst.wait()
    assert kernel.sent == ["ns-a"] and done == [] and not inst.busy()


def test_routes_wait_for_the_next_update_when_an_update_comes_late_for_them():
    """An epoch a quarter step behind its due time, or a link ready within a quarter
    step of the next epoch's, leaves its routes to the next update."""
    from netemu.live.emulation import routes_wait

    assert not routes_wait(True, 0.2, 1.0) and routes_wait(True, 0.3, 1.0)
    assert not routes_wait(True, 0.02, 0.1) and routes_wait(True, 0.03, 0.1)
    assert not routes_wait(False, -0.3, 1.0) and routes_wait(False, -0.2, 1.0)
    assert routes_wait(False, 0.1, 1.0)  # the next epoch is already due
