"""sgtool's import graph, read from the source with `ast`: no file-level cycle, and the layers hold.

An edge a -> b means file a imports module b anywhere (top level, inside a function, under
TYPE_CHECKING). `from pkg import name` is an edge to pkg.name when that is a module, else to pkg.
The registry's `importlib.import_module` of head plug-ins by name is not an import of a file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sgtool

# Edges the tests below let through despite the rules (none today; add one only with its reason).
ALLOWED_EDGES: set[tuple[str, str]] = set()

MODELS = ("sgtool.heads", "sgtool.detect", "sgtool.autoencoder", "sgtool.engine", "sgtool.losses", "sgtool.features")


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under root (the folder of `package`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute dotted names a file imports: `import m` gives m, `from m import n` gives m.n."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name resolves to the longest module prefix)."""
    modules = module_files(root, package)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        names = _imported_names(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py")
        graph[module] = {target for target in map(resolve, names) if target and target != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(Path(sgtool.__file__).parent, "sgtool")


def _without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in targets if (a, b) not in ALLOWED_EDGES} for a, targets in graph.items()}


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_sgtool_has_no_import_cycle(graph):
    assert len(graph) > 50 and "sgtool.geometry" in graph["sgtool.eval.matching"]
    cycle = find_cycle(_without_allowed(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_the_cli(graph):
    importers = {a for a, targets in _without_allowed(graph).items() if "sgtool.cli" in targets}
    assert not importers - {"sgtool.__main__"}


def test_layers(graph):
    """detect/ and heads/ never import the engine; the metrics (eval/ but its stage run_eval.py) never reach a model."""
    for module, targets in graph.items():
        if _inside(module, ("sgtool.detect", "sgtool.heads")):
            assert not {t for t in targets if _inside(t, ("sgtool.engine",))}, module
    metric_modules = [m for m in graph if _inside(m, ("sgtool.eval",)) and m != "sgtool.eval.run_eval"]
    assert "sgtool.eval.metrics" in metric_modules
    for module in metric_modules:
        assert not {t for t in reachable(graph, module) if _inside(t, MODELS)}, module


def test_graph_sees_every_kind_of_import_and_the_finder_sees_cycles(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "from .c import thing\n",
        "sub/b.py": "def late():\n    import pkg.d\n",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\nthing = 1\n",
        "d.py": "import os\nfrom pkg import sub\n",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    graph = import_graph(root, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.c"},
                     "pkg.sub.b": {"pkg.d"}, "pkg.sub.c": {"pkg.a"}, "pkg.d": {"pkg.sub"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.d", "pkg.sub", "pkg.sub.c", "pkg.a"]
    del graph["pkg.sub.c"]
    assert find_cycle(graph) is None


MAX_FUNCTION_LINES = 60  # the house rule, for every function in sgtool/ but cli.py's


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than `limit` lines, from `def` to its last line."""
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def test_the_length_check_counts_from_def_to_the_last_line():
    nested = "class A:\n    def short(self):\n        return 1\n\n    def long(self):\n" + "        x = 1\n" * 60
    assert long_functions(nested) == [("long", 61)]
    assert long_functions("def f():\n" + "    x = 1\n" * 59) == []


def test_no_function_outside_the_cli_is_over_sixty_lines():
    root = Path(sgtool.__file__).parent
    found = {f"{path.relative_to(root)}:{name}": lines for path in sorted(root.rglob("*.py")) if path.name != "cli.py"
             for name, lines in long_functions(path.read_text(encoding="utf-8"))}
    assert found == {}
