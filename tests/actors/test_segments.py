"""The segment writing protocol: live IPC stream → Parquet parts, one schema per run, recovery
(issues 2 and 21)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.segments import SegmentWriter, rows_to_batch
from cluster.results import part_paths, query, read_live, read_polars, read_table
from methods.errors import ResultsError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rows(n, start=0, **extra):
    return [
        {"run_id": "r", "trial_number": start + i, "state": "COMPLETE", "acc": 0.5 + i / 100, **extra}
        for i in range(n)
    ]


def _schemas(run_dir):
    return [pq.read_schema(p).remove_metadata() for p in part_paths(run_dir)]


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
    meta = pq.read_schema(part_paths(tmp_path)[0]).metadata
    assert meta[b"evfarm.config_hash"] == b"abc" and meta[b"evfarm.schema_version"] == b"1"
    assert meta[b"evfarm.writer"].decode() == w.token


def test_new_column_widens_the_open_segment_instead_of_rolling(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=1000, roll_seconds=1e9)
    w.append(_rows(3))
    w.append(_rows(2, start=3, latency_ms=1.5))  # new column mid-segment
    assert read_live(tmp_path).column("latency_ms").to_pylist() == [None, None, None, 1.5, 1.5]
    w.close()
    assert len(part_paths(tmp_path)) == 1
    t = query(tmp_path, "SELECT trial_number, latency_ms FROM results ORDER BY trial_number")
    assert t.column("latency_ms").to_pylist() == [None, None, None, 1.5, 1.5]


def test_parts_published_before_a_column_appeared_are_widened_at_the_next_roll(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=1000, roll_seconds=1e9)
    w.append(_rows(2, bits=4))
    w.roll()
    w.append(_rows(2, start=2, bits=4.5, note="late"))  # int → float, and a new string column
    w.append([{"trial_number": 4, "note": None, "empty": None}])
    w.append([{"trial_number": 5, "empty": "now a string"}])  # held only nulls: takes the real type
    w.close()
    schemas = _schemas(tmp_path)
    assert len(schemas) == 2 and schemas[0].equals(schemas[1])
    assert schemas[0].field("bits").type == pa.float64()
    assert schemas[0].field("empty").type == pa.string()
    t = read_table(tmp_path)
    assert t.column("bits").to_pylist() == [4.0, 4.0, 4.5, 4.5, None, None]
    assert t.column("note").to_pylist() == [None, None, "late", "late", None, None]
    assert pq.read_schema(part_paths(tmp_path)[0]).metadata[b"evfarm.segment"] == b"0"  # its own metadata


def test_irreconcilable_types_become_strings_in_every_part(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=1000, roll_seconds=1e9)
    w.append(_rows(1, mode=3))
    w.roll()
    w.append(_rows(1, start=1, mode="fast"))
    w.close()
    schemas = _schemas(tmp_path)
    assert schemas[0].equals(schemas[1]) and schemas[0].field("mode").type == pa.string()
    assert read_table(tmp_path).column("mode").to_pylist() == ["3", "fast"]


def _crashing_writer(tmp_path, batches, then="exit"):
    """A writer in a child process that appends `batches` one-row batches and then dies."""
    return textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {REPO!r})
        from actors.segments import SegmentWriter
        w = SegmentWriter({str(tmp_path)!r}, roll_rows=10**6, roll_seconds=1e9)
        for k in range({batches}):
            w.append([{{"trial_number": k, "acc": 0.1}}])
        os._exit(0)  # no close: no end-of-stream marker, the segment stays live
    """)


def test_torn_tail_recovers_every_complete_batch(tmp_path):
    subprocess.run([sys.executable, "-c", _crashing_writer(tmp_path, 6)], check=True, timeout=60)
    live = next(tmp_path.glob("_live-*.arrows"))
    with open(live, "r+b") as fh:
        fh.truncate(live.stat().st_size - 37)  # a torn final message
    w2 = SegmentWriter(tmp_path)
    assert w2.recovered_rows == 5 and read_table(tmp_path, include_live=False).num_rows == 5
    assert not list(tmp_path.glob("_live-*"))


def test_an_abandoned_writer_of_this_process_is_a_leftover(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    w.append(_rows(3))
    alive = SegmentWriter(tmp_path, adopt_wait_s=0)
    assert alive.recovered_rows == 0 and alive.left_alone  # w is still open: its segment is left alone
    w._file.close()
    del w  # dropped without close, as a crashed actor would
    assert SegmentWriter(tmp_path).recovered_rows == 3
    assert read_table(tmp_path, include_live=False).num_rows == 3


def test_a_segment_published_just_before_a_crash_is_not_published_twice(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    w.append(_rows(4))
    live = next(tmp_path.glob("_live-*.arrows"))
    copy = tmp_path / "copy"
    shutil.copy(live, copy)
    w.close()  # published ...
    copy.rename(live)  # ... but "killed" before the live segment was deleted
    w2 = SegmentWriter(tmp_path)
    assert w2.recovered_rows == 0 and not list(tmp_path.glob("_live-*"))
    assert read_table(tmp_path).column("trial_number").to_pylist() == [0, 1, 2, 3]


def test_sigkilled_writer_loses_no_flushed_batch(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
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


def test_numpy_and_torch_scalars_become_plain_values_even_beside_plain_ones():
    """The fast path skips conversion only for columns of plain Python values; a column mixing a
    float with numpy/torch 0-d scalars still lands as one float64 (int64) column with the values."""
    import numpy as np
    import torch

    rows = _rows(3)
    rows[1]["acc"], rows[2]["acc"] = np.float32(0.25), torch.tensor(0.75)
    rows[0]["n"], rows[1]["n"], rows[2]["n"] = 1, np.int64(2), torch.tensor(3)
    batch = rows_to_batch(rows)
    assert batch.schema.field("acc").type == pa.float64() and batch.schema.field("n").type == pa.int64()
    assert batch.column("acc").to_pylist() == [0.5, 0.25, 0.75] and batch.column("n").to_pylist() == [1, 2, 3]
