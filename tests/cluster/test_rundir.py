"""Where results land (issue 2): --out, then $EVFARM_RESULTS, then ./results — except under a
Ray job, whose working directory is a temporary copy that Ray deletes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.connect import JOB_ENV_VAR
from cluster.rundir import check_run_dir, create_run_dir, latest_run, resolve_results_root
from methods.errors import ResultsError


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVFARM_RESULTS", raising=False)
    monkeypatch.delenv(JOB_ENV_VAR, raising=False)
    assert resolve_results_root(None).path == tmp_path / "results"
    monkeypatch.setenv("EVFARM_RESULTS", str(tmp_path / "env"))
    assert resolve_results_root(None).path == tmp_path / "env"
    assert resolve_results_root(tmp_path / "flag").path == tmp_path / "flag"


def test_under_ray_job_the_default_outlives_the_working_dir(monkeypatch, tmp_path):
    job_copy = tmp_path / "ray" / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    job_copy.mkdir(parents=True)
    monkeypatch.chdir(job_copy)
    monkeypatch.delenv("EVFARM_RESULTS", raising=False)
    monkeypatch.setenv(JOB_ENV_VAR, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}}))
    root = resolve_results_root(None)
    assert root.path == Path.home().resolve() / "evfarm-results"
    assert job_copy not in root.path.parents and "ray job" in root.reason
    monkeypatch.setenv("EVFARM_RESULTS", str(tmp_path / "shared"))
    assert resolve_results_root(None).path == tmp_path / "shared"  # an explicit choice still wins


def test_run_dirs_are_never_reused_and_must_be_runs(tmp_path):
    run = create_run_dir(tmp_path, "demo", "r1")
    record = {"sweep": "demo", "run_id": "r1", "config": {}, "config_hash": "0", "started": "now"}
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(ResultsError, match="--resume"):
        create_run_dir(tmp_path, "demo", "r1")
    assert check_run_dir(run) == run and latest_run(tmp_path, "demo") == run
    with pytest.raises(ResultsError, match="Runs found below it"):
        check_run_dir(tmp_path)
    with pytest.raises(ResultsError, match="no earlier run"):
        latest_run(tmp_path, "other")
