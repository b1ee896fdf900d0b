"""mIoU and OHEM cross-entropy (methods/metrics/segmentation.py), against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods.errors import ConfigError
from methods.metrics.segmentation import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    ohem_cross_entropy,
    pixel_accuracy,
)


def test_miou_by_hand_with_ignored_pixels_and_an_absent_class():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])
    cm = confusion_matrix(pred, target, n_classes=4)
    assert cm.sum() == 6  # the two ignored pixels are left out, whatever was predicted there
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3;
    # class 2: 1/2; class 3: NaN
    np.testing.assert_allclose(iou_per_class(cm)[:3], [1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou_per_class(cm)[3])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)
    with pytest.raises(ConfigError, match="0..3"):
        confusion_matrix(np.array([4]), np.array([0]), 4)
    with pytest.raises(ConfigError, match="one shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 4)


def test_ohem_keeps_only_the_hard_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0] = torch.tensor([5.0, 5.0, 0.1, -3.0])  # p(class 0) high for the first two pixels
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    hard = F.cross_entropy(logits[..., 2:], target[..., 2:])  # p = 0.52 and 0.05 are <= 0.7
    assert loss.item() == pytest.approx(hard.item())
    # min_kept larger than the hard set raises the threshold to the min_kept-th smallest probability
    all_four = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=4)
    assert all_four.item() == pytest.approx(F.cross_entropy(logits, target).item())
    ignored = ohem_cross_entropy(logits, torch.full((1, 1, 4), 255))
    assert ignored.item() == 0.0
