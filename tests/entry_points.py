"""The entry points a person runs: the files in sweeps/ that define a top-level `main`.

One listing for every test that runs each sweep and bench (tests/sweeps/test_benches.py,
tests/test_bad_input.py); import it as `from entry_points import ENTRY_POINTS, BENCHES` (pytest
puts tests/ on sys.path, as for tests/tiny_diffusion.py). Read from the source with `ast`, so
listing them imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def entry_points() -> list[str]:
    """Module names of the files in sweeps/ that define a top-level `main`, sorted."""
    names = []
    for path in sorted(SWEEPS.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            names.append(path.stem)
    return names


ENTRY_POINTS = entry_points()
BENCHES = [n for n in ENTRY_POINTS if n.startswith("bench_")]
