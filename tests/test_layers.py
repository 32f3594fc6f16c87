"""No import runs back up the layers (docs/design.md): the pure model, planning and
routing never load the kernel adapters or the live emulation; the generic tools
(emulation, captures, analysis, dissector, pytest plugin) never load the services
workload, which registers itself with the tools that show its messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["netemu.topology", "netemu.geometry", "netemu.links", "netemu.plan", "netemu.physics",
        "netemu.acquisition", "netemu.faults", "netemu.shapes", "netemu.events",
        "netemu.routing", "netemu.aggregation"]  # fmt: skip
KERNEL = {"netemu.netns", "netemu.netlink", "netemu.shaping", "netemu.emulation",
          "netemu.capture", "netemu.services"}  # fmt: skip
GENERIC = ["netemu.emulation", "netemu.capture", "netemu.analysis", "netemu.wireshark",
           "netemu.testing", "netemu.pytest_plugin", "netemu.report", "netemu.cli",
           "netemu.containers", "netemu.gpus"]  # fmt: skip


def _loaded_by(modules: list[str]) -> set[str]:
    """The netemu modules a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]: importlib.import_module(m)\n"
        "print(' '.join(m for m in sys.modules if m.startswith('netemu')))"
    )
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return set(out.split())


def test_the_pure_layer_loads_nothing_of_the_kernel_side():
    loaded = _loaded_by(PURE)
    assert not {m for m in loaded if ".".join(m.split(".")[:2]) in KERNEL}


@pytest.mark.parametrize("module", GENERIC)
def test_generic_tools_do_not_load_the_services(module):
    assert not {m for m in _loaded_by([module]) if m.startswith("netemu.services")}


@pytest.mark.parametrize("module", [m for m in GENERIC if m != "netemu.cli"])
def test_generic_tools_name_no_service_module_even_lazily(module):
    """Not even in a function's own import (the command line, on top of all, may)."""
    import importlib.util
    from pathlib import Path

    source = Path(importlib.util.find_spec(module).origin).read_text().splitlines()
    imports = [line.strip() for line in source if line.strip().startswith(("import ", "from "))]
    assert [line for line in imports if "netemu.services" in line] == []
