"""cluster/search.py: spaces, grids, seeds and samplers, without a cluster; Optuna's public API only."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cluster import search, study
from cluster.search import (
    StudyConfig,
    derive_seed,
    distributions,
    grid_points,
    make_pruner,
    make_sampler,
    params_key,
)
from methods.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_plain_entries_and_optuna_distributions_both_make_a_space():
    space = {
        "a": ("categorical", ["w8a8", "w4a8"]),
        "b": ("float", 1e-3, 1.0, "log"),
        "c": ("int", 2, 10, 2),
        "d": FloatDistribution(0.0, 1.0),
    }
    d = distributions(space)
    assert d["a"] == CategoricalDistribution(["w8a8", "w4a8"])
    assert d["b"] == FloatDistribution(1e-3, 1.0, log=True) and d["c"] == IntDistribution(2, 10, step=2)
    assert d["d"] is space["d"]
    with pytest.raises(ConfigError, match="not understood"):
        distributions({"x": ("normal", 0, 1)})


def test_grid_is_the_product_in_declared_order_last_varies_fastest():
    space = {"x": ("categorical", [1, 2]), "y": CategoricalDistribution(["a", "b"])}
    assert grid_points(space) == [
        {"x": 1, "y": "a"},
        {"x": 1, "y": "b"},
        {"x": 2, "y": "a"},
        {"x": 2, "y": "b"},
    ]
    with pytest.raises(ConfigError, match="sampler tpe/nsga2/random"):
        grid_points({"x": ("float", 0.0, 1.0)})


def test_seeds_are_stable_and_distinct_and_params_key_is_canonical():
    assert derive_seed(0, 3) == derive_seed(0, 3) != derive_seed(0, 4) != derive_seed(1, 4)
    assert 0 <= derive_seed(123, 456) < 2**31
    assert params_key({"b": 1, "a": "x"}) == params_key({"a": "x", "b": 1}) == '{"a": "x", "b": 1}'


def test_sampler_and_pruner_follow_the_study_config():
    assert isinstance(make_sampler(StudyConfig(sampler="tpe"), 1), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(StudyConfig(sampler="nsga2"), 2), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler(StudyConfig(sampler="grid"), 1), optuna.samplers.RandomSampler)
    assert isinstance(make_pruner(StudyConfig(pruner="median"), 1), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(StudyConfig(pruner="median"), 2), optuna.pruners.NopPruner)


def test_study_keeps_exporting_the_names_sweeps_import():
    assert study.StudyConfig is search.StudyConfig and study.StudySpec is search.StudySpec


# Optuna internals the driver once relied on: storage handles, trial ids, the enqueued-params
# system attribute, private modules.
PRIVATE = re.compile(r"\._storage\b|\._trial_id\b|fixed_params|\boptuna(\.\w+)*\._\w|from optuna[\w.]*\._")


def test_no_private_optuna_attribute_is_used():
    files = sorted((REPO / "cluster").glob("*.py")) + sorted((REPO / "sweeps").glob("*.py"))
    hits = [
        f"{f.relative_to(REPO)}:{i}: {line.strip()}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert files and not hits, hits


def test_resume_opens_the_study_without_appending_to_the_journal(tmp_path):
    """A resume loads the study; create_study(load_if_exists) appended a CREATE_STUDY record each time."""
    spec = search.StudySpec(
        sweep="x",
        objectives=("a",),
        directions=("minimize",),
        space={"p": ("categorical", [1, 2])},
        task_factory=lambda: None,
        study=search.StudyConfig(),
    )
    search.open_study(spec, tmp_path)
    journal = (tmp_path / search.JOURNAL).read_bytes()
    search.open_study(spec, tmp_path)
    assert (tmp_path / search.JOURNAL).read_bytes() == journal
    other = search.StudySpec(**{**spec.__dict__, "directions": ("maximize",)})
    with pytest.raises(ConfigError, match="optimises"):
        search.open_study(other, tmp_path)
    assert (tmp_path / search.JOURNAL).read_bytes() == journal
