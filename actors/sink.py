"""The result sink: one actor per run, the only writer of its result files (DESIGN decision 4).

A thin Ray actor around `actors.segments.SegmentWriter`. It is pinned to the head node (profile
`sink_head`) so parts land on the driver's disk, and restarts forever: a restarted sink's
`__init__` recovers the flushed batches of the segment its previous incarnation left behind. It
adopts only segments whose writer is provably gone and never deletes one that another writer may
still be writing (`left_alone` in `stats()`; see `actors/segments.py`).

A bound on parts per run (issue 20) [ours]: a long sweep rolls a part every `roll_seconds`, so a
slow trickle of rows leaves one small part per roll (10,000 trials at one row every few seconds:
thousands of files). After each roll the sink compacts: when more than `compact_after` parts hold
fewer than `compact_rows` rows each, the trailing run of such small parts is merged into one part.
The merge is atomic for readers: the merged table (in the run's union schema) is written to a
`_tmp-` file, fsynced and `os.replace`d over the *first* small part; its metadata lists the parts
it covers (`evfarm.covers`, JSON) and their segments (`evfarm.sources`); only then are the others
unlinked. A reader that sees both the merged part and a covered one drops the covered one, and a
reader that finds a listed part gone re-lists (`cluster.results.read_parts`), so every row is read
exactly once during a compaction. A sink killed between the replace and the unlinks leaves covered
parts behind; the next sink deletes them at start (`drop_covered`). Parts per run stay at most
ceil(rows / compact_rows) + compact_after.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from actors.segments import (
    COVERS_KEY,
    PART_RE,
    SOURCES_KEY,
    SegmentWriter,
    _fsync_path,
    _write_parquet,
    conform_table,
    covered_names,
    segment_sources,
    union_schema,
)


def drop_covered(writer: SegmentWriter) -> list[str]:
    """Delete parts covered by a merged part (a sink killed mid-compaction left them); return names."""
    run_dir = writer.run_dir
    dropped = []
    for part, schema in list(writer._parts.items()):
        for name in covered_names(schema):
            other = run_dir / name
            if other != part and other in writer._parts:
                other.unlink(missing_ok=True)
                writer._parts.pop(other, None)
                dropped.append(name)
    if dropped:
        _fsync_path(run_dir)
    return dropped


def compact(writer: SegmentWriter, compact_rows: int = 50_000, compact_after: int = 8) -> Path | None:
    """Merge the trailing run of small parts into one when more than `compact_after` parts are small.

    Returns the merged part (named as the first part it covers), or None when nothing was merged.
    """
    parts = sorted(writer._parts, key=lambda p: p.name)
    rows = {}
    for p in parts:
        try:
            rows[p] = pq.ParquetFile(p).metadata.num_rows
        except (OSError, pa.ArrowException):
            rows[p] = None  # unreadable: never touched
    small = [p for p in parts if rows[p] is not None and rows[p] < compact_rows]
    if len(small) <= compact_after:
        return None
    run: list[Path] = []
    for p in reversed(parts):  # the trailing run of small parts (big or unreadable parts end it)
        if rows[p] is None or rows[p] >= compact_rows:
            break
        run.append(p)
    run.reverse()
    if len(run) < 2:
        return None
    tables = [pq.read_table(p) for p in run]
    target = union_schema([t.schema for t in tables], start=writer._union)
    names, sources = [], set()
    for p, t in zip(run, tables, strict=True):
        names += covered_names(t.schema) or [p.name]
        sources |= segment_sources(t.schema)
    first_meta = dict(tables[0].schema.metadata or {})
    first_meta.pop(b"evfarm.writer", None)
    first_meta.pop(b"evfarm.segment", None)
    meta = {**first_meta, COVERS_KEY: json.dumps(sorted(set(names))).encode(),
            SOURCES_KEY: json.dumps(sorted(sources)).encode()}
    merged = pa.concat_tables([conform_table(t, target).replace_schema_metadata(None) for t in tables])
    merged = merged.replace_schema_metadata(meta)
    first = run[0]
    seq = int(PART_RE.match(first.name).group(1))  # type: ignore[union-attr]
    tmp = writer.run_dir / f"_tmp-{seq:06d}.{writer.token}.parquet"
    _write_parquet(tmp, merged)
    os.replace(tmp, first)  # readers now see the merged part (covering the rest) or the old first
    _fsync_path(writer.run_dir)
    writer._parts[first] = merged.schema
    for p in run[1:]:
        p.unlink(missing_ok=True)
        writer._parts.pop(p, None)
    _fsync_path(writer.run_dir)
    return first


def _rss_mb() -> float:
    """Resident memory of this process (MiB; peak when /proc is unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@ray.remote
class ResultSink:
    def __init__(
        self,
        run_dir: str,
        metadata: Mapping[str, str] | None = None,
        roll_rows: int = 2000,
        roll_seconds: float = 10.0,
        compact_rows: int = 50_000,
        compact_after: int = 8,
    ) -> None:
        # pa.array on Python lists imports pandas on first use (~1.5 s here): pay it at start-up,
        # not in the first append a driver waits for (issue 20's sink rate)
        pa.array([0.0])
        self.writer = SegmentWriter(run_dir, metadata, roll_rows=roll_rows, roll_seconds=roll_seconds)
        self.compact_rows = compact_rows
        self.compact_after = compact_after
        self.compactions = 0
        drop_covered(self.writer)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self.compact_after > 0 and compact(self.writer, self.compact_rows, self.compact_after):
            self.compactions += 1

    def _after(self, seq_before: int) -> None:
        if self.writer._seq != seq_before:  # a roll published a part
            self._maybe_compact()

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Write and flush one batch; returns once the rows are on disk (page cache)."""
        seq = self.writer._seq
        n = self.writer.append(rows)
        self._after(seq)
        return n

    def maybe_roll(self) -> str | None:
        part = self.writer.maybe_roll()
        if part:
            self._maybe_compact()
        return str(part) if part else None

    def roll(self) -> str | None:
        part = self.writer.roll()
        self._maybe_compact()
        return str(part) if part else None

    def stats(self) -> dict[str, Any]:
        return {
            "rows_written": self.writer.rows_written,
            "recovered_rows": self.writer.recovered_rows,
            "left_alone": len(self.writer.left_alone),
            "parts": len(self.writer._parts),
            "compactions": self.compactions,
            "rss_mb": _rss_mb(),
        }

    def close(self) -> dict[str, Any]:
        self.writer.roll()
        self._maybe_compact()
        self.writer.close()
        return self.stats()
