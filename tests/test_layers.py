"""No import runs back up the layers (docs/design.md).

The layers, lowest first: the pure model, planning and routing (no root, no
programs), the kernel adapters, shaping and captures, the live emulation, the
testing tools, the services workload, and on top the facade and the command
line. A module imports only from its own layer or below, not even inside a
function; the pure layers never load the kernel side at all; the generic tools
never load the services workload, which registers itself with the tools that
show its messages.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import netemu

#: Each package's layer (a module at the top level, e.g. netemu.errors, is its own entry).
LAYERS = {
    "netemu": 0, "netemu.errors": 0, "netemu.log": 0, "netemu.formats": 0, "netemu.stats": 0,
    "netemu.stages": 0, "netemu.native": 0,
    "netemu.model": 1, "netemu.plan": 2, "netemu.routes": 2,
    "netemu.kernel": 3, "netemu.shaping": 4, "netemu.capture": 4,
    "netemu.live": 5, "netemu.cluster": 6, "netemu.testing": 6, "netemu.services": 7,
    "netemu.report": 8, "netemu.api": 8, "netemu.cli": 9,
}  # fmt: skip
PURE = ("netemu.model", "netemu.plan", "netemu.routes")
GENERIC = ("netemu.kernel", "netemu.shaping", "netemu.capture", "netemu.live", "netemu.cluster",
           "netemu.testing", "netemu.report")  # fmt: skip


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(netemu.__path__, "netemu."))


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(module: str) -> list[tuple[int, str]]:
    """(line, module) of every netemu import in ``module``'s source, functions' included."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("netemu")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("netemu"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            out += [(node.lineno, n if node.module == "netemu" else node.module) for n in names]
    return out


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


def test_every_module_has_a_layer():
    assert [m for m in _modules() if _layer(m) not in LAYERS] == []


@pytest.mark.parametrize("module", _modules())
def test_no_import_runs_back_up(module):
    mine = LAYERS[_layer(module)]
    upward = [f"line {n}: {m}" for n, m in _imports(module) if LAYERS[_layer(m)] > mine]
    assert upward == []


def test_the_pure_layers_load_nothing_of_the_kernel_side():
    pure = [m for m in _modules() if _layer(m) in PURE]
    # netemu.native: where a compiled part is kept (pure code loads it, never builds it).
    allowed = {*PURE, "netemu", "netemu.errors", "netemu.log", "netemu.formats", "netemu.native"}
    assert {_layer(m) for m in _loaded_by(pure)} <= allowed


@pytest.mark.parametrize("layer", GENERIC)
def test_generic_tools_do_not_load_the_services(layer):
    modules = [m for m in _modules() if _layer(m) == layer]
    assert not {m for m in _loaded_by(modules) if m.startswith("netemu.services")}


def test_the_readme_map_is_the_layout():
    """README's map of the code is generated from the tree (scripts/codemap), in the
    order of the layers above."""
    codemap = Path(__file__).resolve().parent.parent / "scripts" / "codemap"
    check = subprocess.run([sys.executable, codemap, "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    script = {"__name__": "codemap", "__file__": str(codemap)}
    exec(codemap.read_text(), script)  # its ORDER, without running it
    order = script["ORDER"]
    layers = [m for m in LAYERS if m != "netemu"]  # the package itself: not in the map
    by_rank = sorted(layers, key=lambda m: (LAYERS[m], order.index(_entry(m))))
    assert [_entry(m) for m in by_rank] == order


def _entry(layer: str) -> str:
    """netemu.model -> model, netemu.cli -> cli.py (as scripts/codemap names them)."""
    name = layer.split(".")[1]
    return name if (Path(netemu.__path__[0]) / name).is_dir() else f"{name}.py"
