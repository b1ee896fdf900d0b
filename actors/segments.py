"""The Arrow segment writing protocol: the canonical row schema, `SegmentWriter`, recovery.

Protocol (DESIGN decision 4, infra.md B.5): one writer per run appends record batches to an Arrow
IPC *stream* segment `_live-<seq>.<writer>.arrows`, flushed after every batch, so every flushed
batch survives a killed writer. A segment is rolled — closed, rewritten as a temporary Parquet
file, fsynced and published without overwriting anything as `part-<seq>.parquet` — every
`roll_rows` rows, every `roll_seconds` seconds and at close. The `_` prefix keeps in-flight files
out of dataset readers.

One schema per run (issue 21, row 12) [ours]: the writer keeps the run's *union* schema — the
base fields first, then every other column in the order it first appeared, each with the common
type of what it held (int and float → float; irreconcilable types → string). Every batch is padded
to the union with nulls, so chunk rows, trial rows and stream rows share one segment and one part
per roll. A column that first appears while a segment is open rewrites that segment in the wider
schema (temp file, fsync, `os.replace`); parts published before the column appeared are widened
once at the next roll or at close (their rows unchanged, the new columns null, same atomic
rewrite). Every part of a finished run therefore has the same schema, and a plain
`polars.scan_parquet("part-*.parquet")` reads it.

Whose segment is it (issue 21, row 1) [ours]: a segment's name carries its writer's token
(`w<pid>-<process start>-<nonce>-<host>`). On start, at every roll and at close the writer adopts
— publishes and then deletes — only segments it can prove are leftovers: its writer was on this
host and that process is gone (a reused PID is told apart by its start time), or the writer was on
another host while the run's `.driver.lock` names a live driver on this one. A segment whose writer
may still be writing is left alone and never deleted; parts are published with `os.link`, which
never replaces another writer's part. Names without a token (older evfarm) count as leftovers.

The writer is held by the sink actor (`actors/sink.py`); the readers live one layer up, in
`cluster/results.py`. Our own design, following the Arrow IPC stream format's documented framing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import weakref
from collections.abc import Iterable, Mapping
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

_TOKEN = r"w\d+-\d+-[0-9a-f]+-[0-9A-Za-z-]+"
LIVE_RE = re.compile(rf"^_live-(\d{{6}})(?:\.({_TOKEN}))?\.arrows$")
TMP_RE = re.compile(rf"^_tmp-(\d{{6}})(?:\.({_TOKEN}))?\.(?:parquet|arrows)$")
PART_RE = re.compile(r"^part-(\d{6})\.parquet$")


# -- what a part holds: a merged (compacted) part lists the parts it covers and the (writer,
# segment) pairs whose rows it holds; read by the sink (actors/sink.py) and the readers
# (cluster/results.py), which must not import ray
COVERS_KEY = b"evfarm.covers"
SOURCES_KEY = b"evfarm.sources"


def covered_names(schema: pa.Schema) -> list[str]:
    """The part names a merged part covers (its own name included), from its metadata."""
    raw = (schema.metadata or {}).get(COVERS_KEY)
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def segment_sources(schema: pa.Schema) -> set[tuple[str, str]]:
    """(writer token, segment) pairs whose rows a part holds: its own, or a merged part's list."""
    meta = schema.metadata or {}
    out = set()
    if meta.get(b"evfarm.writer") is not None:
        out.add((meta[b"evfarm.writer"].decode(), meta.get(b"evfarm.segment", b"").decode()))
    try:
        for w, seg in json.loads(meta.get(SOURCES_KEY) or b"[]"):
            out.add((str(w), str(seg)))
    except (ValueError, TypeError):
        pass
    return out
LOCK_FILE = ".driver.lock"  # written by cluster/rundir.py's RunLock: JSON with "pid" and "host"


# -- rows and schemas ---------------------------------------------------------------------------
def rows_to_batch(rows: list[Mapping[str, Any]]) -> pa.RecordBatch:
    """Rows (dicts) → one record batch: base columns first with canonical types, extras inferred."""
    if not rows:
        raise ConfigError("rows_to_batch needs at least one row; got an empty list.")
    seen: dict[str, Any] = {}
    for row in rows:  # every key, in first-seen order (dict.update runs in C; issue 20's sink rate)
        seen.update(row)
    base = set(BASE_NAMES)
    names = list(BASE_NAMES) + [key for key in seen if key not in base]
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        if not _PLAIN_TYPES.issuperset(map(type, values)):  # numpy/torch scalars only where present
            values = [_plain(v) for v in values]
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


_PLAIN_TYPES = frozenset({int, float, str, bool, type(None)})


