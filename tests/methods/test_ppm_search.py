"""Search strategies: PPM vs baselines, duplicate merging, inverse-variance refinement."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.ppm_search import (
    PPM,
    SEARCH_METHODS,
    PPMSearchConfig,
    RasterConfig,
    inverse_variance_fuse,
    merge_detections,
)
from sims.rigs.search_rig import SearchRigConfig, build_session, evaluate_search

SEEDS = range(10)


@dataclass
class Det:
    v: np.ndarray
    var: float
    conf: float
    shot: int


@pytest.fixture(scope="module")
def runs():
    """One run per (method, seed) on the default rig (strong road prior), shared by the tests."""
    out = {}
    for name, cfg in [("raster", None), ("uniform", None), ("ppm", None), ("ppm_search", None),
                      ("ppm_search_nofuse", PPMSearchConfig(fuse=False))]:
        method = "ppm_search" if name.startswith("ppm_search") else name
        out[name] = [evaluate_search(None, method, cfg, seed) for seed in SEEDS]
    return out


def _mean(rows, key):
    return float(np.nanmean([r[key] for r in rows]))


def test_ppm_beats_uniform_and_raster_at_equal_shots(runs):
    ppm, uni, ras = (_mean(runs[k], "recall") for k in ("ppm", "uniform", "raster"))
    assert all(r["n_shots"] == 145 for k in runs for r in runs[k])
    assert ppm >= 1.5 * uni           # systems.md target; measured ≈ 2×
    assert ppm > ras


def test_probability_search_refines_localisation(runs):
    # Measured on these seeds: fused 0.0083 V; best single look at the same tracks 0.0104 V
    # (−20 %); PPM alone, one look per target, 0.0246 V (−66 %). The ≥ 30 % cut of systems.md
    # holds against one look without the search, not against the best of the re-shots.
    fused = _mean(runs["ppm_search"], "loc_err_v")
    single = _mean(runs["ppm_search"], "loc_err_single_v")
    assert fused < 0.9 * single
    assert fused < 0.9 * _mean(runs["ppm_search_nofuse"], "loc_err_v")
    assert fused < 0.7 * _mean(runs["ppm"], "loc_err_v")


def test_inverse_variance_fusion_beats_the_average_single_observation():
    rng = np.random.default_rng(0)
    sig = np.array([0.01, 0.02, 0.04, 0.08])
    fused_err, single_err = [], []
    for _ in range(2000):
        obs = rng.normal(size=(4, 2)) * sig[:, None]
        est, var = inverse_variance_fuse(obs, sig ** 2)
        fused_err.append(np.linalg.norm(est))
        single_err.append(np.linalg.norm(obs, axis=1).mean())
    assert var == pytest.approx(1 / (1 / sig ** 2).sum())
    assert np.mean(fused_err) < 0.5 * np.mean(single_err)
    assert np.mean(fused_err) < np.mean(np.linalg.norm(rng.normal(size=(2000, 2)) * 0.01, axis=1)) * 1.05


def test_duplicates_merge_and_distinct_targets_do_not():
    dets = [Det(np.array([0.0, 0.0]), 1e-4, 0.9, 0), Det(np.array([0.05, 0.03]), 4e-4, 0.7, 1),
            Det(np.array([0.3, 0.0]), 1e-4, 0.8, 2)]
    tracks = merge_detections(dets, merge_l1_v=0.12, fuse=True)
    assert len(tracks) == 2
    pair = max(tracks, key=lambda t: len(t.obs_v))
    assert len(pair.obs_v) == 2 and pair.shots == {0, 1}
    assert np.allclose(pair.estimate, [0.01, 0.006])          # weights 4:1 towards the sharper one
    assert np.allclose(pair.best_single, [0.0, 0.0])
    again = merge_detections([Det(np.array([0.29, 0.01]), 1e-4, 0.6, 3)], 0.12, True, tracks)
    assert len(again) == 2                                     # joins the existing track


def test_tracks_that_drift_together_are_merged():
    dets = [Det(np.array([0.0, 0.0]), 1e-4, 0.9, 0), Det(np.array([0.2, 0.0]), 1e-4, 0.8, 1)]
    tracks = merge_detections(dets, 0.12, True)
    bridge = Det(np.array([0.1, 0.0]), 1e-6, 0.95, 2)         # pulls one track next to the other
    assert len(merge_detections([bridge], 0.12, True, tracks)) == 1


def test_ppm_puts_area_times_prior_mass_on_each_class():
    session, _, _ = build_session(SearchRigConfig(), seed=0)
    ppm = PPM(session, gamma=1.0, explore=0.0)
    labels = session.labels.ravel()
    inside = np.abs(ppm.v).max(axis=1) <= session.field_v / 2
    area = np.bincount(labels[inside], minlength=len(session.class_names)).astype(float)
    want = area * session.class_priors
    got = np.bincount(labels, weights=ppm.weight, minlength=len(want))
    assert np.allclose(got, want / want.sum())


def test_configs_validate_and_declare_search_spaces():
    with pytest.raises(ConfigError, match="budget"):
        RasterConfig(budget=0)
    with pytest.raises(ConfigError, match="planner"):
        PPMSearchConfig(planner="ortools")
    with pytest.raises(ConfigError, match="r_min_fov"):
        PPMSearchConfig(r_min_fov=1.0, r_max_fov=0.5)
    assert SEARCH_METHODS.names() == ["ppm", "ppm_search", "raster", "uniform"]
    for name in SEARCH_METHODS.names():
        spec = SEARCH_METHODS.get(name)
        cfg = spec.config_cls()
        assert cfg.to_dict()["version"] == 1
        for key in cfg.search_space():
            assert key in cfg.to_dict()
