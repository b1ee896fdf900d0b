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

Compaction (issue 20, `actors/sink.py`) [ours]: the sink merges small parts into one that replaces
the first of them and names the rest in its metadata (`evfarm.covers`) before they are unlinked.
`read_parts` therefore opens every listed part first (an open file stays readable after it is
replaced or unlinked), re-lists when one vanished between listing and opening, and drops parts
that an opened merged part covers: a read during a compaction sees every row exactly once.
`part_paths` leaves covered parts out as well (DuckDB reads the files it is given). The live
segment is read *before* the parts, and dropped when a part already holds its segment (a roll
between the two reads would otherwise count its rows twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from actors.segments import (
    BASE_FIELDS,
    LIVE_RE,
    PART_RE,
    conform_table,
    covered_names,
    read_stream_tolerant,
    segment_sources,
    union_schema,
)
from actors.segments import BASE_NAMES as BASE_NAMES  # re-exported: cluster/study.py reads it here
from methods.errors import ResultsError


class BadPart(NamedTuple):
    path: Path
    reason: str


def _listed_parts(run_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if PART_RE.match(p.name))


def part_paths(run_dir: str | Path) -> list[Path]:
    """The run's parts, without those a merged part covers (a compaction in progress or cut off)."""
    parts = _listed_parts(run_dir)
    covered: set[str] = set()
    for p in parts:
        try:
            covered |= set(covered_names(pq.read_schema(p))) - {p.name}
        except (OSError, pa.ArrowException):
            continue  # unreadable or gone: the readers report it
    return [p for p in parts if p.name not in covered]


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


def _open_parts(
    run_dir: str | Path, tries: int = 50
) -> tuple[list[tuple[Path, pq.ParquetFile]], list[BadPart]]:
    """A consistent set of the run's parts, opened: each row in exactly one of them."""
    for _ in range(tries):
        opened: list[tuple[Path, pq.ParquetFile]] = []
        bad: list[BadPart] = []
        vanished = False
        for part in _listed_parts(run_dir):
            try:
                opened.append((part, pq.ParquetFile(open(part, "rb"))))  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                vanished = True  # replaced/unlinked by a compaction since listing: list again
                break
            except (OSError, pa.ArrowException) as exc:
                bad.append(BadPart(part, _reason(exc)))
        if vanished:
            for _, f in opened:
                f.close()
            continue
        covered: set[str] = set()
        for part, f in opened:
            covered |= set(covered_names(f.schema_arrow)) - {part.name}
        keep = [(p, f) for p, f in opened if p.name not in covered]
        for p, f in opened:
            if p.name in covered:
                f.close()
        return keep, [b for b in bad if b.path.name not in covered]
    raise ResultsError(
        f"The parts of {run_dir} kept changing while they were read ({tries} tries); is a sink "
        f"compacting in a loop? Read again when the run is idle."
    )


def read_parts(
    run_dir: str | Path,
    skip_bad_parts: bool = False,
    skipped: list[BadPart] | None = None,
    sources: set[tuple[str, str]] | None = None,
) -> list[pa.Table]:
    """Every readable part as a table; an unreadable one raises, or is skipped and listed.

    `sources`, when a set, receives the (writer, segment) pairs the parts hold.
    """
    opened, bad = _open_parts(run_dir)
    tables = []
    try:
        for part, f in opened:
            try:
                tables.append(f.read())
                if sources is not None:
                    sources |= segment_sources(f.schema_arrow)
            except (OSError, pa.ArrowException) as exc:
                bad.append(BadPart(part, _reason(exc)))
    finally:
        for _, f in opened:
            f.close()
    if bad and not skip_bad_parts:
        raise bad_parts_error(bad)
    if skipped is not None:
        skipped.extend(bad)
    return tables


def read_live(run_dir: str | Path, published: set[tuple[str, str]] | None = None) -> pa.Table | None:
    """Rows of the open live segment(s), read tolerantly; None when there is none.

    `published`: (writer, segment) pairs already read from parts; such a segment is left out.
    """
    tables = []
    for live, _ in _read_live_segments(run_dir):
        tables.append(live)
    if published:
        tables = [t for t in tables if not (segment_sources(t.schema) & published)]
    return _concat(tables) if tables else None


def _read_live_segments(run_dir: str | Path) -> list[tuple[pa.Table, Path]]:
    out = []
    for live in sorted(p for p in Path(run_dir).iterdir() if LIVE_RE.match(p.name)):
        schema, batches = read_stream_tolerant(live)
        if batches:
            out.append((pa.Table.from_batches(batches, schema=schema), live))
    return out


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
    live = [t for t, _ in _read_live_segments(run_dir)] if include_live else []  # before the parts
    sources: set[tuple[str, str]] = set()
    tables = read_parts(run_dir, skip_bad_parts, skipped, sources)
    tables += [t for t in live if not (segment_sources(t.schema) & sources)]
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
