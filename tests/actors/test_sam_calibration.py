"""The SAM calibration task without Ray: rows, paired calibration draws from the training seeds only,
ground truth never reaching the method, the bug row, the clip study's side-by-side PCC values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from actors.sam_calibration import SamCalibrationTask, SamCalibrationTaskConfig, focus_column, method_config
from methods.errors import ConfigError
from methods.quant.sam_modules import run_sam

torch.set_num_threads(1)
TINY = SamCalibrationTaskConfig(test_images=6, val_images=4, iters=2, batch_size=2, focus_images=1)


@pytest.fixture(scope="module")
def task():
    return SamCalibrationTask(TINY)


def _run(task, **params):
    params = {"bits": "w4a4", "calib": 2, **params}
    return task.evaluate(params, seed=7, trial=0, chunk=0, n_chunks=1)


def test_row_has_mask_ap_for_both_prompts_focus_iou_and_timing(task):
    out = _run(task, method="saqsam")
    m, obj = out["metrics"], out["objectives"]
    for kind in ("box", "point"):
        for key in ("ap", "ap50", "ap75", "iou"):
            assert 0.0 <= m[f"{kind}_{key}"] <= 1.0 and 0.0 <= m[f"fp_{kind}_{key}"] <= 1.0
    assert obj["box_ap"] == m["box_ap"] and obj["calib_seconds"] > 0 and m["calib_cpu_seconds"] > 0
    assert "calib_seconds" not in m  # an objective, not also a metric column
    assert focus_column("transformer.layers.0.self_attn") in m and 0 <= m["mean_focus_iou"] <= 1
    assert len(m["clips"].split(",")) == 28 and m["block_evals_saved"] > 0 and not m["buggy_drop"]


def test_calibration_draws_are_paired_by_rep_and_come_from_training_seeds(task):
    from sims.zoo.sam_shapes import TEST_FIRST_SEED

    a, b, c = task.calibration_set(3, 0), task.calibration_set(3, 0), task.calibration_set(3, 1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    first = task.train_first + TINY.calib_seed
    assert first + 1000 * 2 + 3 < TEST_FIRST_SEED  # far below the held-out seeds


def test_poisoned_ground_truth_masks_do_not_reach_the_method(task):
    from sims.data.shapes import make_shapes_dataset
    from sims.zoo.sam_shapes import prompt_set

    samples = make_shapes_dataset(2, 5000)
    rng = np.random.default_rng(0)
    poisoned = [dataclasses.replace(s, masks=rng.random(s.masks.shape) > 0.5) for s in samples]
    spec, cfg = method_config("saqsam", 4, 4, TINY)
    clean = spec.run(task.sam, prompt_set(task.sam, samples), cfg, seed=0).model
    dirty = spec.run(task.sam, prompt_set(task.sam, poisoned), cfg, seed=0).model
    data = prompt_set(task.sam, samples)
    with torch.no_grad():
        a, b = run_sam(clean, data, torch.arange(2)), run_sam(dirty, data, torch.arange(2))
    assert torch.equal(a["masks"], b["masks"])


def test_buggy_drop_row_reproduces_the_bug_and_says_so(task):
    clean, buggy = _run(task, method="qdrop"), _run(task, method="qdrop", buggy_drop=True)
    assert buggy["metrics"]["buggy_drop"] and buggy["metrics"]["bug_quantizers"] > 0
    assert clean["metrics"]["bug_quantizers"] == 0
    assert buggy["metrics"]["box_ap"] != clean["metrics"]["box_ap"]
    star = _run(task, method="saqsam_star", buggy_drop=True)
    assert star["metrics"]["bug_quantizers"] == 0  # no reconstruction: nothing to inflate


def test_clip_study_trial_reports_pcc_side_by_side(task):
    out = _run(task, method="clip_study", **{f"clip_{i}": 0.95 for i in range(7)})
    m = out["metrics"]
    assert set(m["clips"].split(",")) == {"0.95"} and 0 <= out["objectives"]["val_box_ap"] <= 1
    assert 0 <= m["pcc_val_box_ap"] <= 1 and len(m["pcc_clips"].split(",")) == 28


@pytest.mark.parametrize("params,match", [
    ({"method": "nope"}, "method must be one of"),
    ({"method": "minmax", "bits": "w1a1"}, "w1a1"),
    ({"method": "minmax", "calib": 0}, "calib must be"),
    ({"method": "clip_study", "clip_0": 0.9}, "one clip per decoder attention"),
    ({"method": "clip_study", **{f"clip_{i}": 1.5 for i in range(7)}}, r"\(0.5, 1\]"),
])
def test_bad_trial_params_are_clear_errors(task, params, match):
    with pytest.raises(ConfigError, match=match):
        _run(task, **params)


def test_bad_task_config_is_refused():
    with pytest.raises(ConfigError, match="task.model"):
        SamCalibrationTaskConfig(model="sam-vit-b")
    with pytest.raises(ConfigError, match="first_last_bits"):
        SamCalibrationTaskConfig(first_last_bits=1)
