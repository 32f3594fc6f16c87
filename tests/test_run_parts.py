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
