"""Explicit grid points (`StudySpec.grid`): enumerated exactly, validated, resumed without duplicates."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import ray

from cluster.results import read_table, summarise_trials
from cluster.search import grid_points
from cluster.study import StudyConfig, StudyRunner
from cluster.testing import toy_spec
from methods.errors import ConfigError

SPACE = {"x": ("categorical", [0, 1, 2, 3]), "y": ("categorical", [0, 1, 2])}
# not a product: x=3 only with y=0, and listed out of the space's order
POINTS = ({"x": 2, "y": 1}, {"x": 0, "y": 0}, {"x": 3, "y": 0}, {"x": 1, "y": 2}, {"x": 0, "y": 2})


def _with_grid(spec, grid):
    return dataclasses.replace(spec, grid=grid)  # re-validates in __post_init__


def _spec(grid=POINTS, **study):
    return _with_grid(
        toy_spec(study=StudyConfig(sampler="grid", **{"actors": 2, **study}), space=SPACE), grid
    )


def _complete(run_dir):
    trials = summarise_trials(read_table(run_dir))
    return trials, collections.Counter((r["x"], r["y"]) for r in trials if r["state"] == "COMPLETE")


def test_grid_points_are_the_explicit_list_in_order():
    assert grid_points(SPACE, POINTS) == [dict(p) for p in POINTS]
    assert len(grid_points(SPACE)) == 12  # no list: the product, as before
    assert _spec().grid == POINTS


@pytest.mark.parametrize(
    "point, needle",
    [
        ({"x": 2}, "missing ['y']"),
        ({"x": 2, "y": 1, "z": 0}, "unknown ['z']"),
        ({"x": 7, "y": 1}, "x=7 (int) is not one of the space's choices for x: [0, 1, 2, 3]"),
        ({"x": "2", "y": 1}, "x='2' (str)"),
        ({"x": True, "y": 1}, "x=True (bool)"),
    ],
)
def test_an_invalid_point_is_refused_naming_the_point_and_the_key(point, needle):
    with pytest.raises(ConfigError) as exc:
        _spec(grid=({"x": 0, "y": 0}, point))
    assert "grid point 1" in str(exc.value) and needle in str(exc.value)


def test_duplicate_points_empty_lists_and_non_categorical_spaces_are_refused():
    with pytest.raises(ConfigError, match="repeats point 0"):
        _spec(grid=({"x": 0, "y": 0}, {"x": 0, "y": 0}))
    with pytest.raises(ConfigError, match="non-empty"):
        _spec(grid=())
    with pytest.raises(ConfigError, match="categorical"):
        _with_grid(
            toy_spec(space={"x": ("float", 0.0, 1.0)}, study=StudyConfig(sampler="tpe")), ({"x": 0.5},)
        )


def test_an_int_stands_for_an_equal_float_choice_and_is_stored_as_the_choice():
    spec = _with_grid(toy_spec(space={"x": ("categorical", [0.5, 1.0])}), ({"x": 1},))
    assert spec.grid == ({"x": 1.0},) and isinstance(spec.grid[0]["x"], float)


def test_the_driver_enumerates_exactly_the_listed_points(ray_local, tmp_path):
    outcome = StudyRunner(_spec(), tmp_path, "grid-run", progress=False).run()
    trials, complete = _complete(tmp_path)
    assert outcome.complete == len(POINTS) and outcome.failed == 0
    assert set(complete.values()) == {1} and set(complete) == {(p["x"], p["y"]) for p in POINTS}
    order = [(r["x"], r["y"]) for r in sorted(trials, key=lambda r: r["trial_number"])]
    assert order == [(p["x"], p["y"]) for p in POINTS]  # enqueued (and numbered) in list order


def test_resume_with_a_grid_list_does_not_duplicate_points(ray_local, tmp_path):
    # first driver: 2 points done, then it "dies" leaving one trial RUNNING and the rest WAITING
    StudyRunner(_spec(n_trials=2), tmp_path, "grid-run", progress=False).run()
    second = StudyRunner(_spec(), tmp_path, "grid-run", progress=False)
    assert second.enqueue_grid() == len(POINTS) - 2
    second._count_waiting_and_logical()
    assert second._next_trial() is not None  # asked (RUNNING), never told
    second.journal.flush()  # the loop flushes its asks before an actor sees them (issue 20)
    ray.get(second.sink.close.remote())
    outcome = StudyRunner(_spec(), tmp_path, "grid-run", progress=False).run(resume=True)
    trials, complete = _complete(tmp_path)
    assert set(complete) == {(p["x"], p["y"]) for p in POINTS} and set(complete.values()) == {1}
    interrupted = [r for r in trials if r["state"] == "FAIL"]
    assert len(interrupted) == 1 and "driver stopped" in interrupted[0]["error"]
    assert outcome.complete == len(POINTS) - 2 and outcome.retried == 1


def test_dry_run_prints_every_explicit_point(capsys):
    from cluster.sweep_cli import _dry_run

    spec = _spec()
    assert _dry_run(spec.study, spec) == 0
    out = capsys.readouterr().out
    assert f"grid: {len(POINTS)} points; explicit points:" in out
    assert all(f"{dict(p)}" in out for p in POINTS) and out.strip().splitlines()[-1] == "summary: dry_run=1"
