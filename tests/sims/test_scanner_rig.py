"""The multi-galvanometer scanner rig: entry point, measured volume, static baseline."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from methods import galvo3d as g3
from methods.errors import ConfigError, UnknownNameError
from sims.rigs import RIGS
from sims.rigs.scanner_rig import (
    CalibConfig,
    ScannerRigConfig,
    Truth,
    TruthRecord,
    calibrate_from_measurements,
    evaluate_scanner,
    evaluate_scanner_method,
    make_design,
    make_truth,
    observe_n,
    perturb,
    sample_volume,
    score,
    simulate_session,
    volume_bounds,
)

SMALL = CalibConfig(n_camera_points=60, n_laser_points=60, n_joint_points=60, n_test_points=150,
                    max_nfev=40)


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
    truth = Truth.ideal(design, perturb(cfg, design, x, np.random.default_rng(0)))
    bounds = volume_bounds(cfg, design)
    rng = np.random.default_rng(1)
    _, X = observe_n(cfg, truth, 400, rng, True, lambda k: sample_volume(bounds, k, rng), 0.5)
    span = X.max(axis=0) - X.min(axis=0)
    assert span[0] > 1200 and span[1] > 1000 and span[2] > 600    # ≈ 1300 × 1100 × 650 mm
    assert X[:, 2].max() <= 2500


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
    r = evaluate_scanner(None, None, seed=0)      # with every mismatch effect at its default
    assert r["joint_wall_s"] < 60 and r["calib_wall_s"] < 60
    assert r["rmse_mm"] < 1.5 * r["rmse_true_params_mm"]
    assert 3 < r["static_rmse_ratio"] < 8
    clean = evaluate_scanner(ScannerRigConfig().without_mismatch(), CalibConfig(static_baseline=False), 0)
    assert clean["rmse_mm"] < 1.1 * clean["rmse_true_params_mm"]     # no mismatch: at the floor


TINY = CalibConfig(n_camera_points=40, n_laser_points=40, n_joint_points=40, n_test_points=60,
                   max_nfev=5, static_baseline=False)


def _poison(rec: TruthRecord) -> None:
    """Overwrite, in place, every array the simulator's truth holds."""
    t = rec.truth
    for arr in (t.x, t.v_max, t.nonlin, t.drift_rad, t.p.K, t.p.dist, t.p.laser_n, *rec.X.values()):
        arr[...] = np.nan
    for m in (*t.p.cam_mirrors, t.p.laser_mirror):
        for arr in (m.axis, m.point, m.normal0):
            arr[...] = np.nan


@pytest.mark.parametrize("rig", [{}, {"ref_noise_mm": 0.0, "board_tilt_rad": 0.0, "board_offset_mm": 0.0}])
def test_method_outputs_do_not_change_when_the_truth_is_poisoned_after_rendering(rig):
    cfg = ScannerRigConfig(**rig)
    meas, rec = simulate_session(cfg, TINY, seed=3, static=False)
    assert meas.test.images is not None and meas.test.u is None        # the method gets pixels
    before = calibrate_from_measurements(meas, TINY)
    clean_score = score(meas, rec, before)
    _poison(rec)
    after = calibrate_from_measurements(meas, TINY)
    for a, b in ((before.x, after.x), (before.test_points, after.test_points),
                 *((before.u[k], after.u[k]) for k in before.u)):
        assert np.array_equal(a, b, equal_nan=True)
    assert np.isfinite(clean_score["rmse_mm"]) and np.isnan(score(meas, rec, after)["rmse_mm"])


@pytest.mark.parametrize("field, value", [("mirror_offset_mm", 1.0), ("galvo_nonlin", 1e-3),
                                          ("drift_urad", 30.0)])
def test_each_mismatch_effect_moves_the_true_pixels_and_switches_off_at_zero(field, value):
    cfg = ScannerRigConfig().without_mismatch()
    design, x = make_design(cfg)
    x_true = perturb(cfg, design, x, np.random.default_rng(0))
    X = sample_volume(volume_bounds(cfg, design), 50, np.random.default_rng(1))
    v = np.random.default_rng(2).uniform(-4, 4, (50, 2))
    u = {}
    for val in (0.0, value):
        truth = make_truth(replace(cfg, **{field: val}), design, x_true, np.random.default_rng(3))
        u[val] = g3.project(truth.p, X, truth.eff_cam(v, 0.875))
        assert np.allclose(truth.commanded(truth.effective(v[:, 0], 0, 0.875), 0, 0.875), v[:, 0],
                           atol=1e-12)
    assert np.array_equal(u[0.0], g3.project(g3.decode(design, x_true), X, v))   # off = the model
    assert np.abs(u[value] - u[0.0]).max() > 0.05                                # on: ≥ 0.05 px


def test_without_noise_the_floor_is_exact_and_only_the_mismatch_keeps_the_calibration_off_it():
    calib = replace(TINY, max_nfev=40, prior_weight=1e-4, joint_mode="3d")
    exact = dict(pixels=False, stripe_noise_px=0.0, drive_noise_v=0.0)
    on = evaluate_scanner(ScannerRigConfig(**exact, ref_noise_mm=0.0, board_tilt_rad=0.0,
                                           board_offset_mm=0.0), calib, 0)
    off = evaluate_scanner(ScannerRigConfig(**exact).without_mismatch(), calib, 0)
    assert on["rmse_true_params_mm"] < 1e-6 and off["rmse_true_params_mm"] < 1e-6
    assert off["rmse_mm"] < 0.01 < on["rmse_mm"]


def test_pixels_are_extracted_to_about_a_tenth_of_a_pixel(small_run):
    assert small_run["extract_fail_frac"] < 0.01
    assert 0.03 < small_run["stripe_err_px"] < 0.3
