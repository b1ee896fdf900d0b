"""Issue 21, the results rows: a sink never deletes a segment it did not write (row 1), an
unreadable part is a typed error naming the file (row 3), and one schema per run so plain Polars,
pandas and DuckDB reads of the parts work (row 12)."""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors import segments
from actors.segments import SegmentWriter, publish_part, writer_gone
from actors.sink import ResultSink
from cluster.results import check_parts, part_paths, query, read_table
from cluster.rundir import write_run_json
from methods.errors import ResultsError
from sweeps import demo_sweep

REPO = Path(__file__).resolve().parents[2]


def _rows(n, start=0, **extra):
    return [{"row_kind": "trial", "trial_number": start + i, "state": "COMPLETE", **extra} for i in range(n)]


def _numbers(run_dir, include_live=False):
    return sorted(read_table(run_dir, include_live=include_live).column("trial_number").to_pylist())


# -- row 1 --------------------------------------------------------------------------------------
def test_row1_sink_never_deletes_a_segment_of_a_writer_that_still_runs(tmp_path):
    """The issue's repro: a second writer starts on a run whose first writer has a live segment."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from actors.segments import SegmentWriter
        w = SegmentWriter({str(tmp_path)!r}, roll_rows=10**6, roll_seconds=1e9)
        w.append([{{"trial_number": k, "state": "RUNNING"}} for k in range(5)])
        print("ready", flush=True)
        sys.stdin.readline()
        w.append([{{"trial_number": k, "state": "COMPLETE"}} for k in range(5, 10)])
        w.close()
        print("closed", flush=True)
    """)
    first = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "ready"
        live = next(tmp_path.glob("_live-*.arrows"))
        second = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9, adopt_wait_s=0.2)
        assert second.recovered_rows == 0 and second.left_alone == [live.name] and live.exists()
        second.append(_rows(3, start=100))
        second.close()
        assert live.exists()  # still not touched after the second writer's roll and close
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "closed"  # no FileNotFoundError: its segment is there
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert _numbers(tmp_path) == [*range(10), 100, 101, 102]  # every row once, none lost
    assert not list(tmp_path.glob("_*"))


def test_row1_two_sink_actors_on_one_run_keep_each_others_rows(ray_local, tmp_path):
    import ray  # after evfarm's own imports: they set Ray's environment first

    write_run_json(tmp_path, {"run_id": "two"})
    first = ResultSink.remote(str(tmp_path), {}, roll_rows=10**6, roll_seconds=1e9)
    ray.get(first.append.remote(_rows(4)))
    second = ResultSink.remote(str(tmp_path), {}, roll_rows=10**6, roll_seconds=1e9)
    assert ray.get(second.stats.remote())["left_alone"] == 1
    ray.get(second.append.remote(_rows(2, start=10)))
    ray.get(second.close.remote())
    ray.get(first.append.remote(_rows(2, start=4)))
    ray.get(first.close.remote())
    assert _numbers(tmp_path) == [0, 1, 2, 3, 4, 5, 10, 11]


def _foreign_segment(run_dir, token, n=3):
    path = run_dir / f"_live-000000.{token}.arrows"
    batch = segments.rows_to_batch(_rows(n))
    with pa.OSFile(str(path), "wb") as fh, pa.ipc.new_stream(fh, batch.schema) as w:
        w.write_batch(batch)
    return path


def test_row1_segment_of_another_host_is_adopted_only_while_a_driver_here_holds_the_run(tmp_path):
    seg = _foreign_segment(tmp_path, "w123-456-abcd-elsewhere")
    assert SegmentWriter(tmp_path, adopt_wait_s=0).left_alone == [seg.name] and seg.exists()
    lock = tmp_path / ".driver.lock"
    lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))  # a dead driver
    assert SegmentWriter(tmp_path, adopt_wait_s=0).recovered_rows == 0 and seg.exists()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    assert SegmentWriter(tmp_path, adopt_wait_s=0).recovered_rows == 3 and not seg.exists()
    assert _numbers(tmp_path) == [0, 1, 2]


