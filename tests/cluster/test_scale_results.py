"""Bounded parts per run (issue 20): compaction of small parts, atomic for readers.

The sink (actors/sink.py) merges the trailing run of small parts into one that replaces the first;
readers (cluster/results.py) drop parts a merged part covers and re-list when a part vanished.
"""

from __future__ import annotations

import collections
import math
import threading
import time

import pyarrow.parquet as pq

from actors.segments import SegmentWriter
from actors.sink import compact, drop_covered
from cluster import results
from cluster.results import part_paths, read_table


def _rows(start: int, n: int) -> list[dict]:
    return [{"row_kind": "trial", "trial_number": i, "loss": float(i)} for i in range(start, start + n)]


def test_compaction_bounds_the_parts_and_keeps_every_row_once(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=10, roll_seconds=1e9)
    for start in range(0, 600, 10):
        w.append(_rows(start, 10))  # rolls every append: one 10-row part each
        compact(w, compact_rows=100, compact_after=4)
    w.close()
    compact(w, compact_rows=100, compact_after=4)
    parts = part_paths(tmp_path)
    assert len(parts) <= math.ceil(600 / 100) + 4 + 1, [p.name for p in parts]
    assert len(results._listed_parts(tmp_path)) == len(parts)  # nothing covered left behind
    numbers = read_table(tmp_path).column("trial_number").to_pylist()
    assert sorted(numbers) == list(range(600))
    first = pq.read_schema(parts[0]).metadata
    assert b"evfarm.covers" in first and b"evfarm.schema_version" in first


def test_a_compaction_cut_off_before_its_unlinks_reads_each_row_once_and_is_cleaned_up(tmp_path, monkeypatch):
    w = SegmentWriter(tmp_path, roll_rows=5, roll_seconds=1e9)
    for start in range(0, 50, 5):
        w.append(_rows(start, 5))
    w.close()
    assert len(part_paths(tmp_path)) == 10
    real_unlink = type(tmp_path).unlink
    monkeypatch.setattr(type(tmp_path), "unlink", lambda self, missing_ok=False: None)  # "killed" here
    merged = compact(w, compact_rows=1000, compact_after=2)
    monkeypatch.setattr(type(tmp_path), "unlink", real_unlink)
    assert merged is not None and len(results._listed_parts(tmp_path)) == 10  # merged + 9 covered
    assert sorted(read_table(tmp_path).column("trial_number").to_pylist()) == list(range(50))
    assert len(part_paths(tmp_path)) == 1
    n = results.query(tmp_path, "SELECT count(*) AS n FROM results").column("n")[0].as_py()
    assert n == 50  # DuckDB is handed only the uncovered files
    restarted = SegmentWriter(tmp_path)  # what the next sink does at start
    assert len(drop_covered(restarted)) == 9 and len(results._listed_parts(tmp_path)) == 1
    assert sorted(read_table(tmp_path).column("trial_number").to_pylist()) == list(range(50))


def test_a_reader_during_compactions_sees_every_published_row_exactly_once(tmp_path):
    w = SegmentWriter(tmp_path, roll_rows=4, roll_seconds=1e9)
    published = [0]  # rows in parts (updated after each roll and compaction returned)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def write() -> None:
        n, t0 = 0, time.monotonic()
        while not stop.is_set() and n < 4000 and time.monotonic() - t0 < 3.0:
            w.append(_rows(n, 4))
            n += 4
            published[0] = n
            compact(w, compact_rows=200, compact_after=3)
        stop.set()

    def read() -> None:
        while not stop.is_set():
            before = published[0]
            numbers = read_table(tmp_path, include_live=False).column("trial_number").to_pylist()
            reads[0] += 1
            dup = [k for k, c in collections.Counter(numbers).items() if c > 1]
            if dup:
                problems.append(f"duplicated rows {dup[:5]}")
            if len(set(numbers)) < before:
                problems.append(f"read {len(set(numbers))} rows, {before} were published before")

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    assert not problems, problems[:3]
    assert reads[0] >= 5 and w_compactions(tmp_path, published[0]) >= 1
    assert len(part_paths(tmp_path)) <= math.ceil(published[0] / 200) + 3 + 1
    w.close()
    assert sorted(read_table(tmp_path).column("trial_number").to_pylist()) == list(range(published[0]))


def w_compactions(run_dir, rows: int) -> int:
    """Merged parts present (each the outcome of at least one compaction)."""
    return sum(1 for p in part_paths(run_dir) if results.covered_names(pq.read_schema(p)))


def test_a_live_segment_already_published_is_not_read_twice(tmp_path):
    """A roll between reading the live segment and listing the parts: its rows come from the part."""
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    w.append(_rows(0, 3))
    live = results._read_live_segments(tmp_path)  # the reader has read the live segment ...
    w.roll()  # ... then the sink publishes it ...
    sources: set = set()
    tables = results.read_parts(tmp_path, sources=sources)  # ... and the reader lists the parts
    kept = [t for t, _ in live if not (results.segment_sources(t.schema) & sources)]
    assert sum(t.num_rows for t in tables) == 3 and kept == []
    w.append(_rows(3, 2))
    assert sorted(read_table(tmp_path).column("trial_number").to_pylist()) == list(range(5))


def test_a_reader_whose_listed_parts_vanish_mid_read_lists_again(tmp_path, monkeypatch):
    """The race made deterministic: the reader opens the old first part, then a compaction replaces
    it and unlinks the rest before the reader opens them."""
    w = SegmentWriter(tmp_path, roll_rows=5, roll_seconds=1e9)
    for start in range(0, 50, 5):
        w.append(_rows(start, 5))
    real_open = open
    calls = [0]

    def open_then_compact(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 1:
            assert compact(w, compact_rows=1000, compact_after=2) is not None
        return f

    monkeypatch.setattr(results, "open", open_then_compact, raising=False)
    numbers = read_table(tmp_path, include_live=False).column("trial_number").to_pylist()
    assert sorted(numbers) == list(range(50)) and calls[0] == 2  # listed and opened again
