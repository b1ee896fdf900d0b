"""The wide-area search rig from pixels: timing model, calibration, scene priors, detector, no peeking."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import sims.rigs.search_rig as sr
from methods.errors import ConfigError, UnknownNameError
from sims.rigs import RIGS
from sims.rigs.search_rig import (
    SearchRigConfig,
    build_session,
    calibrate_detector,
    calibrate_wide_to_galvo,
    evaluate_search,
    learn_region_priors,
    make_scene,
    search_metrics,
    settle_time,
    shot_schedule,
)

SIMPLE = SearchRigConfig(settle_model="linear", settle_s=1e-3, slew_v_per_s=1000.0, camera_fps=100.0,
                         exposure_s=2e-3, detect_s=3e-3, compute_clock="none")
FAST = {"compute_clock": "none"}  # deterministic clock for exact comparisons


def test_schedule_matches_hand_computed_times():
    # shot 0: start = 0 + 1 ms settle + 1 V / (1 V/ms) = 2 ms, exposure to 4 ms, detect to 7 ms
    # shot 1: move done at 4+1+3 = 8 ms, but the 10 ms frame period forces 12 ms; detect to 17 ms
    # shot 2: no move (15 ms) but frame period → 22 ms; detect to 27 ms
    t = shot_schedule(np.array([1.0, 3.0, 0.0]), SIMPLE, 0.0, -np.inf, 0.0)
    assert np.allclose(t["exposure_start"], [2e-3, 12e-3, 22e-3])
    assert np.allclose(t["detect_end"], [7e-3, 17e-3, 27e-3])
    slow_det = shot_schedule(np.array([1.0, 3.0, 0.0]), replace(SIMPLE, detect_s=12e-3), 0.0, -np.inf, 0.0)
    assert np.allclose(slow_det["detect_end"], [16e-3, 28e-3, 40e-3])   # detector queue


def test_step_response_settle_follows_the_datasheet_points():
    cfg = SearchRigConfig()
    # 0.2° mechanical = 0.1 V (2° mech per V): 400 µs; a 20° mechanical step = 10 V: 7.7 ms (65 Hz
    # square wave at 50 % travel); below the small step the time does not shrink.
    assert settle_time(np.array([0.1]), cfg)[0] == pytest.approx(0.4e-3)
    assert settle_time(np.array([10.0]), cfg)[0] == pytest.approx(7.7e-3, rel=0.01)
    assert settle_time(np.array([0.01]), cfg)[0] == pytest.approx(0.4e-3)
    steps = settle_time(np.linspace(0.1, 10, 50), cfg)
    assert np.all(np.diff(steps) > 0)


def test_session_fps_equals_hand_value_and_rounds_wait_for_detections():
    session, extra, _ = build_session(SIMPLE, seed=0)
    session.fire(np.array([[1.0, 0.5], [-2.0, 0.5], [-2.0, 0.5]]))   # Chebyshev moves 1, 3, 0 V
    assert np.allclose(session.shot_time, [7e-3, 17e-3, 27e-3])
    m = search_metrics(session, [], extra)
    assert m["system_fps"] == pytest.approx(3 / 27e-3)
    assert m["fps_bound"] == "camera" and m["time_camera_s"] == pytest.approx(0.03)
    # Round 2 may only move once round 1's last detection is back (27 ms): the 2 V move is done
    # at 27 + 1 + 2 = 30 ms, the frame period allows 22 + 10 = 32 ms; exposure, detect → 37 ms.
    session.fire(np.array([[0.0, 0.5]]))
    assert session.shot_time[-1] == pytest.approx(37e-3)


def test_compute_is_charged_and_the_time_budget_ends_the_search():
    rig = {"compute_clock": "model"}
    ppm = evaluate_search(rig, "ppm", {"budget": 20}, seed=1)
    uni = evaluate_search(rig, "uniform", {"budget": 20}, seed=1)
    cfg = SearchRigConfig()
    assert ppm["capture_s"] == pytest.approx(cfg.wide_capture_s)
    assert ppm["segment_s"] == pytest.approx(cfg.seg_s)
    assert ppm["plan_s"] == pytest.approx(cfg.plan_s0 + cfg.plan_s2 * 400)
    assert uni["capture_s"] == 0.0 and uni["segment_s"] == 0.0          # no wide camera needed
    assert ppm["curve_time_s"][0] > cfg.wide_capture_s + cfg.seg_s       # first shot after them
    measured = evaluate_search({"compute_clock": "measured"}, "ppm", {"budget": 20}, seed=1)
    assert measured["plan_s"] == measured["plan_measured_s"] > 0
    capped = evaluate_search({**FAST, "time_budget_s": 0.1}, "uniform", {"budget": 40}, seed=1)
    assert capped["total_time_s"] <= 0.1 and 5 < capped["n_shots"] < 40


def test_polynomial_calibration_is_accurate():
    cfg = SearchRigConfig()
    _, rmse = calibrate_wide_to_galvo(cfg, np.random.default_rng(0))
    assert rmse < 0.02                       # well under a tenth of the 0.45 V FOV
    _, rmse_lin = calibrate_wide_to_galvo(replace(cfg, calib_degree=1), np.random.default_rng(0))
    assert rmse_lin > 2 * rmse                # the distortion is real: a linear map is worse


def test_targets_follow_the_class_priors_and_the_learned_priors_recover_them():
    cfg = SearchRigConfig(n_targets=200)
    on_road = 0
    for seed in range(3):
        scene = make_scene(cfg, np.random.default_rng(seed))
        lab = scene.labels[scene.targets_px[:, 1].astype(int), scene.targets_px[:, 0].astype(int)]
        on_road += int((lab == scene.class_names.index("road")).sum())
        assert np.abs(scene.targets_v).max() <= cfg.field_v / 2
    assert on_road / 600 > 0.6
    learned = learn_region_priors(SearchRigConfig())
    truth = np.array([p for _, p in SearchRigConfig().class_priors])
    truth = truth / truth.sum()
    assert np.abs(learned[:2] - truth[:2]).max() < 0.05                   # road, sidewalk
    assert list(np.argsort(-learned)[:2]) == [0, 1] and learned.sum() == pytest.approx(1.0)


def test_detector_variance_is_calibrated_on_fresh_scenes():
    # The σ² model is fitted on calibration scenes; on other scenes the normalised error
    # (error / σ) must have a per-axis variance near 1 — a wrong unit or a σ off by 2x fails.
    cfg = SearchRigConfig()
    model = calibrate_detector(cfg)
    assert 0.6 < model["p_detect"] <= 1.0 and model["fp_per_crop"] < 0.2
    z = []
    for seed in (11, 12, 13):
        session, _, rng = build_session(replace(cfg, **FAST), seed)
        truth = session._scene.targets_v
        for t in truth:
            for det in session.fire(t[None] + rng.uniform(-0.3, 0.3, (1, 2)) * cfg.fov_v):
                d = np.linalg.norm(truth - det.v, axis=1)
                if d.min() < cfg.match_radius_v:
                    z.extend((det.v - truth[d.argmin()]) / np.sqrt(det.var))
    z = np.asarray(z)
    assert len(z) > 40
    robust_var = (1.4826 * np.median(np.abs(z))) ** 2
    assert 0.5 < robust_var < 2.0 and np.mean(np.abs(z) > 4) < 0.1


def test_no_method_reads_the_scene_truth(monkeypatch):
    """Poison the evaluated scene's labels and target density: results must not move, except for
    the ground-truth upper bound, which reads them by design (so the poison is effective)."""
    real = sr.make_scene

    def poisoned(cfg, rng):
        scene = real(cfg, rng)
        bad = np.random.default_rng(99).integers(0, len(scene.class_names), scene.labels.shape)
        return replace(scene, labels=bad, target_priors=np.ones(len(scene.class_names)))

    cases = [("raster", {"budget": 25}), ("uniform", {"budget": 25}), ("ppm", {"budget": 25}),
             ("ppm_search", {"budget": 30, "n_rounds": 1})]
    clean = {m: evaluate_search(FAST, m, c, seed=2) for m, c in cases}
    bound = evaluate_search({**FAST, "ppm_source": "ground_truth"}, "ppm", {"budget": 25}, seed=2)
    monkeypatch.setattr(sr, "make_scene", poisoned)
    for m, c in cases:
        np.testing.assert_equal(evaluate_search(FAST, m, c, seed=2), clean[m])
    bad_bound = evaluate_search({**FAST, "ppm_source": "ground_truth"}, "ppm", {"budget": 25}, seed=2)
    key = ("curve_recall", "mean_move_v")
    assert [bad_bound[k] for k in key] != [bound[k] for k in key]


def test_same_seed_same_result_and_dict_overrides():
    a = evaluate_search({"exposure_s": 2e-3}, "ppm", {"budget": 20}, seed=5)
    b = evaluate_search(SearchRigConfig(exposure_s=2e-3), "ppm", {"budget": 20}, seed=5)
    assert a == b and a["n_shots"] == 20 and a["n_targets"] == 12


def test_config_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="exposure"):
        SearchRigConfig(camera_fps=500.0, exposure_s=3e-3)
    with pytest.raises(ConfigError, match="settle_s"):
        evaluate_search({"settle": 1e-3}, "ppm", None, 0)
    with pytest.raises(UnknownNameError, match="ppm_search"):
        evaluate_search(None, "ppm_serch", None, 0)
    with pytest.raises(ConfigError, match="PPMSearchConfig"):
        evaluate_search(None, "ppm_search", SearchRigConfig(), 0)
    with pytest.raises(ConfigError, match="class_priors"):
        SearchRigConfig(bands=(("lake", 1.0),))
    with pytest.raises(ConfigError, match="ppm_source"):
        SearchRigConfig(ppm_source="labels")
    with pytest.raises(ConfigError, match="segmenter knows"):
        evaluate_search({"class_priors": (("road", 0.9), ("lake", 0.1)),
                         "bands": (("road", 0.5), ("lake", 0.5)), "n_blobs": 0}, "ppm", {"budget": 5}, 0)


def test_registry_and_search_space():
    spec = RIGS.get("search")
    assert spec.config_cls is SearchRigConfig and spec.evaluate is evaluate_search
    fields = SearchRigConfig().to_dict()
    for name, space in SearchRigConfig.search_space().items():
        assert name in fields and space[0] in ("float", "int", "categorical")
