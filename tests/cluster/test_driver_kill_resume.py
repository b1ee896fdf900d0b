"""A driver killed with SIGKILL mid-sweep, then `--resume`: the study finishes with no duplicate
COMPLETE rows and no lost flushed rows (issue 2)."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from cluster.headnode import _terminate, our_processes
from cluster.results import read_table, summarise_trials

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(args, ray_tmp):
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": ray_tmp, "PYTHONPATH": REPO}
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.testing", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _rows(run_dir):
    try:
        return read_table(run_dir).to_pylist()
    except FileNotFoundError:
        return []


def test_sigkilled_driver_resumes_without_duplicates_or_losses(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="evfk-", dir="/tmp")  # short: Ray puts unix sockets below it
    out = tmp_path / "results"
    run_dir = out / "toy_sweep" / "kill"
    common = ["--out", str(out), "--no-progress", "--num-cpus", "2"]
    proc = _spawn(common + ["--run-id", "kill", "--set", "sleep=1.5"], ray_tmp)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            done = [r for r in _rows(run_dir) if r["row_kind"] == "trial" and r["state"] == "COMPLETE"]
            if len(done) >= 3:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
        else:
            raise AssertionError("the sweep landed no rows in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(1.0)
        before = _rows(run_dir)
        assert len(before) < 12
        resumed = _spawn(common + ["--resume", str(run_dir)], ray_tmp)
        output, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, output
        assert output.strip().splitlines()[-1].startswith("summary: ")
    finally:
        for p in (proc,):
            if p.poll() is None:
                p.kill()
        _terminate(our_processes(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    after = _rows(run_dir)
    trials = summarise_trials(read_table(run_dir))
    complete = collections.Counter((r["x"], r["y"]) for r in trials if r["state"] == "COMPLETE")
    assert len(complete) == 12 and set(complete.values()) == {1}, complete
    key = lambda r: (r["row_kind"], r["trial_number"], r["attempt"], r["state"])  # noqa: E731
    assert (
        collections.Counter(map(key, before)) - collections.Counter(map(key, after)) == collections.Counter()
    )
    interrupted = [r for r in trials if r["state"] == "FAIL"]
    assert all("driver stopped" in r["error"] for r in interrupted)
