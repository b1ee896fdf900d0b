"""Tests of mask IoU, mAP-lite and COCO mask AP (pycocotools)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from methods.errors import CheckpointError, ConfigError
from methods.metrics.masks import (
    coco_ground_truth,
    coco_mask_ap,
    coco_predictions,
    encode_rle,
    map_lite,
    mask_iou,
    pairwise_mask_iou,
    shapes_mask_ap,
)


def _square(x0, y0, side, size=32):
    m = np.zeros((size, size), dtype=bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_mask_iou_known_values():
    a = torch.from_numpy(_square(0, 0, 4))  # 16 px
    b = torch.from_numpy(_square(2, 0, 4))  # overlaps 8 px, union 24
    assert mask_iou(a, b).item() == pytest.approx(8 / 24)
    assert mask_iou(a, a).item() == 1.0
    assert mask_iou(a, torch.from_numpy(_square(10, 10, 4))).item() == 0.0
    empty = torch.zeros(32, 32, dtype=torch.bool)
    assert mask_iou(empty, empty).item() == 1.0


def test_mask_iou_batched_and_float_thresholded():
    a = torch.stack([torch.from_numpy(_square(0, 0, 4)), torch.from_numpy(_square(0, 0, 2))])
    b = torch.stack([torch.from_numpy(_square(2, 0, 4)), torch.from_numpy(_square(0, 0, 4))])
    iou = mask_iou(a.float() * 0.9, b)  # 0.9 > 0.5 counts as foreground
    assert iou.shape == (2,)
    assert torch.allclose(iou, torch.tensor([8 / 24, 4 / 16]))
    with pytest.raises(ConfigError, match="equal shapes"):
        mask_iou(a, b[:1])


def test_pairwise_mask_iou_matches_elementwise():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((3, 16, 16)) > 0.5)
    b = torch.from_numpy(rng.random((4, 16, 16)) > 0.5)
    pw = pairwise_mask_iou(a, b)
    assert pw.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert pw[i, j].item() == pytest.approx(mask_iou(a[i], b[j]).item())


def test_map_lite():
    assert map_lite([1.0, 1.0]) == pytest.approx(1.0)
    assert map_lite([0.0]) == 0.0
    assert map_lite([0.72]) == pytest.approx(5 / 10)  # passes 0.50 .. 0.70
    with pytest.raises(ConfigError):
        map_lite([])


def _toy_set(n_images=4):
    gt_masks, gt_labels = [], []
    for i in range(n_images):
        gt_masks.append(np.stack([_square(2 + i, 3, 8), _square(18, 16 + i % 3, 10)]))
        gt_labels.append(np.array([1, 2]))
    return gt_masks, gt_labels


def test_ap_is_one_for_perfect_predictions_and_lower_for_shifted():
    gt_masks, gt_labels = _toy_set()
    scores = [np.array([0.9, 0.8]) for _ in gt_masks]
    perfect = shapes_mask_ap(gt_masks, gt_labels, gt_masks, scores)
    assert perfect["AP"] == pytest.approx(1.0)
    shifted = [np.roll(m, 2, axis=-1) for m in gt_masks]  # IoU 0.6 / 0.67: passes 0.5, not 0.75
    res = shapes_mask_ap(gt_masks, gt_labels, shifted, scores)
    assert res["AP50"] == pytest.approx(1.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert 0.0 < res["AP"] < 0.5
    empty = shapes_mask_ap(gt_masks, gt_labels, [m[:0] for m in gt_masks], [s[:0] for s in scores])
    assert empty["AP"] == 0.0


def test_ap_uses_categories_when_asked():
    gt_masks, gt_labels = _toy_set()
    scores = [np.array([0.9, 0.8]) for _ in gt_masks]
    swapped = [lab[::-1].copy() for lab in gt_labels]
    assert shapes_mask_ap(gt_masks, gt_labels, gt_masks, scores, swapped, use_categories=False)["AP"] == 1.0
    assert shapes_mask_ap(gt_masks, gt_labels, gt_masks, scores, swapped, use_categories=True)["AP"] == 0.0


def test_coco_mask_ap_on_json_file_round_trip(tmp_path):
    from sims.data.coco import coco_mask_ap_from_file, load_coco_annotations

    gt_masks, gt_labels = _toy_set(3)
    gt = coco_ground_truth(gt_masks, gt_labels, [11, 12, 13], [(1, "a"), (2, "b")])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    preds = coco_predictions(gt_masks, [np.array([0.5, 0.4])] * 3, gt_labels, [11, 12, 13])
    assert coco_mask_ap_from_file(path, preds)["AP"] == pytest.approx(1.0)
    assert load_coco_annotations(path)["images"][0]["id"] == 11
    with pytest.raises(ConfigError, match="image ids"):
        coco_mask_ap(gt, [{**preds[0], "image_id": 99}])


def test_coco_file_errors(tmp_path):
    from sims.data.coco import load_coco_annotations

    with pytest.raises(CheckpointError, match="does not exist"):
        load_coco_annotations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_coco_annotations(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(CheckpointError, match="annotations"):
        load_coco_annotations(bad)


def test_encode_rle_is_json_serialisable_and_exact():
    from pycocotools import mask as mask_utils

    m = _square(3, 5, 7)
    rle = encode_rle(m)
    json.dumps(rle)
    assert np.array_equal(mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), m)
