"""The farm's failure behaviour on a local Ray cluster (issue 2)."""

from __future__ import annotations

import collections

import pytest
from task_hooks import Faults, with_faults

from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudyRunner, derive_seed
from cluster.testing import toy_spec


def _run(tmp_path, spec, resume=False):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return StudyRunner(spec, run_dir, "test-run", progress=False).run(resume=resume), run_dir


def test_grid_with_actor_death_completes_every_point_exactly_once(ray_local, tmp_path):
    spec = with_faults(
        toy_spec(study=StudyConfig(sampler="grid", actors=2), sleep=0.05),
        Faults(marker_dir=str(tmp_path), crash_at={"x": 1, "y": 2}),
    )
    outcome, run_dir = _run(tmp_path, spec)
    trials = summarise_trials(read_table(run_dir))
    complete = collections.Counter((r["x"], r["y"]) for r in trials if r["state"] == "COMPLETE")
    assert len(complete) == 12 and set(complete.values()) == {1}
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert len(failed) == 1 and (failed[0]["x"], failed[0]["y"]) == (1, 2)
    assert "Actor" in failed[0]["error"] or "actor" in failed[0]["error"]
    retry = [r for r in trials if r["state"] == "COMPLETE" and (r["x"], r["y"]) == (1, 2)][0]
    assert retry["attempt"] == 2 and retry["seed"] == failed[0]["seed"]  # a retry keeps its seed
    assert outcome.complete == 12 and outcome.failed == 1 and outcome.retried == 1
    for r in trials:
        if r["state"] == "COMPLETE":
            assert r["loss"] == pytest.approx((r["x"] - 2) ** 2 + r["y"])


def test_task_exception_fails_without_retry_and_the_sweep_goes_on(ray_local, tmp_path):
    spec = with_faults(
        toy_spec(study=StudyConfig(sampler="grid", actors=2)), Faults(raise_at={"x": 3, "y": 0})
    )
    outcome, run_dir = _run(tmp_path, spec)
    trials = summarise_trials(read_table(run_dir))
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert len(failed) == 1 and "injected failure at x=3 y=0" in failed[0]["error"]
    assert "ValueError" in failed[0]["error"]
    assert outcome.complete == 11 and outcome.retried == 0


def test_pruning_stops_poor_trials_between_chunks(ray_local, tmp_path):
    spec = toy_spec(
        study=StudyConfig(sampler="grid", actors=1, n_chunks=3, pruner="median"),
        space={"x": ("categorical", [2, 2.5, 10, 20, 30, 40]), "y": ("categorical", [0])},
    )
    outcome, run_dir = _run(tmp_path, spec)
    table = read_table(run_dir)
    trials = summarise_trials(table)
    assert outcome.pruned >= 1 and outcome.complete + outcome.pruned == 6
    pruned = [r for r in trials if r["state"] == "PRUNED"]
    assert all(r["x"] >= 10 for r in pruned)  # only the poor points are stopped
    chunk_rows = [r for r in table.to_pylist() if r["row_kind"] == "chunk"]
    assert chunk_rows and all(r["intermediate"] is not None for r in chunk_rows)


def test_multi_objective_nsga2_and_tpe_run_their_trial_budget(ray_local, tmp_path):
    space = {"x": ("float", -2.0, 6.0), "y": ("int", 0, 3)}
    spec = toy_spec(
        study=StudyConfig(sampler="nsga2", actors=2, n_trials=8, seed=3),
        objectives=("loss", "neg"),
        space=space,
    )
    outcome, _ = _run(tmp_path / "a", spec) if (tmp_path / "a").mkdir() is None else None
    assert outcome.complete == 8 and outcome.best and all("loss" in b for b in outcome.best)
    spec = toy_spec(study=StudyConfig(sampler="tpe", actors=2, n_trials=6, seed=3), space=space)
    outcome, run_dir = _run(tmp_path / "b", spec) if (tmp_path / "b").mkdir() is None else None
    trials = summarise_trials(read_table(run_dir))
    assert outcome.complete == 6 and len(trials) == 6
    assert {r["seed"] for r in trials} == {derive_seed(3, n) for n in range(6)}


def test_retried_chunked_trial_resumes_from_its_last_checkpoint(ray_local, tmp_path):
    spec = with_faults(
        toy_spec(
            study=StudyConfig(sampler="grid", actors=1, n_chunks=3),
            space={"x": ("categorical", [1, 2]), "y": ("categorical", [0])},
        ),
        Faults(marker_dir=str(tmp_path), crash_at={"x": 2, "y": 0}, crash_chunk=2),
    )
    outcome, run_dir = _run(tmp_path, spec)
    rows = read_table(run_dir).to_pylist()
    final = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE" and r["x"] == 2][0]
    assert final["attempt"] == 2 and final["chunks_seen"] == "0,1,2"  # chunks 0,1 carried by the checkpoint
    details = [r["step"] for r in rows if r["row_kind"] == "detail" and r["x"] == 2]
    assert sorted(details) == [0, 1]  # no chunk landed twice
    assert outcome.complete == 2 and outcome.failed == 1


def test_a_profile_the_cluster_cannot_place_is_refused_not_hung(ray_local, tmp_path):
    from cluster.resources import actors_that_fit
    from methods.errors import EvfarmUserError

    with pytest.raises(EvfarmUserError, match="cannot place a single actor"):
        actors_that_fit("rig_virtual", 2)  # the shared test cluster has no galvo_rig
    assert actors_that_fit("evaluator_cpu1", 5) == 2  # 2 CPUs: a smaller pool, not a hang
