"""netemu's pytest plugin as users meet it: small suites run by pytester, passing and
failing, sharing emulations, interrupted, skipped, in parallel."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from netemu.testing.pytest_plugin import missing

from helpers import TOPOLOGIES, leftovers, needs_root

pytest_plugins = ["pytester"]
pytestmark = needs_root

TRAIN = TOPOLOGIES / "train.yaml"


def run_suite(pytester: pytest.Pytester, *args: str, **files: str) -> pytest.RunResult:
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--netemu-results", str(pytester.path / "res"),
        "--netemu-name", "ptsuite", *args,
    )  # fmt: skip
    assert leftovers("ptsuite", prefix=True) == [], "the plugin left emulations behind"
    return result


def test_a_passing_suite_with_junit_xml(pytester):
    result = run_suite(pytester, "--junitxml=junit.xml", test_ok=f"""
        import pytest

        @pytest.mark.netemu("{TRAIN}", speed=10)
        def test_paths_delays_and_commands(network):
            network.assert_route("gs_south", "t0", ["gs_south", "t0"])
            sample = network.assert_one_way_delay("gs_south", "gs_north", below_ms=50, count=50)
            assert sample.received == 50 and sample.percentile(50) > 5
            assert "to-t1" in network.run("t0", "ip -br link").stdout
            assert network.rtt("t0", "t1", count=3).received == 3

        @pytest.mark.netemu("{TRAIN}", capture=["t0"])
        def test_captures_are_on_request(network):
            network.assert_rtt("t0", "t1", below_ms=50, count=2)

        @pytest.mark.parametrize("network", [dict(topology="{TRAIN}", speed=10)], indirect=True)
        def test_parametrised_and_planned(network):
            from datetime import datetime, UTC
            now = network.planned_route("gs_south", "gs_north", network.now())
            assert now == network.route("gs_south", "gs_north")
            later = datetime(2026, 6, 21, 3, 8, tzinfo=UTC)  # gs_north moved to t2
            assert network.planned_route("gs_south", "gs_north", later)[-2] == "t2"
    """)  # fmt: skip
    result.assert_outcomes(passed=3)
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    props = [p.get("value") for case in cases for p in case.iter("property")]
    assert len(props) == 3 and all("res" in p for p in props)
    assert not (pytester.path / "res").exists() or not any((pytester.path / "res").iterdir())


def test_a_broken_expectation_explains_itself(pytester):
    result = run_suite(pytester, test_broken=f"""
        import pytest

        @pytest.mark.netemu("{TRAIN}", speed=10, capture=["t1"])
        def test_too_fast_to_be_true(network):
            network.assert_one_way_delay("gs_south", "gs_north", below_ms=0.1, count=20)
    """)  # fmt: skip
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for line in [
        "NetworkAssertionError: one-way delay gs_south -> gs_north: p99 ",
        "expected below 0.10 ms",
        "measured: 20 sent, 20 received (0.0% lost)",
        "path gs_south > t0 > t1 > t2 > t3 > gs_north (geometric ",
        "links on the path: gs_south-t0 up ",
        "; t0-t1 up 3.2",
        "kept: ",
        "log and captures kept in ",
    ]:
        assert line in out, line
    kept = next((pytester.path / "res").iterdir())
    assert (kept / "run.jsonl").exists() and (kept / "captures" / "t1.pcapng").exists()


def test_scopes_share_an_emulation_whose_time_runs_on(pytester):
    body = f"""
        import pytest

        @pytest.mark.netemu("{TRAIN}", speed=10, scope="module")
        class TestShared:
            def test_first(self, network):
                open("runs.txt", "a").write(network.emu.run_name + " " + str(network.now()) + "\\n")
                network.advance(20)

            def test_second(self, network):
                open("runs.txt", "a").write(network.emu.run_name + " " + str(network.now()) + "\\n")
    """
    result = run_suite(pytester, test_a=body, test_b=body)
    result.assert_outcomes(passed=4)
    runs = [line.split(" ", 1) for line in (pytester.path / "runs.txt").read_text().splitlines()]
    assert runs[0][0] == runs[1][0] != runs[2][0] == runs[3][0]  # one per module
    assert runs[1][1] > runs[0][1]  # the second test came later in orbital time


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_suite_tears_down(pytester, sig):
    """Ctrl-C, SIGTERM or a closed terminal mid-test: pytest stops, the emulations go."""
    result = run_suite(pytester, test_stop=f"""
        import os, signal
        import pytest

        @pytest.mark.netemu("{TRAIN}", scope="session")
        def test_killed_mid_test(network):
            os.kill(os.getpid(), signal.{sig})
            network.advance(30)
    """)  # fmt: skip
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_skips_say_why_and_only_where_something_is_absent(pytester):
    result = run_suite(pytester, "-rs", test_needs="""
        import pytest

        @pytest.mark.needs_gpu
        def test_gpu():
            pass

        @pytest.mark.needs_root
        @pytest.mark.needs_netns
        def test_root():
            pass
    """)  # fmt: skip
    if missing("gpu"):
        result.assert_outcomes(passed=1, skipped=1)
        assert "no CUDA GPU visible" in result.stdout.str()
    else:
        result.assert_outcomes(passed=2)


def test_parallel_workers_do_not_collide(pytester):
    pytest.importorskip("xdist", reason="pytest-xdist is not installed")
    tests = "\n".join(
        f"""
@pytest.mark.netemu("{TRAIN}")
def test_{i}(network):
    open(f"run-{i}.txt", "w").write(network.emu.run_name)
    network.assert_one_way_delay("t0", "t1", below_ms=20, count=20)
"""
        for i in range(2)
    )
    result = run_suite(pytester, "-n", "2", test_par="import pytest\n" + tests)
    result.assert_outcomes(passed=2)
    names = {(pytester.path / f"run-{i}.txt").read_text() for i in range(2)}
    assert len(names) == 2 and all(n.startswith("ptsuitegw") for n in names), names


def test_the_fixture_by_its_own_name_with_ini_options_and_a_header(pytester):
    """``netemu_network`` works where a suite's own conftest has a ``network`` fixture;
    ini options stand in for the command line's; the header names what the run had."""
    pytester.makeconftest("""
        import pytest

        @pytest.fixture
        def network():
            return "the suite's own"
    """)
    pytester.makeini(f"""
        [pytest]
        netemu_results = {pytester.path / "ini-res"}
        netemu_name = ptini
        netemu_keep = true
    """)
    pytester.makepyfile(test_named=f"""
        import pytest

        @pytest.mark.netemu("{TRAIN}", speed=10)
        def test_both(netemu_network, network):
            assert network == "the suite's own"
            assert netemu_network.emu.run_name.startswith("ptini")
            assert netemu_network.rtt("t0", "t1", count=2).received == 2
    """)  # fmt: skip
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert leftovers("ptini", prefix=True) == []
    result.assert_outcomes(passed=1)
    header = next(line for line in result.outlines if line.startswith("netemu "))
    assert re.fullmatch(
        r"netemu \S+: shaper (netem|wire) \(.+\); containers (podman|none.*); GPUs .+; root yes",
        header,
    ), header
    assert any((pytester.path / "ini-res").iterdir())  # kept: netemu_keep = true
