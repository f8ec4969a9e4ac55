"""siqkit's packages import one another without a circle, and recipes load without model code.

The graph: each subpackage of siqkit (``siqkit/train/``) and each top-level module
(``siqkit/store.py``) is one node; an edge A -> B is any import statement in A's files that
names B, including imports inside functions (they run when the function does). Imports under
``if TYPE_CHECKING:`` do not count: they never run, they only inform type checkers. Every edge
that lies on a cycle (a strongly connected component of more than one node) is a failure,
reported as one line naming the files and lines of its imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "siqkit"


def _node(parts: list[str]) -> str | None:
    """The graph node of a dotted siqkit module name split into parts (``siqkit`` first)."""
    if not parts or parts[0] != "siqkit":
        return None
    if len(parts) == 1:
        return "siqkit"
    top = parts[1]
    if (PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file():
        return top
    return "siqkit"  # a name defined in siqkit/__init__.py


def _module_parts(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, path: Path):
    """Yield (line, target module parts) for every import that runs, skipping TYPE_CHECKING blocks."""
    package = _module_parts(path) if path.name == "__init__.py" else _module_parts(path)[:-1]
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # ``from siqkit import train`` names a subpackage
                yield node.lineno, module + [alias.name]
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[tuple[str, str], list[str]]:
    """Edges between nodes -> the ``file:line`` of each import statement that makes them."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _node(_module_parts(path))
        for line, target in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), path):
            dest = _node(target)
            place = f"{path.relative_to(ROOT)}:{line}"
            if dest is not None and dest != source and place not in edges.setdefault((source, dest), []):
                edges[source, dest].append(place)
    return {edge: sorted(places, key=_by_file_and_line) for edge, places in edges.items()}


def _by_file_and_line(place: str) -> tuple[str, int]:
    file, line = place.rsplit(":", 1)
    return file, int(line)


def strongly_connected(edges) -> list[set[str]]:
    """Tarjan's strongly connected components of the graph."""
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return components


def cycle_edges(edges) -> list[str]:
    """One line per edge inside a strongly connected component of size > 1, with its imports' places."""
    lines = []
    for component in strongly_connected(edges):
        if len(component) < 2:
            continue
        for (a, b), places in sorted(edges.items()):
            if a in component and b in component:
                by_file: dict[str, list[str]] = {}
                for place in places:
                    file, line = place.rsplit(":", 1)
                    by_file.setdefault(file, []).append(line)
                lines.append(f"{a} -> {b}: " + "; ".join(f"{f}:{','.join(n)}" for f, n in by_file.items()))
    return lines


def test_graph_sees_imports_inside_functions_and_skips_type_checking():
    tree = ast.parse(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from siqkit.recipe import Recipe\n"
        "def f():\n"
        "    from siqkit.store import Store\n"
        "from . import routing\n"
        "from siqkit import STAGES, train\n"
    )
    found = {(line, _node(target)) for line, target in _imports(tree, PACKAGE / "generate" / "stage.py")}
    assert {(6, "store"), (7, "generate"), (8, "siqkit"), (8, "train")} <= found
    assert not any(node == "recipe" for _, node in found)
    components = strongly_connected({("a", "b"): [], ("b", "a"): [], ("b", "c"): []})
    assert sorted(map(sorted, components)) == [["a", "b"], ["c"]]


def test_no_import_cycle_between_packages():
    lines = cycle_edges(import_graph())
    if lines:
        pytest.fail("these imports make a cycle between siqkit's packages:\n" + "\n".join(lines), pytrace=False)


MODELS_RECIPE = """
run: {name: models}
seeds: {sources: [{name: d, type: digits}]}
teachers:
  - {name: hf, backend: transformers, arch: qwen2_vl, path: "${SIQ_UNSET_MODEL}", route: {question_regex: sum}}
  - {name: gguf, backend: llama_cpp, arch: qwen2_5_vl, path: "${SIQ_UNSET_MODEL}", route: {question_regex: product}}
  - {name: server, backend: openai, arch: llama, model: big, endpoints: [{url: "http://127.0.0.1:9"}]}
student: {arch: qwen3, path: "${SIQ_UNSET_MODEL}"}
"""


def test_loading_a_recipe_with_tiny_imports_no_model_code(tmp_path):
    """siqkit.recipe, with --tiny applied to the quickstart and to a recipe of every model backend,
    imports neither torch, transformers, siqkit.models nor siqkit.export (a fresh interpreter's sys.modules)."""
    (tmp_path / "models.yaml").write_text(MODELS_RECIPE)
    code = (
        "import sys\n"
        "from siqkit.recipe import load_recipe\n"
        f"load_recipe({str(ROOT / 'recipes' / 'quickstart.yaml')!r}, tiny=True)\n"
        f"load_recipe({str(tmp_path / 'models.yaml')!r}, tiny=True)\n"
        "heavy = sorted({m.split('.')[0] if m.split('.')[0] in ('torch', 'transformers') else m for m in sys.modules\n"
        "                if m.split('.')[0] in ('torch', 'transformers') or m.startswith(('siqkit.export', 'siqkit.models'))})\n"
        "print(' '.join(heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SIQ_UNSET_MODEL"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"loading a recipe with --tiny imported: {out.stdout.strip()}"
