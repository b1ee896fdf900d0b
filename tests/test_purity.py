"""methods/ and sims/ stay pure: no ray, optuna, pyarrow, cluster or actors imports (DESIGN)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"ray", "optuna", "pyarrow", "cluster", "actors", "duckdb", "polars"}
PURE_FILES = sorted(p for d in ("methods", "sims") for p in (ROOT / d).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_packages_import_nothing_of_the_farm(path):
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}; move that code to cluster/ or actors/"


def test_the_check_would_catch_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import numpy\nfrom ray.util import ActorPool\n")
    assert imported_roots(f) & FORBIDDEN == {"ray"}
