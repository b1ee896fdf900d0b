"""Read a real COCO-format instance annotation file (e.g. `instances_val2017.json`) from a local path.

The COCO instance format is the one SAQ-SAM ("SAQ-SAM: Semantically-Aligned Quantization for
Segment Anything Model", arXiv 2503.06515) evaluates on (COCO val2017 mask mAP) [paper]. This
module only does the file reading, so that `methods/metrics/masks.py` stays free of I/O; scoring
is `methods.metrics.masks.coco_mask_ap`. Our own design [inferred].
"""
from __future__ import annotations

import json
from pathlib import Path

from methods.errors import CheckpointError
from methods.metrics.masks import coco_mask_ap

_HOW_TO_GET = (
    "COCO annotations come from the COCO dataset site (annotations_trainval2017.zip, file "
    "annotations/instances_val2017.json); pass the local path of the extracted JSON file."
)


def load_coco_annotations(path: str | Path) -> dict:
    """The parsed COCO annotation dict at `path`; a missing, unreadable or non-COCO file → CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"Expected a COCO annotation JSON file at {p}, but it does not exist. {_HOW_TO_GET}"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Could not parse {p} as JSON ({exc}); expected a COCO instance annotation file. {_HOW_TO_GET}"
        ) from exc
    keys = data if isinstance(data, dict) else {}
    missing = [k for k in ("images", "annotations", "categories") if k not in keys]
    if missing:
        raise CheckpointError(
            f"{p} is JSON but not a COCO instance annotation file: missing keys {missing}. {_HOW_TO_GET}"
        )
    return data


def coco_mask_ap_from_file(path: str | Path, predictions: list[dict], use_categories: bool = True) -> dict:
    """COCO mask AP of `predictions` (COCO result entries with RLE masks) against the file at `path`."""
    return coco_mask_ap(load_coco_annotations(path), predictions, use_categories=use_categories)