def test_row1_a_reused_pid_does_not_make_a_dead_writer_look_alive(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = segments._start_time(other.pid)
        assert not writer_gone(f"w{other.pid}-{start}-abcd-{segments._HOST}", tmp_path)
        assert writer_gone(f"w{other.pid}-{int(start) + 1}-abcd-{segments._HOST}", tmp_path)
    finally:
        other.kill()
        other.wait()
    assert writer_gone(f"w{other.pid}-{start}-abcd-{segments._HOST}", tmp_path)


def test_row1_publishing_never_replaces_another_writers_part(tmp_path):
    theirs = publish_part(tmp_path, 4, pa.table({"trial_number": [1]}), "w1-1-aa-h")
    mine = publish_part(tmp_path, 4, pa.table({"trial_number": [2]}), "w2-2-bb-h")
    assert theirs.name == "part-000004.parquet" and mine.name == "part-000005.parquet"
    assert pq.read_table(theirs).column("trial_number").to_pylist() == [1]


# -- row 3 --------------------------------------------------------------------------------------
def _run_with_bad_parts(tmp_path):
    write_run_json(tmp_path, {"run_id": "bad"})
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    for k in range(3):
        w.append(_rows(2, start=2 * k, acc=0.5))
        w.roll()
    w.append(_rows(1, start=6, acc=0.5))  # stays live
    truncated, garbage = part_paths(tmp_path)[1:]
    truncated.write_bytes(truncated.read_bytes()[:-40])
    garbage.write_bytes(b"not parquet at all " * 10)
    return w, truncated, garbage


def test_row3_an_unreadable_part_is_a_results_error_naming_the_file(tmp_path):
    w, truncated, garbage = _run_with_bad_parts(tmp_path)
    for read in (
        lambda: read_table(tmp_path, include_live=True),  # the resume path (StudyRunner.reconcile)
        lambda: read_table(tmp_path, include_live=False),
        lambda: check_parts(tmp_path),
        lambda: query(tmp_path, "SELECT count(*) FROM results"),
    ):
        with pytest.raises(ResultsError) as err:
            read()
        msg = str(err.value)
        assert str(truncated) in msg and str(garbage) in msg
        assert "Move it aside" in msg and "--skip-bad-parts" in msg
    skipped: list = []
    table = read_table(tmp_path, skip_bad_parts=True, skipped=skipped)
    assert sorted(table.column("trial_number").to_pylist()) == [0, 1, 6]
    assert [b.path for b in skipped] == [truncated, garbage]
    n = query(tmp_path, "SELECT count(*) AS n FROM results", skip_bad_parts=True).column("n")[0].as_py()
    assert n == 2
    before = (truncated.read_bytes(), garbage.read_bytes())
    w.close()  # the writer neither crashes on nor touches the bad parts (the readers report them)
    restarted = SegmentWriter(tmp_path)
    restarted.append(_rows(1, start=7, acc=0.5, late=1.0))  # a new column: good parts are widened
    restarted.close()
    assert (truncated.read_bytes(), garbage.read_bytes()) == before
    assert _numbers_skipping(tmp_path) == [0, 1, 6, 7]


def _numbers_skipping(run_dir):
    return sorted(read_table(run_dir, skip_bad_parts=True).column("trial_number").to_pylist())


# -- row 12 -------------------------------------------------------------------------------------
def test_row12_one_schema_per_run_when_chunk_and_trial_rows_alternate(tmp_path):
    """The demo's pattern without Ray: chunk rows (intermediate), then a trial row (objectives)."""
    w = SegmentWriter(tmp_path, roll_rows=10**6, roll_seconds=1e9)
    for t in range(30):
        for chunk in range(2):
            w.append([{"row_kind": "chunk", "trial_number": t, "step": chunk, "C": 0.1, "intermediate": 0.5}])
        if t == 0:
            w.roll()  # a part published before any trial row: widened later
        w.append([{"row_kind": "trial", "trial_number": t, "C": 0.1, "accuracy": 0.9, "folds": 3}])
    w.close()
    parts = part_paths(tmp_path)
    assert len(parts) == 2  # was 60: a part per row kind switch
    assert pl.scan_parquet(str(tmp_path / "part-*.parquet")).collect().height == 90


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, _ray_teardown):
    """A finished demo sweep run (4 trials, 3 chunks each) whose parts roll every 0.3 s."""
    import ray

    from cluster.connect import connect

    if not ray.is_initialized():
        connect(num_cpus=2, local=True, log_to_driver=False)
    base = tmp_path_factory.mktemp("row12")
    argv = ["--out", str(base / "results"), "--run-id", "r12", "--no-progress", "--roll-seconds", "0.3",
            "--set", "C=[0.01, 1.0]", "--set", "sizes=[8, 16]"]
    assert demo_sweep.main(argv) == 0
    return base, base / "results" / "demo_sweep" / "r12"


def test_row12_polars_scan_parquet_reads_every_part(demo_run, capsys):
    _, run_dir = demo_run
    capsys.readouterr()
    parts = part_paths(run_dir)
    schemas = [pq.read_schema(p).remove_metadata() for p in parts]
    assert all(s.equals(schemas[0]) for s in schemas)
    n = read_table(run_dir).num_rows
    assert n == 12 and not list(run_dir.glob("_live-*"))
    glob_ = str(run_dir / "part-*.parquet")
    frame = pl.scan_parquet(glob_).collect()
    assert frame.height == n and frame.filter(pl.col("row_kind") == "trial")["accuracy"].null_count() == 0
    assert len(pd.read_parquet(sorted(glob.glob(glob_)))) == n
    count = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob_}', union_by_name=true)").fetchall()
    assert count == [(n,)]


def _readme_snippets() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Where results land and how to query them", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_row12_readme_query_snippets_run_against_a_real_run(demo_run, monkeypatch):
    base, run_dir = demo_run
    snippets = _readme_snippets()
    code = "\n".join(snippets)
    assert len(snippets) == 2 and code.count("<run_id>") == 1
    for lib in ("duckdb", "pl.scan_parquet", "pd.read_parquet"):
        assert lib in code
    monkeypatch.chdir(base)  # the snippets use paths relative to where `results/` lies
    env: dict = {}
    exec(compile(code.replace("<run_id>", run_dir.name), "README.md", "exec"), env)  # noqa: S102
    assert len(env["best"]) == 4 and env["best"][0][2] >= env["best"][-1][2]
    assert env["trials"].height == 4 and len(env["df"]) == 12 and len(env["rows"]) == 12
    assert dict(zip(*env["states"].to_pydict().values(), strict=True)) == {"RUNNING": 8, "COMPLETE": 4}
    assert env["frame"].height == 12
