"""The import layers: no cycles between modules, no Qt in the engine, no GUI on the worker side."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lrp_desktop", "lrp_desktop_core")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_time_imports(path: Path) -> set[str]:
    """Return the modules ``path`` imports when it is loaded.

    Imports inside functions (deliberately deferred) and under ``if TYPE_CHECKING`` are left out.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).glob("*.py"))]
    modules = {module_name(path): path for path in paths}
    return {
        name: {other for other in load_time_imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_relative_and_absolute_imports():
    graph = import_graph()
    assert "lrp_desktop_core.names" in graph["lrp_desktop_core.cli_args"]
    assert "lrp_desktop.model_info" in graph["lrp_desktop.requests"]
    assert "lrp_desktop_core.cli_run" not in graph["lrp_desktop_core.cli"]  # deferred on purpose


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_the_engine_imports_neither_qt_nor_the_app():
    for path in sorted((ROOT / "lrp_desktop_core").glob("*.py")):
        imported = load_time_imports(path)
        assert not any(
            name.startswith(("PySide6", "pyqtgraph", "lrp_desktop.")) for name in imported
        ), path


def imported_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def test_the_worker_side_imports_no_gui_module():
    # QtCore is allowed: the worker thread's signals need it; widgets and painting are not
    modules = imported_after(
        "import lrp_desktop.requests, lrp_desktop.concept_requests, lrp_desktop.worker"
    )
    assert "lrp_desktop.requests" in modules
    gui = {"PySide6.QtGui", "PySide6.QtWidgets", "pyqtgraph", "lrp_desktop.session"}
    assert not gui & modules


@pytest.mark.parametrize("module", ["lrp_desktop_core.names", "lrp_desktop_core.cli_args"])
def test_the_catalogue_and_the_argument_parser_import_no_engine(module):
    modules = imported_after(f"import {module}")
    assert module in modules
    assert not {"torch", "numpy", "PySide6"} & modules
