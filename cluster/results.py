"""Result rows as Arrow: the readers of a run's parts and live segment.

The writing side — the canonical schema, the segment protocol and recovery — lives in
`actors/segments.py` (held by the sink actor, one layer down); this module reads what it wrote.

Readers: `read_table` (pyarrow, parts + optionally the live segment), `query` (DuckDB over the
parts with `union_by_name=true`, which must be passed: without it DuckDB silently keeps only the
first file's columns), and `read_polars` (the parts unified by pyarrow, so columns that only later
parts have come back as nulls in earlier rows; Polars' own `scan_parquet` over mixed parts raises
`SchemaError` unless given a schema).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from actors.segments import BASE_FIELDS, LIVE_RE, PART_RE, read_stream_tolerant
from actors.segments import BASE_NAMES as BASE_NAMES  # re-exported: cluster/study.py reads it here


# -- readers ----------------------------------------------------------------------------------
def part_paths(run_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if PART_RE.match(p.name))


def read_live(run_dir: str | Path) -> pa.Table | None:
    """Rows of the open live segment(s), read tolerantly; None when there is none."""
    tables = []
    for live in sorted(p for p in Path(run_dir).iterdir() if LIVE_RE.match(p.name)):
        schema, batches = read_stream_tolerant(live)
        if batches:
            tables.append(pa.Table.from_batches(batches, schema=schema))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def read_table(run_dir: str | Path, include_live: bool = True) -> pa.Table:
    """Every row of a run (published parts, plus the live segment when asked) as one table."""
    tables = [pq.read_table(p) for p in part_paths(run_dir)]
    if include_live:
        live = read_live(run_dir)
        if live is not None:
            tables.append(live)
    if not tables:
        return pa.Table.from_batches([], schema=pa.schema(BASE_FIELDS))
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")


def query(run_dir: str | Path, sql: str, include_live: bool = False) -> pa.Table:
    """Run DuckDB SQL over a run's rows, exposed as the view `results`.

    >>> # query(run_dir, "SELECT state, count(*) FROM results GROUP BY state")
    """
    import duckdb

    con = duckdb.connect()
    try:
        parts = part_paths(run_dir)
        if include_live or not parts:
            results = read_table(run_dir, include_live=include_live)  # noqa: F841  (DuckDB scans it by name)
            con.register("results", results)
        else:
            glob = str(Path(run_dir) / "part-*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet('{glob}', union_by_name=true)")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def read_polars(run_dir: str | Path):  # -> polars.DataFrame
    """The published parts as a Polars frame; columns missing from older parts are nulls."""
    import polars as pl

    return pl.from_arrow(read_table(run_dir, include_live=False))


def summarise_trials(table: pa.Table) -> list[dict[str, Any]]:
    """The final row of every trial attempt (row_kind == "trial"), as dicts sorted by trial."""
    rows = [r for r in table.to_pylist() if r.get("row_kind") == "trial"]
    return sorted(rows, key=lambda r: (r["trial_number"], r["attempt"] or 0))


def rows_for_display(rows: Iterable[Mapping[str, Any]], drop: Iterable[str] = ()) -> list[dict[str, Any]]:
    drop = set(drop) | {"run_id", "sweep", "row_kind", "params_json", "node_id", "ts_start"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]
