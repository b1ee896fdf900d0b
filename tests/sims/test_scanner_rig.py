"""The multi-galvanometer scanner rig: entry point, measured volume, static baseline."""
from __future__ import annotations

import numpy as np
import pytest

from methods import galvo3d as g3
from methods.errors import ConfigError, UnknownNameError
from sims.rigs import RIGS
from sims.rigs.scanner_rig import (
    CalibConfig,
    ScannerRigConfig,
    evaluate_scanner,
    evaluate_scanner_method,
    make_design,
    observe_n,
    perturb,
    sample_volume,
    volume_bounds,
)

SMALL = CalibConfig(n_camera_points=60, n_laser_points=60, n_joint_points=60, n_test_points=150,
                    max_nfev=100)


@pytest.fixture(scope="module")
def small_run():
    return evaluate_scanner(None, SMALL, seed=0)


def test_calibration_brings_a_far_off_design_to_the_noise_floor(small_run):
    r = small_run
    assert r["rmse_design_mm"] > 50                          # the uncalibrated rig is far off
    assert r["rmse_mm"] < 1.5 * r["rmse_true_params_mm"]     # calibrated ≈ true-parameter floor
    assert r["rmse_true_params_mm"] < 1.5                    # 0.1 px stripe noise at ≈ 2 m
    assert r["max_err_mm"] >= r["rmse_mm"]
    assert r["n_params"] == 30


def test_static_camera_covering_the_same_volume_is_worse(small_run):
    assert small_run["static_rmse_mm"] > 2.5 * small_run["rmse_mm"]


def test_measured_volume_spans_the_papers_range():
    cfg = ScannerRigConfig()
    design, x = make_design(cfg)
    p = g3.decode(design, perturb(cfg, design, x, np.random.default_rng(0)))
    bounds = volume_bounds(cfg, design)
    rng = np.random.default_rng(1)
    obs = observe_n(cfg, p, 400, rng, True, lambda k: sample_volume(bounds, k, rng))
    span = obs.X.max(axis=0) - obs.X.min(axis=0)
    assert span[0] > 1200 and span[1] > 1000 and span[2] > 600    # ≈ 1300 × 1100 × 650 mm
    assert obs.X[:, 2].max() <= 2500


def test_same_seed_same_result():
    cfg = CalibConfig(n_camera_points=30, n_laser_points=30, n_joint_points=30, n_test_points=20,
                      max_nfev=20, static_baseline=False, tiers="joint")
    a, b = evaluate_scanner(None, cfg, 7), evaluate_scanner({}, cfg.to_dict(), 7)
    timing = {k for k in a if k.endswith("wall_s")}
    assert timing and {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing}


def test_config_errors_and_search_spaces():
    with pytest.raises(ConfigError, match="tiers"):
        CalibConfig(tiers="camera")
    with pytest.raises(ConfigError, match="volume_mm"):
        ScannerRigConfig(volume_mm=(1.0, 2.0))
    with pytest.raises(ConfigError, match="stripe_noise_px"):
        evaluate_scanner({"stripe_noise": 0.1}, None, 0)
    spec = RIGS.get("scanner")
    assert spec.evaluate is evaluate_scanner_method and spec.method_config_cls("calib") is CalibConfig
    with pytest.raises(UnknownNameError, match="'calib'"):
        spec.evaluate(None, "ppm", None, 0)  # the scanner runs one method
    for cls in (ScannerRigConfig, CalibConfig):
        fields = cls().to_dict()
        assert fields["version"] == 1
        assert all(k in fields for k in cls.search_space())


@pytest.mark.slow
def test_default_calibration_is_seconds_not_minutes():
    r = evaluate_scanner(None, None, seed=0)
    assert r["joint_wall_s"] < 60 and r["calib_wall_s"] < 60
    assert r["rmse_mm"] < 1.2 * r["rmse_true_params_mm"]
    assert 3 < r["static_rmse_ratio"] < 8
