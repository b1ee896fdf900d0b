"""`scenes-6`: 32×32 colour scenes (one shape on a textured background) with six class labels.

The second diffusion test bed (issue 14) needs colour images at 32×32 with enough structure that a
4-level U-Net has something to learn at every resolution, and class labels so a classifier trained
on the same data can give Fréchet-distance features. Built on `sims.data.shapes` [ours]:

- one object per image (`min_objects = max_objects = 1`), scale U[0.18, 0.32] × 32 px, centre in
  [0.25, 0.75] × 32 px; its shape (circle, square, triangle) is drawn by the shapes generator;
- two background kinds, fixed by the seed's parity: even seeds "smooth" (stripe_weight 0, texture
  σ 0.08 × 32 px: soft blotches), odd seeds "striped" (stripe_weight 0.9, 2–5 cycles per image);
- class = (shape id − 1) + 3 × background kind, so six classes: circle/square/triangle on smooth,
  then on striped. Both background kinds span the same two colours (the shapes generator
  min-max normalises its texture), so they differ in spatial structure only — a subtle cue next to
  the object, which is why the classifier needs thousands of steps;
- train seeds 0 … 5,999 and test seeds 1,000,000 … 1,001,199 (disjoint draws, so no test image was
  seen in training): 6,000 / 1,200 images, shape (N, 3, 32, 32) float32 in [0, 1].
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from methods.errors import ConfigError
from sims.data.shapes import ShapesConfig, make_shapes_image

IMAGE_SIZE = 32
CLASSES = ("circle/smooth", "square/smooth", "triangle/smooth",
           "circle/striped", "square/striped", "triangle/striped")
NUM_CLASSES = len(CLASSES)
SPLITS = ("train", "test")
SPLIT_SIZES = {"train": 6000, "test": 1200}
SPLIT_FIRST_SEED = {"train": 0, "test": 1_000_000}
_COMMON = {"image_size": IMAGE_SIZE, "min_objects": 1, "max_objects": 1, "size_range": (0.18, 0.32),
           "centre_margin": 0.25, "min_visible_area": 0.02}
BACKGROUNDS = (
    ShapesConfig(**_COMMON, stripe_weight=0.0, texture_sigma=0.08),
    ShapesConfig(**_COMMON, stripe_weight=0.9, stripe_freq=(2.0, 5.0)),
)


def make_scene(seed: int) -> tuple[np.ndarray, int]:
    """The scene with this seed: image (3, 32, 32) float32 in [0, 1] and its class index."""
    background = int(seed) % 2
    sample = make_shapes_image(int(seed), BACKGROUNDS[background])
    return sample.image, int(sample.labels[0]) - 1 + 3 * background


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    first = SPLIT_FIRST_SEED[split]
    pairs = [make_scene(first + i) for i in range(SPLIT_SIZES[split])]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)


def load_scenes_split(split: str = "train", size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels (N,) int64 of one fixed split."""
    if split not in SPLITS:
        raise ConfigError(f"scenes split must be one of {SPLITS}, got {split!r}.")
    if size != IMAGE_SIZE:
        raise ConfigError(f"scenes images are {IMAGE_SIZE}×{IMAGE_SIZE} only, got size={size!r}; pass "
                          f"{IMAGE_SIZE} (resize afterwards if another size is needed).")
    x, y = _split(split)
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
