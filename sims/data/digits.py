"""`digits`: scikit-learn's bundled 8×8 handwritten digits (no download), as torch tensors.

Exact parameters (documented so a result can be reproduced):
- source: `sklearn.datasets.load_digits()` (1797 images, 10 classes, pixel values 0..16);
- pixels scaled to [0, 1] by dividing by 16; shape (N, 1, 8, 8), dtype float32;
- split: `train_test_split(test_size=0.25, stratify=labels, random_state=0)` → 1347 train / 450 test;
- sizes 16 and 32: bilinear upsampling (`F.interpolate(..., align_corners=False)`), clamped to [0, 1].
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from methods.errors import ConfigError

SIZES = (8, 16, 32)
SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.25
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


def load_digits_split(split: str = "train", size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, size, size) float32 in [0, 1] and labels (N,) int64 of one fixed split."""
    if split not in SPLITS:
        raise ConfigError(f"digits split must be one of {SPLITS}, got {split!r}.")
    if size not in SIZES:
        raise ConfigError(f"digits size must be one of {SIZES} pixels, got {size!r}; pick one of those.")
    images, labels = _split_arrays()[split]
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x.contiguous(), torch.from_numpy(labels.copy())
