"""The package's shape: no import cycles, no private names imported across modules, and the
layers import only downwards. Run alone: ``python -m pytest tests/test_layout.py``."""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent / "genostage"


def _modules() -> Dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    for path in ROOT.rglob("*.pyi"):  # compiled kernels (their stubs stand for them)
        rel = path.relative_to(ROOT.parent).with_suffix("")
        out.setdefault(".".join(rel.parts), path)
    return out


MODULES = _modules()


def _resolve(module: str, is_pkg: bool, level: int, name: str) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _runtime_nodes(tree: ast.AST) -> List[ast.AST]:
    """Every node that runs, at any depth (what ``if TYPE_CHECKING:`` guards does not)."""
    out: List[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def _imports(module: str) -> List[Tuple[str, List[str], int]]:
    """(imported module, names taken from it, line) for every import that runs, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node.level, node.module or "") if node.level else (node.module or "")
            if not target.startswith("genostage"):
                continue
            names = [a.name for a in node.names]
            for n in names:  # ``from pkg import module`` imports the module
                if f"{target}.{n}" in MODULES:
                    found.append((f"{target}.{n}", [], node.lineno))
            found.append((target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("genostage"):
                    found.append((a.name, [], node.lineno))
    return found


def _graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for module in MODULES:
        if MODULES[module].suffix == ".pyi":
            continue
        deps = {t for t, _, _ in _imports(module) if t in MODULES and t != module}
        # a package's __init__ is imported on the way to its submodules: not an edge of its own
        graph[module] = {d for d in deps if not module.startswith(d + ".")}
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_private_names_across_modules() -> None:
    """``from x import _name`` only within one module's own package for compiled kernels
    (``from . import _checksum``), never a private function or class of another module."""
    bad = []
    for module in MODULES:
        if MODULES[module].suffix == ".pyi":
            continue
        for target, names, line in _imports(module):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{module}:{line} imports {', '.join(private)} from {target}")
            leaf = target.rsplit(".", 1)[-1]
            if leaf.startswith("_") and not leaf.startswith("__") and target.rsplit(".", 1)[0] != module.rsplit(".", 1)[0]:
                bad.append(f"{module}:{line} imports the private module {target} of another package")
    assert bad == []


# Each layer may import only the layers after it in this order (and the shared modules).
LAYERS = ["genostage.cli", "genostage.scatter", "genostage.deploy", "genostage.job", "genostage.split",
          "genostage.transfer", "genostage.store", "genostage.codec"]
SHARED = {"genostage", "genostage.errors", "genostage.exitcodes", "genostage.cancel", "genostage.fsutil",
          "genostage.config", "genostage.units", "genostage.location", "genostage.progress",
          "genostage.background", "genostage.retry", "genostage.cpu"}


def _layer(module: str) -> int:
    for i, name in enumerate(LAYERS):
        if module == name or module.startswith(name + "."):
            return i
    return -1


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downwards(layer: str) -> None:
    bad = []
    mine = LAYERS.index(layer)
    for module in MODULES:
        if _layer(module) != mine or MODULES[module].suffix == ".pyi":
            continue
        for target, _, line in _imports(module):
            there = _layer(target)
            if target in SHARED or there == -1 and not target.startswith("genostage.testing"):
                continue
            if there < mine and there != -1 or target.startswith("genostage.testing"):
                bad.append(f"{module}:{line} imports {target}")
    assert bad == []


def test_testing_helpers_stay_outside_the_runtime_path() -> None:
    """Nothing the library runs imports genostage.testing (moto, servers, the demo)."""
    bad = [f"{m}:{line}" for m in MODULES if not m.startswith("genostage.testing") and MODULES[m].suffix == ".py"
           for target, _, line in _imports(m) if target.startswith("genostage.testing")]
    assert bad == []


def test_every_module_is_checked() -> None:
    assert len(MODULES) > 40 and all(os.path.exists(p) for p in MODULES.values())
