"""Issue 21, the run directory and the driver's start-up: one regression test per table row.

Row 1 (lock): one driver per run directory. Row 2: run.json only grows. Rows 4/5: `--out` and
`--run-id` errors are one paragraph, exit 2, nothing written. Row 6: a failed start leaves no run
directory and names `--num-cpus`. Row 7: `--resume` of another sweep's run names that sweep.
Row 11: `--set` messages use real keys, closest first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster.config import all_keys, apply_overrides, example_override
from cluster.rundir import (
    LOCK_FILE,
    RUN_JSON,
    ResultsRoot,
    RunLock,
    latest_run,
    open_new_run,
    start_record,
)
from cluster.testing import ToySweepConfig, toy_sweep_main
from methods.errors import ConfigError, ResultsError, closest, did_you_mean
from sweeps import demo_sweep

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "C=[1.0]", "--set", "sizes=[8]", "--no-progress"]  # one grid point, 3 chunks


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _one_paragraph(err: str) -> bool:
    return err.startswith("error: ") and "Traceback" not in err and err.strip().count("\n") == 0


@pytest.fixture(scope="module")
def demo_run(_ray_teardown, tmp_path_factory) -> Path:
    """One finished one-point demo run, copied by each test that changes it."""
    import ray

    from cluster.connect import connect

    if not ray.is_initialized():
        connect(num_cpus=2, local=True, log_to_driver=False)
    out = tmp_path_factory.mktemp("demo")
    assert demo_sweep.main(["--out", str(out), "--run-id", "base", *TINY]) == 0
    return out / "demo_sweep" / "base"


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "demo_sweep" / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


# -- row 1: one driver per run directory -------------------------------------------------------
def test_row1_second_driver_is_refused_while_the_first_runs(ray_local, tmp_path):
    """A real first driver (run_sweep in a thread of this process) holds the lock; a second driver
    process resuming the same directory gets exit 2 naming this PID and host, before it starts Ray."""
    out = tmp_path / "results"
    run_dir = out / "toy_sweep" / "first"
    result: dict[str, int] = {}
    argv = ["--out", str(out), "--run-id", "first", "--no-progress", "--set", "sleep=1.0"]
    first = threading.Thread(target=lambda: result.update(rc=toy_sweep_main(argv)))
    first.start()
    try:
        deadline = time.time() + 30
        while not (run_dir / RUN_JSON).is_file():
            assert time.time() < deadline and first.is_alive(), "the first driver never started"
            time.sleep(0.05)
        before = (run_dir / RUN_JSON).read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "cluster.testing", "--resume", str(run_dir), "--no-progress"],
            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60,
        )
        assert first.is_alive(), "the first driver ended before the second was checked"
    finally:
        first.join(timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"PID {os.getpid()} on host {socket.gethostname()}" in second.stderr
    assert "in use by another driver" in second.stderr and "Traceback" not in second.stderr
    assert "ray:" not in second.stdout  # refused before connecting
    assert result["rc"] == 0 and json.loads((run_dir / RUN_JSON).read_text())["resumes"] == []
    assert json.loads(before)["config_hash"] == json.loads((run_dir / RUN_JSON).read_text())["config_hash"]
    with RunLock.acquire(run_dir) as lock:  # the first driver released it when it returned
        assert lock.holder["pid"] == os.getpid()


def test_row1_lock_dies_with_its_process_and_a_refused_resume_touches_nothing(demo_run, tmp_path, capsys):
    run_dir = _copy(demo_run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from cluster.rundir import RunLock; "
         "RunLock.acquire(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)", str(run_dir)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(run_dir)
        rc = demo_sweep.main(["--resume", str(run_dir), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and _one_paragraph(err), err
        assert f"PID {holder.pid} on host {socket.gethostname()}" in err and f"kill {holder.pid}" in err
        assert _snapshot(run_dir) == before  # run.json, journal, parts and the holder's lock record
        with pytest.raises(ResultsError, match=f"PID {holder.pid}"):
            RunLock.acquire(run_dir)  # per open file description: this process is refused too
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    with RunLock.acquire(run_dir):  # the kernel released the SIGKILLed holder's lock
        pass
    assert demo_sweep.main(["--resume", str(run_dir), "--no-progress"]) == 0


# -- row 2: run.json only grows -----------------------------------------------------------------
def test_row2_rejected_resume_leaves_run_json_unchanged(demo_run, tmp_path, capsys):
    run_dir = _copy(demo_run, tmp_path)
    original = json.loads((run_dir / RUN_JSON).read_text())
    before = _snapshot(run_dir)
    for bad, needle in (
        (["--set", 'objectives=["accuracy", "fit_seconds"]'], "objectives ['accuracy'] -> "),
        (["--set", "C=[2.0]"], "search space of C"),
        (["--sampler", "tpe"], "search space of C"),
    ):
        rc = demo_sweep.main(["--resume", str(run_dir), "--no-progress", *bad])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and _one_paragraph(err), err
        assert _snapshot(run_dir) == before, bad  # nothing written: not run.json, not the journal
    assert demo_sweep.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert demo_sweep.main(["--resume", str(run_dir), "--no-progress", "--set", "study.actors=1"]) == 0
    record = json.loads((run_dir / RUN_JSON).read_text())
    assert record["config"] == original["config"] and record["config_hash"] == original["config_hash"]
    assert record["created"] == original["created"] and record["versions"] == original["versions"]
    first, second = record["resumes"]
    assert first["overrides"] == [] and first["config_hash"] == original["config_hash"]
    assert second["overrides"] == ["study.actors=1"] and second["config"]["study"]["actors"] == 1
    assert second["config_hash"] != original["config_hash"] and "time" in second and "versions" in second
    # the next resume starts from the latest accepted start's config
    assert demo_sweep.main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / RUN_JSON).read_text())["resumes"][-1]["config"]["study"]["actors"] == 1


# -- rows 4 and 5: paths --------------------------------------------------------------------------
def test_row4_out_that_is_a_file_is_a_results_error(tmp_path, capsys):
    target = tmp_path / "not-a-dir"
    target.write_text("precious")
    for out in (target, target / "below"):
        rc = demo_sweep.main(["--out", str(out), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and _one_paragraph(err) and "not a directory" in err and "--out" in err, err
    from sweeps import bench_galvo3d

    rc = bench_galvo3d.main(["--out", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "not a directory" in err, err
    assert target.read_text() == "precious" and os.listdir(tmp_path) == ["not-a-dir"]


def test_row4_out_in_a_read_only_directory_is_a_results_error(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    rc = demo_sweep.main(["--out", str(ro / "results"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "read-only" in err and "--out" in err, err
    assert os.listdir(ro) == []


def test_row4_erofs_while_creating_the_run_directory_is_a_results_error(tmp_path, monkeypatch):
    import errno

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ResultsError, match="Read-only file system.*--out"):
        open_new_run(ResultsRoot(tmp_path / "r", "--out"), "demo_sweep", "x")


@pytest.mark.parametrize("run_id", ["../../escape", "a/b", "", ".hidden", "..", ".", "a\\b", "x" * 200])
def test_row5_run_id_must_be_one_path_component(tmp_path, capsys, run_id):
    out = tmp_path / "root" / "results"
    rc = demo_sweep.main(["--out", str(out), "--run-id", run_id, *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "--run-id" in err, err
    assert os.listdir(tmp_path) == []  # nothing inside the results root, nothing outside it
    from sweeps import bench_galvo3d

    assert bench_galvo3d.main(["--out", str(out), "--run-id", run_id]) == 2
    assert os.listdir(tmp_path) == []


# -- row 6: a failed start -----------------------------------------------------------------------
def test_row6_failed_start_leaves_no_run_dir_and_names_num_cpus(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "sweeps/demo_sweep.py", "--out", str(out), "--no-progress"]
    failed = subprocess.run(cmd + ["--num-cpus", "0"], cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=90)
    assert failed.returncode == 2 and "--num-cpus" in failed.stderr, failed.stderr
    assert _one_paragraph(failed.stderr) and not out.exists()
    bare = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=90)
    assert bare.returncode == 2 and "no earlier run" in bare.stderr, bare.stderr


def test_row6_ray_start_up_error_names_num_cpus(tmp_path, capsys, monkeypatch):
    import ray

    from cluster import sweep_cli

    def fail(*args, **kwargs):
        raise ValueError("When connecting to an existing cluster, num_cpus and num_gpus must not be set.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(sweep_cli, "connect", fail)
    rc = demo_sweep.main(["--out", str(tmp_path), "--num-cpus", "2", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "--num-cpus 2" in err and "ValueError" in err, err
    assert os.listdir(tmp_path) == []


def test_row6_start_that_fails_after_the_directory_was_made_removes_it(ray_local, tmp_path, capsys,
                                                                       monkeypatch):
    from cluster import sweep_cli

    seen = []

    def fail(spec, run_dir, *args, **kwargs):
        seen.append(sorted(os.listdir(run_dir)))  # created and locked, nothing else yet
        (run_dir / "optuna.journal").write_text("")
        raise ConfigError("the study could not be opened")

    monkeypatch.setattr(sweep_cli, "StudyRunner", fail)
    rc = demo_sweep.main(["--out", str(tmp_path / "results"), "--run-id", "gone", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "could not be opened" in err and seen == [[LOCK_FILE]]
    assert os.listdir(tmp_path) == []


def test_row6_latest_run_skips_directories_without_a_start_record(tmp_path):
    base = tmp_path / "demo_sweep"
    good = base / "a-good"
    good.mkdir(parents=True)
    record = {"sweep": "demo_sweep", "run_id": "a-good", "config": {}, "config_hash": "0", "started": "t"}
    (good / RUN_JSON).write_text(json.dumps(record))
    time.sleep(0.01)
    legacy_failed = base / "b-failed"  # an earlier version wrote run.json before the start failed
    legacy_failed.mkdir()
    (legacy_failed / RUN_JSON).write_text(json.dumps({k: v for k, v in record.items() if k != "started"}))
    (legacy_failed / "optuna.journal").write_text("")
    (base / "c-torn").mkdir()
    (base / "c-torn" / RUN_JSON).write_text("{not json")
    (base / "d-nothing").mkdir()
    assert start_record(legacy_failed) is None and start_record(base / "c-torn") is None
    assert latest_run(tmp_path, "demo_sweep") == good
    shutil.rmtree(good)
    with pytest.raises(ResultsError, match="3 directories there hold no completed start record"):
        latest_run(tmp_path, "demo_sweep")


# -- row 7: another sweep's run --------------------------------------------------------------------
@pytest.mark.parametrize("kind", [None, "benchmark"])
def test_row7_resume_of_another_sweeps_run_names_that_sweep(tmp_path, capsys, kind):
    run_dir = tmp_path / "roofline_sweep" / "r"
    run_dir.mkdir(parents=True)
    record = {"sweep": "roofline_sweep", "run_id": "r", "config": {"batch": 1}, "config_hash": "0"}
    (run_dir / RUN_JSON).write_text(json.dumps({**record, **({"kind": kind} if kind else {})}))
    before = _snapshot(run_dir)
    rc = demo_sweep.main(["--resume", str(run_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "this run belongs to roofline_sweep" in err, err
    how = "does not resume" if kind else f"python sweeps/roofline_sweep.py --resume {run_dir}"
    assert how in err
    assert "Unknown config key" not in err and _snapshot(run_dir) == before
    assert not (run_dir / LOCK_FILE).exists()


# -- row 11: --set messages -------------------------------------------------------------------------
@pytest.mark.parametrize("config_cls", [demo_sweep.DemoSweepConfig, ToySweepConfig])
def test_row11_set_without_equals_gives_an_example_that_is_a_real_key(config_cls):
    cfg = config_cls()
    for text in ("study.actors", "study.actorz", "nonsense", ""):
        with pytest.raises(ConfigError) as exc:
            apply_overrides(cfg, [text])
        msg = str(exc.value)
        assert "sweep.n_trials" not in msg and "--set expects KEY=VALUE" in msg
        example = msg.split("For example --set ")[1].split(" ")[0]
        assert example.split("=")[0] in all_keys(config_cls)
        apply_overrides(cfg, [example])  # the example itself is accepted
    assert example_override(cfg, "study.actors") == f"study.actors={cfg.study.actors}"


def test_row11_set_without_equals_through_the_cli(tmp_path, capsys):
    rc = demo_sweep.main(["--out", str(tmp_path), "--set", "study.actors"])
    err = capsys.readouterr().err
    assert rc == 2 and _one_paragraph(err) and "For example --set study.actors=2" in err, err


def test_row11_did_you_mean_lists_closest_first():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(demo_sweep.DemoSweepConfig(), ["study.verison=2"])
    assert "Did you mean study.version, task.version, version?" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        apply_overrides(demo_sweep.DemoSweepConfig(), ["n_trials=5"])
    assert "Did you mean study.n_trials" in str(exc.value)
    assert closest("ab", ["aa", "ad", "ac", "abc"]) == ["abc", "aa", "ac"]  # ties by name
    assert did_you_mean("qdorp", ["brecq", "qdrop", "qdrops"]) == "Did you mean 'qdrop', 'qdrops'?"
