"""The farm's failure scenarios at scale (issue 20, slow tier): 64 actors, 2,000 trials.

The same three scenarios as tests/cluster/test_study_failures.py, test_driver_kill_resume.py and
test_cli_results.py, with many actors and many trials in flight (two per actor), where the
round-based loop (one sink append and one journal flush per round) matters:
- an actor dies mid-trial: every grid point completes exactly once, the lost trials are retried;
- the sink is killed mid-sweep: it restarts, recovers its segment, no row is lost or doubled;
- the driver is SIGKILLed mid-sweep and resumed: no duplicate COMPLETE rows, no lost landed rows.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from task_hooks import Faults, with_faults

from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudyRunner
from cluster.testing import toy_spec

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 2000
ACTORS = 64
SPACE = {"x": ("categorical", list(range(N // 2))), "y": ("categorical", [0, 1])}


@pytest.fixture(scope="module")
def ray_64():
    import ray

    from cluster.connect import connect

    if ray.is_initialized():
        ray.shutdown()
    connect(num_cpus=ACTORS + 2, local=True, log_to_driver=False)  # logical CPUs: 64 one-CPU actors
    yield
    ray.shutdown()


def _spec(overlap: bool = False, **task):
    study = StudyConfig(sampler="grid", actors=ACTORS, inflight_per_actor=2, overlap_land=overlap)
    return toy_spec("scale", study, space=SPACE, **task)


def _exactly_once(run_dir) -> list[dict]:
    trials = summarise_trials(read_table(run_dir))
    complete = collections.Counter((r["x"], r["y"]) for r in trials if r["state"] == "COMPLETE")
    assert len(complete) == N and set(complete.values()) == {1}
    return trials


@pytest.mark.parametrize("overlap", [False, True], ids=["sync-land", "overlap-land"])
def test_actor_death_at_64_actors(ray_64, tmp_path, overlap):
    faults = Faults(marker_dir=str(tmp_path), crash_at={"x": 300, "y": 1})
    spec = with_faults(_spec(overlap, sleep=0.01), faults)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outcome = StudyRunner(spec, run_dir, "scale", progress=False).run()
    trials = _exactly_once(run_dir)
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert 1 <= len(failed) <= 2 and outcome.retried == len(failed)  # the dead actor's queue
    assert any((r["x"], r["y"]) == (300, 1) for r in failed)


@pytest.mark.parametrize("overlap", [False, True], ids=["sync-land", "overlap-land"])
def test_sink_kill_at_64_actors(ray_64, tmp_path, overlap):
    import ray

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runner = StudyRunner(_spec(overlap, sleep=0.01), run_dir, "scale", progress=False)
    killed = []

    def on_progress(outcome):
        if outcome.complete >= N // 3 and not killed:
            killed.append(outcome.complete)
            ray.kill(runner.sink, no_restart=False)  # the sink restarts (max_restarts=-1)

    outcome = runner.run(on_progress=on_progress)
    assert killed and outcome.complete == N
    _exactly_once(run_dir)
    rows = read_table(run_dir).to_pylist()
    key = collections.Counter((r["trial_number"], r["attempt"], r["row_kind"]) for r in rows)
    assert set(key.values()) == {1}  # no row landed twice


def _driver(out: str, resume: bool, overlap: bool = False) -> str:
    return textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {REPO!r})
        from cluster.connect import connect
        from cluster.study import StudyConfig, StudyRunner
        from cluster.testing import toy_spec
        connect(num_cpus={ACTORS + 2}, local=True, log_to_driver=False)
        space = {{"x": ("categorical", list(range({N // 2}))), "y": ("categorical", [0, 1])}}
        spec = toy_spec("scale", StudyConfig(sampler="grid", actors={ACTORS}, inflight_per_actor=2,
                                                 overlap_land={overlap}), space=space, sleep=0.05)
        o = StudyRunner(spec, Path({out!r}), "scale", progress=False).run(resume={resume})
        print("done", o.complete, o.failed)
    """)


@pytest.mark.parametrize("overlap", [False, True], ids=["sync-land", "overlap-land"])
def test_driver_sigkill_and_resume_at_64_actors(tmp_path, overlap):
    from cluster.headnode import _terminate, our_processes

    ray_tmp = tempfile.mkdtemp(prefix="evfs-", dir="/tmp")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)

    def spawn(resume):
        return subprocess.Popen(
            [sys.executable, "-c", _driver(str(run_dir), resume, overlap)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    proc = spawn(False)
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            try:
                done = [r for r in read_table(run_dir).to_pylist() if r["row_kind"] == "trial"]
            except FileNotFoundError:
                done = []
            if len(done) >= 300:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        else:
            raise AssertionError("the sweep landed too few rows in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _terminate(our_processes(ray_tmp))
        time.sleep(1.0)
        before = read_table(run_dir).to_pylist()
        assert len(before) < N
        resumed = spawn(True)
        output, _ = resumed.communicate(timeout=900)
        assert resumed.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
        _terminate(our_processes(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    trials = _exactly_once(run_dir)
    after = read_table(run_dir).to_pylist()
    key = lambda r: (r["row_kind"], r["trial_number"], r["attempt"], r["state"])  # noqa: E731
    assert (
        collections.Counter(map(key, before)) - collections.Counter(map(key, after)) == collections.Counter()
    )
    assert all("driver stopped" in r["error"] for r in trials if r["state"] == "FAIL")
