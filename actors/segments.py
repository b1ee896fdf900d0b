"""The Arrow segment writing protocol: the canonical row schema, `SegmentWriter`, recovery.

Protocol (DESIGN decision 4, infra.md B.5): one writer per run appends record batches to an Arrow
IPC *stream* segment `_live-<seq>.arrows`, flushed after every batch, so every flushed batch
survives a killed writer. A segment is rolled — closed, rewritten as `_tmp-<seq>.parquet`, fsynced
and published with `os.replace` as the immutable `part-<seq>.parquet` — every `roll_rows` rows,
every `roll_seconds` seconds, when the columns change, and at close. On start the writer recovers
leftover live segments up to their first torn message. The `_` prefix keeps in-flight files out of
dataset readers.

The writer is held by the sink actor (`actors/sink.py`); the readers live one layer up, in
`cluster/results.py`. Our own design, following the Arrow IPC stream format's documented framing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from methods.errors import ConfigError, ResultsError

SCHEMA_VERSION = 1

#: Columns every row carries, with their canonical types. Sweeps add parameter, objective and
#: metric columns by name (they may not reuse these names).
BASE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("run_id", pa.string()),
    pa.field("sweep", pa.string()),
    pa.field("row_kind", pa.string()),  # "trial" (one final row per attempt), "chunk", or a sweep's own
    pa.field("trial_number", pa.int64()),
    pa.field("attempt", pa.int32()),
    pa.field("state", pa.string()),  # COMPLETE / FAIL / PRUNED for trial rows; RUNNING for chunk rows
    pa.field("actor_id", pa.string()),
    pa.field("node_id", pa.string()),
    pa.field("step", pa.int64()),
    pa.field("seed", pa.int64()),
    pa.field("ts_start", pa.float64()),
    pa.field("ts_end", pa.float64()),
    pa.field("params_json", pa.string()),
    pa.field("error", pa.string()),
)
BASE_NAMES = tuple(f.name for f in BASE_FIELDS)
_BASE_TYPES = {f.name: f.type for f in BASE_FIELDS}

LIVE_RE = re.compile(r"^_live-(\d{6})\.arrows$")
PART_RE = re.compile(r"^part-(\d{6})\.parquet$")


def rows_to_batch(rows: list[Mapping[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts) → one record batch: base columns first with canonical types, extras inferred."""
    if not rows:
        raise ConfigError("rows_to_batch needs at least one row; got an empty list.")
    names: list[str] = list(BASE_NAMES)
    for row in rows:
        for key in row:
            if key not in names:
                names.append(key)
    arrays, fields = [], []
    for name in names:
        values = [_plain(row.get(name)) for row in rows]
        if name in _BASE_TYPES:
            arr = pa.array(values, type=_BASE_TYPES[name])
        else:
            try:
                arr = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arr = pa.array([None if v is None else json.dumps(v, default=str) for v in values])
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.float64())  # an all-missing metric is numeric more often than not
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _plain(v: Any) -> Any:
    """Numpy/torch scalars → Python scalars so Arrow infers stable types."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch | None:
    """Cast `batch` to `schema` (missing columns → nulls) or None when it has new columns/types."""
    if not set(batch.schema.names) <= set(schema.names):
        return None
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            col = batch.column(field.name)
            if col.type != field.type:
                if pa.types.is_null(col.type) or (
                    pa.types.is_integer(col.type) and pa.types.is_floating(field.type)
                ):
                    col = col.cast(field.type)
                else:
                    return None
            arrays.append(col)
        else:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_stream_tolerant(path: Path) -> tuple[pa.Schema | None, list[pa.RecordBatch]]:
    """All complete batches of an IPC stream, stopping silently at a torn or missing tail."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):
        return None, batches  # not even a complete schema message: nothing was flushed
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            break  # torn final message from a killed writer
    return reader.schema, batches


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_part(run_dir: Path, seq: int, table: pa.Table) -> Path:
    """Write `table` as `part-<seq>.parquet` atomically (temp file, fsync, `os.replace`)."""
    tmp = run_dir / f"_tmp-{seq:06d}.parquet"
    final = run_dir / f"part-{seq:06d}.parquet"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    return final


