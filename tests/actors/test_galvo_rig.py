"""The galvo rig task (no Ray): trials are the pure rig entry points averaged over seeded scenes."""
from __future__ import annotations

import numpy as np
import pytest

from actors.galvo_rig import GalvoRigTask, GalvoRigTaskConfig, scene_seeds
from methods.errors import ConfigError, UnknownNameError
from methods.ppm_search import PPMConfig
from sims.rigs.scanner_rig import CalibConfig, ScannerRigConfig, evaluate_scanner
from sims.rigs.search_rig import SearchRigConfig, evaluate_search

SMALL_CALIB = {"n_camera_points": 30, "n_laser_points": 30, "n_joint_points": 30, "n_test_points": 50,
               "static_baseline": False}


def _run(task, params, seed=7):
    return task.evaluate(params, seed=seed, trial=0, chunk=0, n_chunks=1)


def test_search_trial_is_the_mean_of_the_pure_rig_over_its_scenes():
    task = GalvoRigTask(GalvoRigTaskConfig(rig="search", scenes=2, scene_seed=3, curve_points=6))
    out = _run(task, {"method": "ppm", "budget": 40, "rig_settle_s": 2e-3})
    rig = SearchRigConfig(settle_s=2e-3)
    pure = [evaluate_search(rig, "ppm", PPMConfig(budget=40), s) for s in scene_seeds(3, 2)]
    assert out["objectives"]["recall"] == pytest.approx(np.mean([p["recall"] for p in pure]))
    assert out["objectives"]["total_time_s"] == pytest.approx(np.mean([p["total_time_s"] for p in pure]))
    assert out["metrics"] == {"method": "ppm", "galvo_rig": 0.0, "rig_trials_run": 1, "scenes": 2}
    curve = out["rows"]
    assert [r["curve_shot"] for r in curve][-1] == 40 and len(curve) <= 6
    for key in ("curve_shot", "curve_time_s", "curve_recall"):
        vals = [r[key] for r in curve]
        assert vals == sorted(vals), key  # recall and time only grow with the shots fired
    assert curve[-1]["curve_recall"] == pytest.approx(out["objectives"]["recall"])


def test_rig_params_reach_the_rig_and_paired_scenes_ignore_the_trial_seed():
    task = GalvoRigTask(GalvoRigTaskConfig(rig="search", scenes=1, scene_seed=0))
    fast = _run(task, {"method": "raster", "budget": 30, "rig_settle_s": 0.5e-3}, seed=1)
    slow = _run(task, {"method": "raster", "budget": 30, "rig_settle_s": 4e-3}, seed=2)
    assert slow["objectives"]["total_time_s"] > fast["objectives"]["total_time_s"]
    assert slow["objectives"]["calib_rmse_v"] == fast["objectives"]["calib_rmse_v"]  # same scene
    unpaired = GalvoRigTask(GalvoRigTaskConfig(rig="search", scenes=1, scene_seed=None))
    a, b = (_run(unpaired, {"method": "raster", "budget": 30}, seed=s)["objectives"] for s in (1, 2))
    assert a["calib_rmse_v"] != b["calib_rmse_v"]  # scenes follow the trial seed
    again = _run(unpaired, {"method": "raster", "budget": 30}, seed=1)["objectives"]
    np.testing.assert_equal(again, a)  # NaN-aware: a scene with no localised target has no error


def test_method_overrides_apply_and_bad_names_are_reported():
    task = GalvoRigTask(GalvoRigTaskConfig(rig="search", method="uniform",
                                           method_overrides={"uniform": {"budget": 25}}))
    assert _run(task, {})["objectives"]["n_shots"] == 25
    with pytest.raises(ConfigError, match="rig field 'setle_s'.*settle_s"):
        _run(task, {"rig_setle_s": 1e-3})
    with pytest.raises(ConfigError, match="bugdet.*budget"):
        _run(task, {"bugdet": 10})
    with pytest.raises(UnknownNameError):
        GalvoRigTaskConfig(rig="periscope")
    with pytest.raises(ConfigError, match="scenes"):
        GalvoRigTaskConfig(scenes=0)


def test_scanner_trial_matches_the_pure_scanner():
    task = GalvoRigTask(GalvoRigTaskConfig(rig="scanner", scene_seed=0,
                                           method_overrides={"calib": SMALL_CALIB}))
    out = _run(task, {"tiers": "staged", "rig_stripe_noise_px": 0.2})
    seed = scene_seeds(0, 1)[0]
    pure = evaluate_scanner(ScannerRigConfig(stripe_noise_px=0.2), CalibConfig(tiers="staged", **SMALL_CALIB),
                            seed)
    assert out["objectives"]["rmse_mm"] == pytest.approx(pure["rmse_mm"])
    assert out["objectives"]["rmse_mm"] < out["objectives"]["rmse_design_mm"] / 10  # calibration helped
    assert "static_rmse_mm" not in out["objectives"]
