"""The layer order, enforced: ``sweeps → cluster → actors → sims → methods``.

Every module of the five packages is parsed with :mod:`ast`; every import in it counts, at module
level and inside functions, absolute and relative. From those imports the test builds the module
import graph and fails on

* a **back-arrow**: a module importing from a higher layer (an import within one layer is fine);
* a **circle**: modules that import each other, directly or round a longer loop (the cycle path
  is printed);
* an **impure import**: ``methods/`` or ``sims/`` importing ray, optuna, pyarrow, duckdb or polars
  (they must stay usable and testable without the farm).

Layers, bottom first (a layer may import only from the layers below it and itself):

====  ========  ===============================================================================
 0    methods   the algorithms, pure. Also the bottom-layer helpers everything else shares:
                ``methods/errors.py`` (the typed exceptions and the "did you mean" helper),
                ``methods/registry.py`` (the registry shape, ``create(name, **config)``) and
                ``methods/config_dict.py`` (``ConfigDict``: ``to_dict``/``from_dict`` with the
                unknown-key error). The roofline's hardware and model *types* (``Device``,
                ``LLMConfig``) live here too, in ``methods/roofline_types.py``: methods take
                those objects, never names.
 1    sims      the worlds methods are evaluated in: data, zoo, voters, rigs, and the *tables*
                of named devices and LLMs (``sims/hardware.py``, ``sims/llm_configs.py``), which
                turn a name into a ``Device``/``LLMConfig``.
 2    actors    thin Ray actors and the tasks they run; ``actors/segments.py`` owns the Arrow
                segment writing protocol (schema, ``SegmentWriter``, recovery of a live segment).
 3    cluster   how the farm runs: connect, resources (named actor profiles, resolved here and
                passed down to actors as plain option dicts), config, study, results readers, cli.
 4    sweeps    entry points a person runs.
====  ========  ===============================================================================

The checker itself is tested on tiny fake trees, so it cannot pass by construction.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"methods": 0, "sims": 1, "actors": 2, "cluster": 3, "sweeps": 4}
PURE = ("methods", "sims")
IMPURE_ROOTS = {"ray", "optuna", "pyarrow", "duckdb", "polars"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported name, dotted (a module, or a module's attribute)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages=tuple(LAYERS)) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under the given top-level packages."""
    found = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def imports_of(name: str, path: Path) -> list[Import]:
    """Every import statement in the file, anywhere in it, as absolute dotted names."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(name, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                drop = node.level - 1 if is_package else node.level
                if drop >= len(base):
                    continue  # climbs out of the top-level package: Python refuses it too
                base = base[: len(base) - drop]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import x`` depends on the submodule pkg.x when there is one, else on pkg
            # itself (x is an attribute of its __init__): import_graph resolves to the deepest
            # existing module, so a package's __init__ is an edge only when its names are used.
            out += [Import(name, module if a.name == "*" else f"{module}.{a.name}", node.lineno)
                    for a in node.names]
    return out


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """Module → the project modules it imports (resolved to the deepest existing module)."""
    modules = find_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lines: dict[tuple[str, str], int] = {}
    for name, path in modules.items():
        for imp in imports_of(name, path):
            target = imp.target
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if not target or target == name:
                continue
            graph[name].add(target)
            lines.setdefault((name, target), imp.line)
    return graph, lines


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def back_arrows(root: Path) -> list[str]:
    graph, lines = import_graph(root)
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            if layer_of(dst) > layer_of(src):
                bad.append(
                    f"{src} (layer {src.split('.')[0]}) imports {dst} (layer {dst.split('.')[0]}) "
                    f"at line {lines[src, dst]}: a lower layer must not import a higher one; "
                    f"pass the object in from the caller or move the code down"
                )
    return bad


def cycles(root: Path) -> list[list[str]]:
    """One cycle path per strongly connected component of more than one module (Tarjan)."""
    graph, _ = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_path(graph, comp) for comp in components]


def _cycle_path(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:  # v closes the loop: walk back from v to start
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")  # unreachable for an SCC


def impure_imports(root: Path) -> list[str]:
    bad = []
    for name, path in find_modules(root, PURE).items():
        for imp in imports_of(name, path):
            top = imp.target.split(".")[0]
            if top in IMPURE_ROOTS:
                bad.append(
                    f"{name} imports {imp.target} at line {imp.line}: methods/ and sims/ stay pure "
                    f"(no {', '.join(sorted(IMPURE_ROOTS))}); move that code to actors/ or cluster/"
                )
    return sorted(set(bad))


# -- the project ---------------------------------------------------------------------------------


def test_no_import_runs_back_up_the_layers():
    bad = back_arrows(ROOT)
    order = "sweeps → cluster → actors → sims → methods"
    assert not bad, f"imports against the layer order {order}:\n  " + "\n  ".join(bad)


def test_no_import_circle():
    found = cycles(ROOT)
    assert not found, "import circles (break each by moving the shared part down):\n  " + "\n  ".join(
        " → ".join(c) for c in found
    )


def test_methods_and_sims_import_nothing_of_the_farm():
    bad = impure_imports(ROOT)
    assert not bad, "\n  ".join(["impure imports:", *bad])


def test_every_layer_has_modules():
    modules = find_modules(ROOT)
    assert {m.split(".")[0] for m in modules} == set(LAYERS)


# -- the checker, on fake trees ------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_catches_a_back_arrow_even_inside_a_function(tmp_path):
    root = _tree(
        tmp_path,
        {
            "actors/sink.py": "def f():\n    from cluster.results import Writer\n",
            "cluster/results.py": "import actors.sink\nfrom methods import x\n",
            "sims/world.py": "from methods.errors import E\n",
            "methods/errors.py": "",
        },
    )
    bad = back_arrows(root)
    assert len(bad) == 1 and bad[0].startswith("actors.sink (layer actors) imports cluster.results")
    assert "line 2" in bad[0]


def test_checker_resolves_relative_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "methods/quant/__init__.py": "from . import observers\nfrom .engine import run\n",
            "methods/quant/observers.py": "from ..errors import E\n",
            "methods/quant/engine.py": "",
            "methods/errors.py": "from ..sims import world\n",  # climbs out of the tree: no edge
            "sims/world.py": "",
        },
    )
    graph, _ = import_graph(root)
    assert graph["methods.quant"] == {"methods.quant.observers", "methods.quant.engine"}
    assert graph["methods.quant.observers"] == {"methods.errors"}
    assert graph["methods.errors"] == set()


def test_a_package_importing_its_submodules_is_no_circle(tmp_path):
    """An import-complete package (its __init__ imports every entry) whose entries import siblings
    through the package name: Python runs that fine, so it is not a circle; using a name defined
    in the __init__ from a submodule the __init__ imports is one."""
    root = _tree(
        tmp_path,
        {
            "methods/ranking/__init__.py": "from methods.ranking import elo\nRANKERS = {}\n",
            "methods/ranking/elo.py": "from methods.ranking import base\n",
            "methods/ranking/base.py": "",
        },
    )
    assert cycles(root) == []
    (root / "methods/ranking/base.py").write_text("from methods.ranking import RANKERS\n")
    (root / "methods/ranking/__init__.py").write_text("from methods.ranking import base\nRANKERS = {}\n")
    assert cycles(root) == [["methods.ranking", "methods.ranking.base", "methods.ranking"]]


def test_checker_catches_a_circle_and_prints_its_path(tmp_path):
    root = _tree(
        tmp_path,
        {
            "methods/a.py": "from methods.b import f\n",
            "methods/b.py": "def g():\n    from . import c\n",
            "methods/c.py": "import methods.a\n",
            "methods/d.py": "import methods.a\n",
        },
    )
    assert back_arrows(root) == []
    assert cycles(root) == [["methods.a", "methods.b", "methods.c", "methods.a"]]


def test_checker_catches_a_two_module_circle(tmp_path):
    root = _tree(tmp_path, {"methods/x.py": "import methods.y\n", "methods/y.py": "from .x import f\n"})
    assert cycles(root) == [["methods.x", "methods.y", "methods.x"]]


def test_checker_catches_an_impure_import(tmp_path):
    root = _tree(tmp_path, {"sims/world.py": "import numpy\ndef f():\n    import ray.util\n"})
    bad = impure_imports(root)
    assert len(bad) == 1 and bad[0].startswith("sims.world imports ray.util at line 3")


@pytest.mark.parametrize("clean", ["methods/a.py", "sims/a.py"])
def test_checker_passes_a_clean_tree(tmp_path, clean):
    root = _tree(tmp_path, {clean: "import numpy\nfrom methods import errors\n", "methods/errors.py": ""})
    assert back_arrows(root) == [] and cycles(root) == [] and impure_imports(root) == []
