"""The search rig's panorama segmenter as the rig uses it: architecture, class order, inference.

Split from `sims/zoo/search_segmenter.py` (training, card, zoo registration), which renders its
training scenes with `sims/rigs/search_rig.py`; the rig in turn calls `segment_panorama` here, so
this module imports nothing of the rig (no import circle). Weights: the zoo's `search-segmenter`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from methods.errors import ConfigError
from sims.zoo.registry import load_zoo_model

NAME = "search-segmenter"
CLASS_NAMES = ("road", "sidewalk", "tree", "building", "sky")
ARCH = {"width": 16, "dilations": (1, 2, 4, 8), "in_channels": 4, "n_classes": len(CLASS_NAMES)}


class TinySegmenter(nn.Module):
    """conv3x3(dilation d) → BN → ReLU for each d, then a 1x1 classifier."""

    def __init__(self, width: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8), in_channels: int = 4,
                 n_classes: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for d in dilations:
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build() -> nn.Module:
    return TinySegmenter(**ARCH)


def with_coords(img: np.ndarray, row0: float = 0.0, height: float | None = None) -> torch.Tensor:
    """(H, W, 3) image → (4, H, W) tensor with the row coordinate (row / image height − 0.5) appended."""
    h, w, _ = img.shape
    height = height or h
    rows = ((np.arange(h) + row0 + 0.5) / height - 0.5)[:, None].repeat(w, axis=1)
    return torch.from_numpy(np.concatenate([img.transpose(2, 0, 1), rows[None]], axis=0).astype(np.float32))


def check_classes(cfg_names: tuple[str, ...]) -> np.ndarray:
    missing = [n for n in cfg_names if n not in CLASS_NAMES]
    if missing:
        raise ConfigError(f"The search segmenter knows the classes {CLASS_NAMES}; the rig config asks for "
                          f"{missing} as well. Use those classes in class_priors/bands, or retrain the "
                          "segmenter with `python -m sims.zoo.search_segmenter` after adding them.")
    return np.array([CLASS_NAMES.index(n) for n in cfg_names])


@functools.lru_cache(maxsize=1)
def loaded_segmenter() -> nn.Module:
    return load_zoo_model(NAME)


@torch.no_grad()
def segment_panorama(img: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Softmax class probabilities (H, W, C) of a rendered panorama, columns in `class_names` order."""
    idx = check_classes(tuple(class_names))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = loaded_segmenter()(with_coords(np.asarray(img, dtype=np.float32))[None])[0]
    finally:
        torch.set_num_threads(old)
    probs = torch.softmax(logits, dim=0).numpy().transpose(1, 2, 0)
    out = probs[..., idx]
    return out / out.sum(-1, keepdims=True)
