"""Fixtures shared by netemu's tests."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The suite runs with signals as a terminal's job has them, however it was started
    (nohup or a script's background job would make its runs ignore Ctrl-C and SIGHUP,
    which the tests send on purpose)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("live") and os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


@pytest.fixture
def write_topology(tmp_path):
    """Write YAML text (dedented) to a file in tmp_path and return its path."""

    def write(text: str, name: str = "topo.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
