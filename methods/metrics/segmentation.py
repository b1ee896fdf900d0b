"""Semantic segmentation: confusion matrix, per-class IoU, mIoU, and the OHEM cross-entropy loss.

`methods/metrics/masks.py` scores binary instance masks (SAM); this module scores dense class
maps. mIoU follows the official SLTNet / DABNet metric [code: utils/metric]: a confusion matrix
accumulated over the whole evaluation set, IoU_c = TP / (TP + FP + FN), and the mean over the
classes whose IoU is defined (a class absent from both prediction and labels is skipped). Pixels
labelled `ignore_index` (255 in DDD17 / DSEC) are left out.

`ohem_cross_entropy` is the official ProbOhemCrossEntropy2d [code: utils/losses/loss.py]: among
the valid pixels, keep those whose probability of the true class is at most
max(thresh, the min_kept-th smallest such probability), at least `min_kept` pixels
(B·H·W/16 in the official training), and average their cross-entropy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from methods.errors import ConfigError

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, n_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class."""
    pred = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64).ravel()
    target = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target).astype(np.int64).ravel()
    if pred.shape != target.shape:
        raise ConfigError(f"Prediction and label maps must have one shape; received {pred.shape} and "
                          f"{target.shape} pixels.")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if ((target < 0) | (target >= n_classes) | (pred < 0) | (pred >= n_classes)).any():
        raise ConfigError(f"Class ids must be in 0..{n_classes - 1} (or {ignore_index} = ignore in labels); "
                          f"received labels {np.unique(target)[:8]} and predictions {np.unique(pred)[:8]}.")
    return np.bincount(target * n_classes + pred, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class (NaN where the class is in neither prediction nor labels)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    ious = iou_per_class(confusion)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7,
                       min_kept: int | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Online hard-example-mined cross-entropy of logits [B, C, H, W] against labels [B, H, W]."""
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ConfigError(f"Expected logits [B, C, H, W] and labels [B, H, W]; received "
                          f"{tuple(logits.shape)} and {tuple(target.shape)}.")
    b, _, h, w = logits.shape
    min_kept = b * h * w // 16 if min_kept is None else int(min_kept)
    flat_target = target.reshape(-1)
    valid = flat_target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    with torch.no_grad():
        prob = F.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        true_prob = prob[valid].gather(1, flat_target[valid].unsqueeze(1)).squeeze(1)
        threshold = thresh
        if 0 < min_kept <= n_valid:  # the official code skips mining when min_kept > n_valid
            kth = torch.sort(true_prob).values[min(n_valid, min_kept) - 1]
            threshold = max(float(kth), thresh)
        keep = torch.zeros_like(valid)
        keep[valid] = true_prob <= threshold
    masked = torch.where(keep, flat_target, torch.full_like(flat_target, ignore_index)).view_as(target)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, masked, ignore_index=ignore_index)
