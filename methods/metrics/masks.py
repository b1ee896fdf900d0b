"""Mask metrics: batched mask IoU (torch), COCO mask AP (pycocotools), and "mAP-lite".

Used to score promptable segmentation (SAM and the tiny `sam-shapes`), as in SAQ-SAM
("SAQ-SAM: Semantically-Aligned Quantization for Segment Anything Model", arXiv 2503.06515), whose
headline metric is COCO instance-segmentation mask mAP [paper]. The AP computation is pycocotools'
own `COCOeval(iouType="segm")` (the official COCO evaluation code); mask IoU and mAP-lite (the mean
over IoU thresholds 0.5:0.05:0.95 of the fraction of prompted objects whose mask IoU reaches the
threshold, quant.md §9) are our own small helpers [inferred].

All functions are pure: COCO data comes in as dicts and lists (reading a JSON file lives in
`sims/data/coco.py`). pycocotools prints its progress; that output is swallowed here.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch

from methods.errors import ConfigError

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
AP_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100")


def _as_bool(masks: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(masks)
    if t.dtype != torch.bool:
        t = t > 0.5 if t.is_floating_point() else t != 0
    if t.dim() < 2:
        raise ConfigError(f"{name} must have shape (..., H, W), got {tuple(t.shape)}.")
    return t


def mask_iou(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Element-wise IoU of two mask stacks of equal shape (..., H, W) → (...) float32.

    Masks are boolean, or float thresholded at 0.5. Two empty masks have IoU 1 (they agree).
    """
    p, t = _as_bool(pred, "pred"), _as_bool(target, "target")
    if p.shape != t.shape:
        raise ConfigError(
            f"mask_iou needs equal shapes, got pred {tuple(p.shape)} and target {tuple(t.shape)}."
        )
    inter = (p & t).flatten(-2).sum(-1).float()
    union = (p | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def pairwise_mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of every mask in a (N, H, W) with every mask in b (M, H, W) → (N, M) float32."""
    x, y = _as_bool(a, "a"), _as_bool(b, "b")
    if x.dim() != 3 or y.dim() != 3 or x.shape[-2:] != y.shape[-2:]:
        raise ConfigError(
            f"pairwise_mask_iou needs (N, H, W) and (M, H, W), got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    xf, yf = x.flatten(1).float(), y.flatten(1).float()
    inter = xf @ yf.T
    union = xf.sum(1)[:, None] + yf.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def map_lite(ious: torch.Tensor | np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> float:
    """Mean over thresholds of the fraction of objects whose IoU is at least the threshold."""
    v = torch.as_tensor(ious, dtype=torch.float32).flatten()
    if v.numel() == 0:
        raise ConfigError("map_lite needs at least one IoU value, got none.")
    return float(torch.stack([(v >= th).float().mean() for th in thresholds]).mean())


def encode_rle(mask: np.ndarray | torch.Tensor) -> dict:
    """COCO RLE of one (H, W) mask, with `counts` as str so it is JSON-serialisable."""
    from pycocotools import mask as mask_utils

    m = np.asfortranarray(np.asarray(torch.as_tensor(mask).cpu().numpy(), dtype=np.uint8))
    if m.ndim != 2:
        raise ConfigError(f"encode_rle needs one (H, W) mask, got shape {m.shape}.")
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_ground_truth(
    masks: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    image_ids: Sequence[int],
    categories: Sequence[tuple[int, str]],
    file_names: Sequence[str] | None = None,
) -> dict:
    """A COCO instance-segmentation ground-truth dict from per-image (K, H, W) masks and (K,) labels."""
    if not (len(masks) == len(labels) == len(image_ids)):
        raise ConfigError(
            f"coco_ground_truth needs one masks/labels/image_id entry per image, got "
            f"{len(masks)}, {len(labels)}, {len(image_ids)}."
        )
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for i, (m, lab, img_id) in enumerate(zip(masks, labels, image_ids, strict=True)):
        m = np.asarray(m, dtype=bool)
        h, w = m.shape[-2:]
        name = file_names[i] if file_names is not None else f"{int(img_id)}.png"
        images.append({"id": int(img_id), "width": int(w), "height": int(h), "file_name": name})
        for obj, cat in zip(m, np.asarray(lab), strict=True):
            rle = encode_rle(obj)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": int(img_id),
                "category_id": int(cat),
                "segmentation": rle,
                "area": float(mask_utils.area(_bytes_rle(rle))),
                "bbox": [float(x) for x in mask_utils.toBbox(_bytes_rle(rle))],
                "iscrowd": 0,
            })
    cats = [{"id": int(cid), "name": str(name), "supercategory": "shape"} for cid, name in categories]
    return {"images": images, "annotations": annotations, "categories": cats}


def coco_predictions(
    masks: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    image_ids: Sequence[int],
) -> list[dict]:
    """COCO result entries from per-image predicted (K, H, W) masks, (K,) scores and (K,) labels."""
    if not (len(masks) == len(scores) == len(labels) == len(image_ids)):
        raise ConfigError(
            f"coco_predictions needs one masks/scores/labels/image_id entry per image, got "
            f"{len(masks)}, {len(scores)}, {len(labels)}, {len(image_ids)}."
        )
    out = []
    for m, sc, lab, img_id in zip(masks, scores, labels, image_ids, strict=True):
        m = np.asarray(torch.as_tensor(m).cpu().numpy(), dtype=bool)
        for obj, s, c in zip(m, np.asarray(sc, dtype=np.float64), np.asarray(lab), strict=True):
            out.append({"image_id": int(img_id), "category_id": int(c), "segmentation": encode_rle(obj),
                        "score": float(s)})
    return out


def _bytes_rle(rle: dict) -> dict:
    counts = rle["counts"]
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    return {"size": list(rle["size"]), "counts": raw}


def coco_mask_ap(gt: dict, predictions: list[dict], use_categories: bool = True) -> dict[str, float]:
    """COCO mask AP/AR (pycocotools `COCOeval`, iouType "segm") of `predictions` against `gt`.

    Args:
        gt: a COCO instance-segmentation dict (images, annotations, categories), e.g. from
            `coco_ground_truth` or `sims.data.coco.load_coco_annotations`.
        predictions: COCO result entries: image_id, category_id, segmentation (RLE), score.
        use_categories: False evaluates class-agnostically (`params.useCats = 0`), the natural
            setting for prompted, class-free segmenters such as SAM.

    Returns:
        The twelve-number COCO summary as a dict (AP, AP50, AP75, AP_small/medium/large, AR1,
        AR10, AR100); entries with no ground truth in their area range are -1 as in pycocotools.
        No predictions at all gives AP 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ConfigError(f"COCO ground truth needs an {key!r} list; got keys {sorted(gt)}.")
    if not predictions:
        return {k: 0.0 for k in AP_KEYS}
    gt_ids = {img["id"] for img in gt["images"]}
    unknown = {p["image_id"] for p in predictions} - gt_ids
    if unknown:
        raise ConfigError(
            f"{len(unknown)} predicted image ids are not in the ground truth (e.g. {sorted(unknown)[:3]}); "
            f"predictions must use the annotation file's image ids."
        )
    preds = [{**p, "segmentation": _bytes_rle(p["segmentation"])} for p in predictions]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {**gt, "annotations": [{**a} for a in gt["annotations"]]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(preds)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.useCats = int(use_categories)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(x) for x in ev.stats]
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "AP_small": stats[3], "AP_medium": stats[4],
            "AP_large": stats[5], "AR1": stats[6], "AR10": stats[7], "AR100": stats[8]}


def shapes_mask_ap(
    gt_masks: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    pred_masks: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray] | None = None,
    use_categories: bool = False,
) -> dict[str, float]:
    """COCO mask AP for per-image shapes ground truth and predictions (image ids 0..N-1).

    With `pred_labels=None` every prediction gets category 1 and the evaluation is class-agnostic.
    """
    n = len(gt_masks)
    ids = list(range(n))
    cat_ids = sorted({int(c) for lab in gt_labels for c in np.asarray(lab)} | {1})
    gt = coco_ground_truth(gt_masks, gt_labels, ids, [(c, f"class{c}") for c in cat_ids])
    if pred_labels is None:
        if use_categories:
            raise ConfigError("shapes_mask_ap with use_categories=True needs pred_labels.")
        pred_labels = [np.ones(len(np.asarray(s)), dtype=np.int64) for s in pred_scores]
    preds = coco_predictions(pred_masks, pred_scores, pred_labels, ids)
    return coco_mask_ap(gt, preds, use_categories=use_categories)