class SegmentWriter:
    """The single writer of a run's result files (held by the sink actor).

    Args:
        run_dir: the run directory; must exist.
        metadata: strings stored in every segment's schema metadata (config hash, git SHA, ...).
        roll_rows: publish a part after this many rows.
        roll_seconds: publish a part when the open segment is older than this (so readers of
            Parquet see rows while a long sweep runs).
    """

    def __init__(
        self,
        run_dir: str | Path,
        metadata: Mapping[str, str] | None = None,
        roll_rows: int = 2000,
        roll_seconds: float = 10.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise ResultsError(f"Run directory {self.run_dir} does not exist; create the run first.")
        self.metadata = {"evfarm.schema_version": str(SCHEMA_VERSION), **dict(metadata or {})}
        self.roll_rows = roll_rows
        self.roll_seconds = roll_seconds
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._file: pa.OSFile | None = None
        self._schema: pa.Schema | None = None
        self._seq = 0
        self._rows_in_segment = 0
        self._opened_at = 0.0
        self.rows_written = 0
        self.recovered_rows = self.recover()

    # -- recovery -----------------------------------------------------------------------------
    def _existing_seqs(self) -> list[int]:
        seqs = []
        for p in self.run_dir.iterdir():
            m = LIVE_RE.match(p.name) or PART_RE.match(p.name)
            if m:
                seqs.append(int(m.group(1)))
        return seqs

    def recover(self) -> int:
        """Publish every leftover live segment (up to its first torn message); return rows saved."""
        saved = 0
        for tmp in self.run_dir.glob("_tmp-*.parquet"):
            tmp.unlink()  # an unpublished rewrite; its live segment is still there
        for live in sorted(p for p in self.run_dir.iterdir() if LIVE_RE.match(p.name)):
            seq = int(LIVE_RE.match(live.name).group(1))  # type: ignore[union-attr]
            schema, batches = read_stream_tolerant(live)
            if batches:
                table = pa.Table.from_batches(batches, schema=schema)
                publish_part(self.run_dir, seq, table)
                saved += table.num_rows
            live.unlink()
        seqs = self._existing_seqs()
        self._seq = max(seqs) + 1 if seqs else 0
        return saved

    # -- writing ------------------------------------------------------------------------------
    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema.with_metadata(self.metadata)
        path = self.run_dir / f"_live-{self._seq:06d}.arrows"
        self._file = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._file, self._schema)
        self._rows_in_segment = 0
        self._opened_at = time.monotonic()

    def append(self, rows: list[Mapping[str, Any]]) -> int:
        """Write rows as one flushed batch; return the number of rows written."""
        if not rows:
            return 0
        batch = rows_to_batch(rows)
        if self._writer is not None:
            conformed = _conform(batch, self._schema)  # type: ignore[arg-type]
            if conformed is None:
                self.roll()
            else:
                batch = conformed
        if self._writer is None:
            self._open(batch.schema)
            batch = _conform(batch, self._schema) or batch  # type: ignore[arg-type]
        self._writer.write_batch(batch)  # type: ignore[union-attr]
        self._file.flush()  # type: ignore[union-attr]
        self._rows_in_segment += batch.num_rows
        self.rows_written += batch.num_rows
        if self._rows_in_segment >= self.roll_rows or time.monotonic() - self._opened_at >= self.roll_seconds:
            self.roll()
        return batch.num_rows

    def roll(self) -> Path | None:
        """Close the live segment and publish it as a Parquet part."""
        if self._writer is None:
            return None
        self._writer.close()
        self._file.close()  # type: ignore[union-attr]
        live = self.run_dir / f"_live-{self._seq:06d}.arrows"
        schema, batches = read_stream_tolerant(live)
        part = None
        if batches:
            part = publish_part(self.run_dir, self._seq, pa.Table.from_batches(batches, schema=schema))
        live.unlink()
        self._writer = self._file = self._schema = None
        self._seq += 1
        return part

    def maybe_roll(self) -> Path | None:
        """Roll when the open segment is older than `roll_seconds` (called by a timer)."""
        if self._writer is not None and time.monotonic() - self._opened_at >= self.roll_seconds:
            return self.roll()
        return None

    def close(self) -> None:
        self.roll()
