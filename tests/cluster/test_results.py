"""The segment protocol: live IPC stream → Parquet parts, recovery, readers (issue 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from actors.segments import SegmentWriter, rows_to_batch
from cluster.results import part_paths, query, read_live, read_polars, read_table
from methods.errors import ResultsError


def _rows(n, start=0, **extra):
    return [
        {"run_id": "r", "trial_number": start + i, "state": "COMPLETE", "acc": 0.5 + i / 100, **extra}
        for i in range(n)
    ]


def test_rows_keep_canonical_base_types_and_infer_extras():
    batch = rows_to_batch([{"trial_number": 1, "attempt": 2, "acc": 0.9, "w_bits": 4}])
    assert batch.schema.field("trial_number").type == pa.int64()
    assert batch.schema.field("attempt").type == pa.int32()
    assert batch.schema.field("acc").type == pa.float64()
    assert batch.schema.names[:3] == ["run_id", "sweep", "row_kind"]


def test_roll_publishes_parts_atomically_and_readers_agree(tmp_path):
    w = SegmentWriter(tmp_path, {"evfarm.config_hash": "abc"}, roll_rows=10, roll_seconds=1e9)
    for k in range(5):
        w.append(_rows(4, start=4 * k))
    assert len(part_paths(tmp_path)) == 1  # rolled once after >= 10 rows
    assert read_live(tmp_path).num_rows == 8
    assert read_table(tmp_path).num_rows == 20
    assert read_table(tmp_path, include_live=False).num_rows == 12
    w.close()
    assert not list(tmp_path.glob("_*"))
    assert query(tmp_path, "SELECT count(*) AS n FROM results").column("n")[0].as_py() == 20
    assert read_polars(tmp_path).height == 20
    meta = pa.parquet.read_schema(part_paths(tmp_path)[0]).metadata
    assert meta[b"evfarm.config_hash"] == b"abc" and meta[b"evfarm.schema_version"] == b"1"


def test_new_column_rolls_segment_and_duckdb_unions_by_name(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=1000, roll_seconds=1e9)
    w.append(_rows(3))
    w.append(_rows(2, start=3, latency_ms=1.5))  # new column mid-run
    w.close()
    assert len(part_paths(tmp_path)) == 2
    t = query(tmp_path, "SELECT trial_number, latency_ms FROM results ORDER BY trial_number")
    assert t.column("latency_ms").to_pylist() == [None, None, None, 1.5, 1.5]


def test_torn_tail_recovers_every_complete_batch(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    for k in range(6):
        w.append(_rows(5, start=5 * k))
    live = next(tmp_path.glob("_live-*.arrows"))
    size = live.stat().st_size
    w._file.close()  # simulate a crash: no end-of-stream marker ...
    with open(live, "r+b") as fh:
        fh.truncate(size - 37)  # ... and a torn final message
    w2 = SegmentWriter(tmp_path)
    assert w2.recovered_rows == 25 and read_table(tmp_path, include_live=False).num_rows == 25
    assert not list(tmp_path.glob("_live-*"))


def test_sigkilled_writer_loses_no_flushed_batch(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from actors.segments import SegmentWriter
        w = SegmentWriter({str(tmp_path)!r}, roll_rows=10**6, roll_seconds=1e9)
        for k in range(10**6):
            w.append([{{"trial_number": k, "acc": 0.1}}])
            if k == 49:
                print("flushed", flush=True)
            time.sleep(0.002)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    live_rows = read_live(tmp_path).num_rows
    assert live_rows >= 50
    w = SegmentWriter(tmp_path)
    assert w.recovered_rows == live_rows
    numbers = read_table(tmp_path).column("trial_number").to_pylist()
    assert numbers == list(range(live_rows))


def test_writer_needs_an_existing_run_dir(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        SegmentWriter(tmp_path / "missing")
