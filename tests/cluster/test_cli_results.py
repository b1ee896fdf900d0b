"""`evfarm results RUN_DIR` (table, csv, json, --skip-bad-parts) and the sink actor's crash recovery."""

from __future__ import annotations

import csv
import io
import json

from actors.segments import SegmentWriter
from actors.sink import ResultSink
from cluster import cli
from cluster.results import part_paths, read_table
from cluster.rundir import write_run_json
from sweeps import demo_sweep


def test_demo_sweep_end_to_end_and_results_command(ray_local, tmp_path, capsys):
    rc = demo_sweep.main(
        [
            "--out",
            str(tmp_path),
            "--run-id",
            "r",
            "--no-progress",
            "--set",
            "C=[0.01, 1.0]",
            "--set",
            "sizes=[8]",
        ]
    )
    out = capsys.readouterr().out
    run_dir = tmp_path / "demo_sweep" / "r"
    assert rc == 0 and f"run directory: {run_dir}" in out.splitlines()[0]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary: ") and "complete=2" in summary and "failed=0" in summary
    assert (run_dir / "accuracy_vs_C.png").stat().st_size > 1000
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["C"] == [0.01, 1.0] and record["versions"]["optuna"].startswith("5.")
    assert cli.main(["results", str(run_dir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" and 0.5 < r["accuracy"] <= 1 for r in rows)
    assert rows[1]["accuracy"] > rows[0]["accuracy"]  # C=1 beats C=0.01 on digits
    assert cli.main(["results", str(run_dir), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["C"] for r in parsed} == {"0.01", "1.0"}
    assert cli.main(["results", str(run_dir)]) == 0
    assert "COMPLETE=2" in capsys.readouterr().out


def test_results_command_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["results", str(tmp_path)]) == 2
    assert "not an evfarm run directory" in capsys.readouterr().err


def test_killed_sink_actor_recovers_every_flushed_batch(ray_local, tmp_path):
    import ray  # after evfarm's own imports: they set Ray's environment first

    write_run_json(tmp_path, {"run_id": "s"})
    sink = ResultSink.options(max_restarts=1).remote(str(tmp_path), {}, roll_rows=10**6, roll_seconds=1e9)
    for k in range(7):
        ray.get(sink.append.remote([{"trial_number": k, "state": "COMPLETE"}]))
    ray.kill(sink, no_restart=True)  # dies with an open live segment, like a crash mid-sweep
    restarted = ResultSink.remote(str(tmp_path), {})
    assert ray.get(restarted.stats.remote())["recovered_rows"] == 7
    ray.get(restarted.close.remote())
    assert read_table(tmp_path, include_live=False).column("trial_number").to_pylist() == list(range(7))


def _run_with_bad_parts(run_dir):
    """Three parts and a live segment; the second part truncated, the third garbage."""
    write_run_json(run_dir, {"run_id": "bad"})
    w = SegmentWriter(run_dir, roll_rows=10**6, roll_seconds=1e9)
    for k in range(3):
        w.append([{"row_kind": "trial", "trial_number": 2 * k + i, "state": "COMPLETE"} for i in range(2)])
        w.roll()
    w.append([{"row_kind": "trial", "trial_number": 6, "state": "COMPLETE"}])
    truncated, garbage = part_paths(run_dir)[1:]
    truncated.write_bytes(truncated.read_bytes()[:-40])
    garbage.write_bytes(b"not parquet at all " * 10)
    return w, truncated, garbage


def test_row3_results_command_says_what_to_do_and_skip_bad_parts_reads_the_rest(tmp_path, capsys):
    w, truncated, garbage = _run_with_bad_parts(tmp_path)
    w.close()
    assert cli.main(["results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(truncated) in err and "--skip-bad-parts" in err
    assert cli.main(["results", str(tmp_path), "--skip-bad-parts", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert [r["trial_number"] for r in json.loads(out)] == [0, 1, 6]
    assert f"skipped unreadable part {truncated}" in err and f"skipped unreadable part {garbage}" in err
    assert cli.main(["results", str(tmp_path), "--skip-bad-parts"]) == 0
    assert "2 unreadable part(s) skipped" in capsys.readouterr().out
