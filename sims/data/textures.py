"""`textures-10`: grey texture patches cut from the ten images scikit-image ships in its wheel.

A classification bed with headroom for post-training quantization (issue 13): digits are 99.6 % /
98.4 % top-1, so one test image is 0.22 points and methods cannot be told apart; texture patches
are hard enough that FP is far from 100 % and low-bit quantization costs visible points.

Exact parameters [ours] (documented so a result can be reproduced):
- sources, class index in this order: brick, grass, gravel, camera, coins, moon, page, text,
  astronaut, coffee (`skimage.data.<name>()`, no download); colour images to grey with
  `skimage.color.rgb2gray`, uint8 images divided by 255, so pixels are float32 in [0, 1];
- disjoint parts: in each image the columns left of ``TRAIN_FRACTION`` (0.7) of the width give
  training patches and the columns right of it test patches (a patch lies wholly on one side), so
  no test pixel was seen in training;
- per class ``TRAIN_PER_CLASS`` = 300 train and ``TEST_PER_CLASS`` = 100 test patches of 16×16 or
  32×32 at top-left corners drawn uniformly from `numpy.random.default_rng([SEED, class, split,
  size])`: 3,000 / 1,000 patches; shape (N, 1, s, s), classes interleaved in corner-draw order.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from methods.errors import ConfigError

SOURCES = ("brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "astronaut", "coffee")
NUM_CLASSES = len(SOURCES)
SIZES = (16, 32)
SPLITS = ("train", "test")
TRAIN_FRACTION = 0.7
TRAIN_PER_CLASS = 300
TEST_PER_CLASS = 100
SEED = 2024


@lru_cache(maxsize=1)
def source_images() -> tuple[np.ndarray, ...]:
    """The ten images as float32 grey arrays in [0, 1] (class order of `SOURCES`)."""
    from skimage import color, data

    out = []
    for name in SOURCES:
        image = getattr(data, name)()
        grey = color.rgb2gray(image) if image.ndim == 3 else image.astype(np.float64) / 255.0
        out.append(np.ascontiguousarray(grey, dtype=np.float32))
    return tuple(out)


def _corners(height: int, width: int, size: int, split: str, n: int, rng: np.random.Generator):
    cut = int(TRAIN_FRACTION * width)
    lo, hi = (0, cut - size) if split == "train" else (cut, width - size)
    if hi < lo or height < size:
        raise ConfigError(f"an image of {height}x{width} has no room for {size}px {split} patches.")
    return rng.integers(0, height - size + 1, n), rng.integers(lo, hi + 1, n)


@lru_cache(maxsize=4)
def _split(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    per_class = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
    patches, labels = [], []
    for cls, image in enumerate(source_images()):
        rng = np.random.default_rng([SEED, cls, SPLITS.index(split), size])
        rows, cols = _corners(*image.shape, size, split, per_class, rng)
        patches.append(np.stack([image[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)]))
        labels.append(np.full(per_class, cls, dtype=np.int64))
    order = np.random.default_rng([SEED, 99, SPLITS.index(split), size]).permutation(per_class * NUM_CLASSES)
    return np.concatenate(patches)[order], np.concatenate(labels)[order]


def load_textures_split(split: str = "train", size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches (N, 1, size, size) float32 in [0, 1] and labels (N,) int64 of one fixed split."""
    if split not in SPLITS:
        raise ConfigError(f"textures split must be one of {SPLITS}, got {split!r}.")
    if size not in SIZES:
        raise ConfigError(f"textures patch size must be one of {SIZES} pixels, got {size!r}; pick one.")
    x, y = _split(split, size)
    return torch.from_numpy(x.copy()).unsqueeze(1).contiguous(), torch.from_numpy(y.copy())
