"""The package layout: the library in subpackages without import cycles (lazy imports inside
functions included), the command line apart from it, and ``python -m primus_core``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import primus_core

CORE = Path(primus_core.__file__).parent
SUBPACKAGES = ["registry", "data", "training", "evaluation", "zoo", "cli"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every primus_core module that ``path`` imports, at module level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py"))
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) for p in files}


def unit(module: str) -> str:
    """The part of the library a module belongs to: a subpackage, or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def without_root(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The package root is the public facade over everything; edges to it (``from primus_core
    import create``) are uses of that facade, not part of the layering."""
    return {
        k: {v for v in vs if v != "primus_core"} for k, vs in edges.items() if k != "primus_core"
    }


def test_no_import_cycles_between_modules():
    assert find_cycle(without_root(graph())) is None


def test_no_import_cycles_between_subpackages():
    units: dict[str, set[str]] = {}
    for module, targets in without_root(graph()).items():
        units.setdefault(unit(module), set()).update(
            unit(t) for t in targets if unit(t) != unit(module)
        )
    assert find_cycle(units) is None


def test_only_the_entry_point_imports_the_command_line():
    importers = {
        module
        for module, targets in graph().items()
        if unit(module) != "primus_core.cli" and any(unit(t) == "primus_core.cli" for t in targets)
    }
    assert importers == {"primus_core.__main__"}


def test_the_library_root_imports_no_subpackage_at_import_time():
    tree = ast.parse((CORE / "__init__.py").read_text(encoding="utf-8"))
    top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert all((n.module or "").split(".")[0] not in SUBPACKAGES for n in top_level)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_subpackage_imports_on_its_own(package):
    code = f"import primus_core.{package}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_runs_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "primus_core", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("primus, version ")


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
