"""Result rows as Arrow: the readers of a run's parts and live segment.

The writing side — the canonical schema, the segment protocol and recovery — lives in
`actors/segments.py` (held by the sink actor, one layer down); this module reads what it wrote.

Every part of a finished run has one schema (the run's union of columns, nulls where a row has
no value), so plain `polars.scan_parquet(".../part-*.parquet")`, `pandas.read_parquet([parts])`
and DuckDB all read it. Readers here: `read_table` (pyarrow, parts + optionally the live
segment), `query` (DuckDB over the parts with `union_by_name=true`, needed across runs or for an
older run whose parts differ: without it DuckDB silently keeps only the first file's columns), and
`read_polars`. They unify the parts' schemas themselves, so runs written before one schema per run
read the same.

An unreadable part (truncated, garbage) is a `ResultsError` naming the file and what to do; with
`skip_bad_parts=True` the readers read the rest and report what they skipped. `check_parts` is
the cheap early check (every part's footer) for a resume to call before it touches anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from actors.segments import BASE_FIELDS, LIVE_RE, PART_RE, conform_table, read_stream_tolerant, union_schema
from actors.segments import BASE_NAMES as BASE_NAMES  # re-exported: cluster/study.py reads it here
from methods.errors import ResultsError


class BadPart(NamedTuple):
    path: Path
    reason: str


# -- readers ----------------------------------------------------------------------------------
def part_paths(run_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if PART_RE.match(p.name))


def bad_parts_error(bad: list[BadPart]) -> ResultsError:
    """The error for unreadable parts: which files, why, and what to do."""
    listed = "; ".join(f"{b.path} ({b.reason})" for b in bad)
    first = bad[0].path
    return ResultsError(
        f"{len(bad)} result part(s) cannot be read: {listed}. A part is unreadable when it was "
        f"truncated or overwritten outside evfarm. Move it aside (e.g. `mv {first} {first}.bad`; "
        f"its rows are lost unless you have a copy), or pass --skip-bad-parts to read the rest "
        f"(`evfarm results RUN_DIR --skip-bad-parts`)."
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).split("\n")[0].strip()
    return f"{type(exc).__name__}: {text}"[:300]


def find_bad_parts(run_dir: str | Path) -> list[BadPart]:
    """Parts whose Parquet footer cannot be read (truncated, garbage, unreadable file)."""
    bad = []
    for part in part_paths(run_dir):
        try:
            pq.read_metadata(part)
        except FileNotFoundError:
            continue  # moved aside since listing
        except (OSError, pa.ArrowException) as exc:
            bad.append(BadPart(part, _reason(exc)))
    return bad


def check_parts(run_dir: str | Path) -> list[Path]:
    """Raise a `ResultsError` naming every part whose footer cannot be read; else return the parts.

    Cheap (footers only): for a resume to call before it writes anything or starts Ray.
    """
    bad = find_bad_parts(run_dir)
    if bad:
        raise bad_parts_error(bad)
    return part_paths(run_dir)


def read_parts(
    run_dir: str | Path, skip_bad_parts: bool = False, skipped: list[BadPart] | None = None
) -> list[pa.Table]:
    """Every readable part as a table; an unreadable one raises, or is skipped and listed."""
    tables, bad = [], []
    for part in part_paths(run_dir):
        try:
            tables.append(pq.read_table(part))
        except FileNotFoundError:
            continue
        except (OSError, pa.ArrowException) as exc:
            bad.append(BadPart(part, _reason(exc)))
    if bad and not skip_bad_parts:
        raise bad_parts_error(bad)
    if skipped is not None:
        skipped.extend(bad)
    return tables


def read_live(run_dir: str | Path) -> pa.Table | None:
    """Rows of the open live segment(s), read tolerantly; None when there is none."""
    tables = []
    for live in sorted(p for p in Path(run_dir).iterdir() if LIVE_RE.match(p.name)):
        schema, batches = read_stream_tolerant(live)
        if batches:
            tables.append(pa.Table.from_batches(batches, schema=schema))
    return _concat(tables) if tables else None


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables of one run as one table in the union of their schemas (no metadata)."""
    target = union_schema(t.schema for t in tables)
    return pa.concat_tables([conform_table(t, target).replace_schema_metadata(None) for t in tables])


def read_table(
    run_dir: str | Path,
    include_live: bool = True,
    skip_bad_parts: bool = False,
    skipped: list[BadPart] | None = None,
) -> pa.Table:
    """Every row of a run (published parts, plus the live segment when asked) as one table.

    An unreadable part raises `ResultsError`; with `skip_bad_parts` it is left out and, when
    `skipped` is a list, appended to it.
    """
    tables = read_parts(run_dir, skip_bad_parts, skipped)
    if include_live:
        live = read_live(run_dir)
        if live is not None:
            tables.append(live)
    if not tables:
        return pa.Table.from_batches([], schema=pa.schema(BASE_FIELDS))
    return _concat(tables)


def query(
    run_dir: str | Path, sql: str, include_live: bool = False, skip_bad_parts: bool = False
) -> pa.Table:
    """Run DuckDB SQL over a run's rows, exposed as the view `results`.

    >>> # query(run_dir, "SELECT state, count(*) FROM results GROUP BY state")
    """
    import duckdb

    bad = find_bad_parts(run_dir)
    if bad and not skip_bad_parts:
        raise bad_parts_error(bad)
    parts = [p for p in part_paths(run_dir) if p not in {b.path for b in bad}]
    con = duckdb.connect()
    try:
        if include_live or not parts:
            results = read_table(run_dir, include_live, skip_bad_parts)  # noqa: F841  (DuckDB scans it by name)
            con.register("results", results)
        else:
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in parts)
            con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet([{files}], union_by_name=true)")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def read_polars(run_dir: str | Path, skip_bad_parts: bool = False):  # -> polars.DataFrame
    """The published parts as a Polars frame."""
    import polars as pl

    return pl.from_arrow(read_table(run_dir, include_live=False, skip_bad_parts=skip_bad_parts))


def summarise_trials(table: pa.Table) -> list[dict[str, Any]]:
    """The final row of every trial attempt (row_kind == "trial"), as dicts sorted by trial."""
    rows = [r for r in table.to_pylist() if r.get("row_kind") == "trial"]
    return sorted(rows, key=lambda r: (r["trial_number"], r["attempt"] or 0))


def rows_for_display(rows: Iterable[Mapping[str, Any]], drop: Iterable[str] = ()) -> list[dict[str, Any]]:
    drop = set(drop) | {"run_id", "sweep", "row_kind", "params_json", "node_id", "ts_start"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]