def _plain(v: Any) -> Any:
    """Numpy/torch scalars → Python scalars so Arrow infers stable types."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


def common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The type both `a` and `b` cast to: Arrow's permissive promotion, else string."""
    if a == b:
        return a
    try:
        both = [pa.schema([("c", a)]), pa.schema([("c", b)])]
        return pa.unify_schemas(both, promote_options="permissive").field(0).type
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.string()


def union_schema(schemas: Iterable[pa.Schema], start: pa.Schema | None = None) -> pa.Schema:
    """Base fields first, then every other column in first-seen order, each with its common type."""
    fields = {f.name: f.type for f in (start if start is not None else pa.schema(BASE_FIELDS))}
    for schema in schemas:
        for f in schema:
            fields[f.name] = common_type(fields[f.name], f.type) if f.name in fields else f.type
    return pa.schema([pa.field(n, t) for n, t in fields.items()])


def _cast(col: pa.Array | pa.ChunkedArray, typ: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if col.null_count == len(col):
        return pa.nulls(len(col), type=typ)
    if col.type == typ:
        return col
    try:
        return col.cast(typ)
    except pa.ArrowInvalid:
        if not pa.types.is_string(typ):
            return col.cast(typ, safe=False)  # int → float past 2**53
    except pa.ArrowNotImplementedError:
        if not pa.types.is_string(typ):
            raise
    return pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in `schema` (a superset of its columns): missing columns null, types cast."""
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            arrays.append(_cast(batch.column(field.name), field.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema` (a superset of its columns), keeping the table's own metadata."""
    have = set(table.schema.names)
    n = table.num_rows
    cols = [_cast(table.column(f.name), f.type) if f.name in have else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(table.schema.metadata))


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


# -- files --------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(tmp: Path, table: pa.Table) -> None:
    pq.write_table(table, tmp)
    _fsync_path(tmp)


def next_seq(run_dir: Path) -> int:
    """One past the highest sequence number of any part, segment or temporary file in `run_dir`."""
    names = [p.name for p in run_dir.iterdir()]
    seqs = [int(m.group(1)) for n in names for rx in (LIVE_RE, PART_RE, TMP_RE) if (m := rx.match(n))]
    return max(seqs, default=-1) + 1


def publish_part(run_dir: Path, seq: int, table: pa.Table, token: str | None = None) -> Path:
    """Write `table` as `part-<seq>.parquet` atomically (temp file, fsync, link) and return it.

    Never replaces an existing part: if another writer holds `seq`, the next free number is used.
    """
    tmp = run_dir / (f"_tmp-{seq:06d}.{token}.parquet" if token else f"_tmp-{seq:06d}.parquet")
    _write_parquet(tmp, table)
    while True:
        final = run_dir / f"part-{seq:06d}.parquet"
        try:
            os.link(tmp, final)
        except FileExistsError:
            seq = max(seq + 1, next_seq(run_dir))
            continue
        except OSError:  # a file system without hard links: check, then rename
            if final.exists():
                seq = max(seq + 1, next_seq(run_dir))
                continue
            os.replace(tmp, final)
        break
    tmp.unlink(missing_ok=True)
    _fsync_path(run_dir)
    return final


# -- who wrote a segment ------------------------------------------------------------------------
_HOST = re.sub(r"[^0-9A-Za-z-]", "-", socket.gethostname())[:63] or "host"
_OPEN: weakref.WeakValueDictionary[str, SegmentWriter] = weakref.WeakValueDictionary()


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None off Linux/gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str:
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else "0"  # field 22: start time in clock ticks


def process_alive(pid: int, start: str = "0") -> bool:
    """Whether process `pid` of this host runs (and, when `start` is known, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc/self/stat").exists()  # no /proc: the signal check is all we have
    if stat[0] in ("Z", "X"):
        return False
    return start == "0" or len(stat) <= 19 or stat[19] == start


def lock_holder(run_dir: Path) -> tuple[int, str] | None:
    """(pid, host) recorded in the run's `.driver.lock`, or None."""
    try:
        data = json.loads((run_dir / LOCK_FILE).read_text()[:65536] or "{}")
        return int(data["pid"]), re.sub(r"[^0-9A-Za-z-]", "-", str(data["host"]))[:63]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def writer_gone(token: str | None, run_dir: Path) -> bool:
    """True only when the writer of a segment named with `token` provably stopped writing."""
    if token is None:
        return True  # an older evfarm's name: no owner recorded
    pid, start, nonce, host = token[1:].split("-", 3)
    if host == _HOST:
        if int(pid) == os.getpid():
            return nonce not in _OPEN
        return not process_alive(int(pid), start)
    holder = lock_holder(run_dir)  # a live driver here holds the run: the other host's writer stopped
    return holder is not None and holder[1] == _HOST and process_alive(holder[0])


# -- the writer ---------------------------------------------------------------------------------
class SegmentWriter:
    """The single writer of a run's result files (held by the sink actor).

    Args:
        run_dir: the run directory; must exist.
        metadata: strings stored in every segment's schema metadata (config hash, git SHA, ...).
        roll_rows: publish a part after this many rows.
        roll_seconds: publish a part when the open segment is older than this (so readers of
            Parquet see rows while a long sweep runs).
        adopt_wait_s: on start, how long to wait for the process of a segment found in the run
            directory to go away (a crashed sink's process may still be exiting) before leaving
            that segment alone.
    """

    def __init__(
        self,
        run_dir: str | Path,
        metadata: Mapping[str, str] | None = None,
        roll_rows: int = 2000,
        roll_seconds: float = 10.0,
        adopt_wait_s: float = 2.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise ResultsError(f"Run directory {self.run_dir} does not exist; create the run first.")
        nonce = secrets.token_hex(4)
        self.token = f"w{os.getpid()}-{_start_time(os.getpid())}-{nonce}-{_HOST}"
        _OPEN[nonce] = self
        self._nonce = nonce
        self.metadata = {"evfarm.schema_version": str(SCHEMA_VERSION), **dict(metadata or {})}
        self.roll_rows = roll_rows
        self.roll_seconds = roll_seconds
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._file: pa.OSFile | None = None
        self._live: Path | None = None
        self._union = pa.schema(BASE_FIELDS)
        self._null_cols: set[str] = set()  # union columns that held only nulls so far
        self._parts: dict[Path, pa.Schema] = {}  # published parts and their schemas (for widening)
        self._rows_in_segment = 0
        self._opened_at = 0.0
        self.rows_written = 0
        self.left_alone: list[str] = []  # segments of writers that may still be writing
        for part in sorted(p for p in self.run_dir.iterdir() if PART_RE.match(p.name)):
            self._add_part(part)
        self.recovered_rows = self.recover(wait_s=adopt_wait_s)
        self._seq = next_seq(self.run_dir)

    # -- recovery -----------------------------------------------------------------------------
    def _add_part(self, part: Path, schema: pa.Schema | None = None) -> None:
        try:
            schema = schema if schema is not None else pq.read_schema(part)
        except (OSError, pa.ArrowException):
            return  # unreadable: the readers report it (cluster.results.check_parts); never touched
        self._union = union_schema([schema], start=self._union)
        self._parts[part] = schema

    def _published(self, seq: int, token: str | None, rows: int) -> bool:
        """Whether a leftover segment was already published (its writer died before deleting it)."""
        for part, schema in self._parts.items():
            meta = schema.metadata or {}
            if token and meta.get(b"evfarm.writer") == token.encode():
                if meta.get(b"evfarm.segment") == str(seq).encode():
                    return True
            elif not token and part.name == f"part-{seq:06d}.parquet":
                return pq.ParquetFile(part).metadata.num_rows == rows
        return False

    def recover(self, wait_s: float = 0.0) -> int:
        """Publish every provable leftover segment (up to its first torn message); return its rows.

        A segment whose writer may still be writing is left alone (`left_alone`), never deleted.
        """
        saved = 0
        deadline = time.monotonic() + wait_s
        self.left_alone = []
        for path in sorted(self.run_dir.iterdir()):
            m = TMP_RE.match(path.name)
            if m and m.group(2) != self.token and writer_gone(m.group(2), self.run_dir):
                path.unlink(missing_ok=True)  # an unpublished rewrite; its live segment is still there
        for live in sorted(p for p in self.run_dir.iterdir() if LIVE_RE.match(p.name)):
            m = LIVE_RE.match(live.name)
            seq, token = int(m.group(1)), m.group(2)  # type: ignore[union-attr]
            if token == self.token:
                continue
            while not writer_gone(token, self.run_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not writer_gone(token, self.run_dir):
                self.left_alone.append(live.name)
                continue
            schema, batches = read_stream_tolerant(live)
            if batches:
                table = pa.Table.from_batches(batches, schema=schema)
                if not self._published(seq, token, table.num_rows):
                    part = publish_part(self.run_dir, seq, table, self.token)
                    self._add_part(part, table.schema)
                    saved += table.num_rows
            live.unlink(missing_ok=True)
        return saved

    # -- writing ------------------------------------------------------------------------------
    def _segment_schema(self) -> pa.Schema:
        meta = {**self.metadata, "evfarm.writer": self.token, "evfarm.segment": str(self._seq)}
        return self._union.with_metadata(meta)

    def _open(self) -> None:
        self._seq = max(self._seq, next_seq(self.run_dir))
        self._live = self.run_dir / f"_live-{self._seq:06d}.{self.token}.arrows"
        self._file = pa.OSFile(str(self._live), "wb")
        self._writer = pa.ipc.new_stream(self._file, self._segment_schema())
        self._rows_in_segment = 0
        self._opened_at = time.monotonic()

    def _grow(self, batch: pa.RecordBatch) -> bool:
        """Widen the run's union schema to hold `batch`; True when it changed."""
        fields = {f.name: f.type for f in self._union}
        changed = False
        for f in batch.schema:
            empty = f.name not in _BASE_TYPES and batch.column(f.name).null_count == batch.num_rows
            if f.name not in fields:
                fields[f.name], changed = f.type, True
                if empty:
                    self._null_cols.add(f.name)
            elif not empty and f.name in self._null_cols:
                self._null_cols.discard(f.name)
                if fields[f.name] != f.type:
                    fields[f.name], changed = f.type, True  # it held only nulls: take the real type
            elif not empty and common_type(fields[f.name], f.type) != fields[f.name]:
                fields[f.name], changed = common_type(fields[f.name], f.type), True
        if changed:
            self._union = pa.schema([pa.field(n, t) for n, t in fields.items()])
        return changed

    def _rewrite_live(self) -> None:
        """Rewrite the open segment in the (wider) union schema, atomically, and keep appending."""
        self._writer.close()  # type: ignore[union-attr]
        self._file.close()  # type: ignore[union-attr]
        _, batches = read_stream_tolerant(self._live)  # type: ignore[arg-type]
        tmp = self.run_dir / f"_tmp-{self._seq:06d}.{self.token}.arrows"
        schema = self._segment_schema()
        self._file = pa.OSFile(str(tmp), "wb")
        self._writer = pa.ipc.new_stream(self._file, schema)
        for b in batches:
            self._writer.write_batch(conform(b, schema))
        self._file.flush()
        _fsync_path(tmp)
        os.replace(tmp, self._live)  # type: ignore[arg-type]  (the open file follows its inode)
        _fsync_path(self.run_dir)

    def append(self, rows: list[Mapping[str, Any]]) -> int:
        """Write rows as one flushed batch; return the number of rows written."""
        if not rows:
            return 0
        batch = rows_to_batch(rows)
        if self._grow(batch) and self._writer is not None:
            self._rewrite_live()
        if self._writer is None:
            self._open()
        batch = conform(batch, self._segment_schema())
        self._writer.write_batch(batch)  # type: ignore[union-attr]
        self._file.flush()  # type: ignore[union-attr]
        self._rows_in_segment += batch.num_rows
        self.rows_written += batch.num_rows
        if self._rows_in_segment >= self.roll_rows or time.monotonic() - self._opened_at >= self.roll_seconds:
            self.roll()
        return batch.num_rows

    def _widen_parts(self) -> None:
        """Rewrite parts published before the union last grew, so every part has the run's schema."""
        for part, schema in list(self._parts.items()):
            if schema.equals(self._union):
                continue
            try:
                table = pq.read_table(part)
            except (OSError, pa.ArrowException):
                del self._parts[part]
                continue
            wide = conform_table(table, union_schema([table.schema], start=self._union))
            tmp = self.run_dir / f"_tmp-{int(PART_RE.match(part.name).group(1)):06d}.{self.token}.parquet"  # type: ignore[union-attr]
            _write_parquet(tmp, wide)
            os.replace(tmp, part)
            self._parts[part] = wide.schema
        _fsync_path(self.run_dir)

    def roll(self) -> Path | None:
        """Close the live segment and publish it as a Parquet part; adopt leftovers; widen parts."""
        part = None
        if self._writer is not None:
            self._writer.close()
            self._file.close()  # type: ignore[union-attr]
            schema, batches = read_stream_tolerant(self._live)  # type: ignore[arg-type]
            if batches:
                table = pa.Table.from_batches(batches, schema=schema)
                part = publish_part(self.run_dir, self._seq, table, self.token)
                self._parts[part] = table.schema
            self._live.unlink(missing_ok=True)  # type: ignore[union-attr]
            self._writer = self._file = self._live = None
            self._seq += 1
        self.recovered_rows += self.recover()
        self._widen_parts()
        return part

    def maybe_roll(self) -> Path | None:
        """Roll when the open segment is older than `roll_seconds` (called by a timer)."""
        if self._writer is not None and time.monotonic() - self._opened_at >= self.roll_seconds:
            return self.roll()
        return None

    def close(self) -> None:
        self.roll()
        _OPEN.pop(self._nonce, None)
