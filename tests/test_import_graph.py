"""The package's import graph has no cycles (a static scan of every ``import`` in mvpose/).

Every import statement counts, at module level or inside a function: a cycle broken only by
importing late is still a cycle. ``from mvpose.a import b`` is an edge to ``mvpose.a.b`` when that
is a module, else to ``mvpose.a`` (the package ``__init__``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mvpose"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``mvpose.x.y`` -> file, for every module and package ``__init__`` under ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the mvpose modules it imports (anywhere in its body)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules:  # ``import mvpose.a.b.C`` style: nearest module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_scan_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "mvpose"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from mvpose.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from mvpose.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import a\nimport mvpose.leaf\n")
    (pkg / "leaf.py").write_text("import os\n")
    graph = import_graph(pkg)
    assert graph["mvpose.sub.b"] == {"mvpose.sub.a", "mvpose.leaf"}
    assert graph["mvpose.sub.a"] == {"mvpose.sub.b"}
    assert find_cycles(graph) == [["mvpose.sub.a", "mvpose.sub.b"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50  # the scan saw the package
    assert find_cycles(graph) == []


@pytest.mark.parametrize("leaf", ["mvpose.models.registry", "mvpose.data.registry"])
def test_registries_are_leaves(leaf):
    """The registries import nothing from the package: the classes register themselves."""
    assert import_graph()[leaf] == set()


def test_cli_imports_no_torch():
    """``mvpose --help`` stays instant: the CLI module imports neither torch nor a reader."""
    code = "import sys, mvpose.cli; print(sorted(m for m in ('torch', 'mvpose.data') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_capture_pipeline_never_imports_the_detector():
    """The pipeline takes keypoint sources (mvpose.capture.types.KeypointSource); the model path is one."""
    graph = import_graph()
    assert "mvpose.capture.detect" not in reachable(graph, "mvpose.capture.pipeline")
    assert not {"mvpose.engine.evaluate", "mvpose.models"} & reachable(graph, "mvpose.capture.pipeline")
    for leaf in ("mvpose.capture.types", "mvpose.capture.issues", "mvpose.capture.stages"):
        assert not {m for m in reachable(graph, leaf) if m.startswith("mvpose.capture.")} - {
            "mvpose.capture.issues", "mvpose.capture.types", "mvpose.capture.keypoints"}, leaf


@pytest.mark.parametrize("lower, upper", [("mvpose.geometry", "mvpose.capture"), ("mvpose.models", "mvpose.capture"),
                                          ("mvpose.data", "mvpose.capture")])
def test_layers_do_not_import_upwards(lower, upper):
    """Geometry, models and data never reach the capture pipeline built on them."""
    graph = import_graph()
    for name in (m for m in graph if m == lower or m.startswith(lower + ".")):
        bad = sorted(m for m in reachable(graph, name) if m == upper or m.startswith(upper + "."))
        assert not bad, f"{name} reaches {bad}"
