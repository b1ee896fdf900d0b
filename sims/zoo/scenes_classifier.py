"""`scenes-classifier` and scene-FD: Fréchet distance in the features of a classifier of `scenes-6`.

The colour analogue of `digits-classifier` (same reasons, same maths: FID's formula on features of
a small classifier trained here, because Inception weights would be a download) for the second
diffusion test bed, `ddpm-scenes` (issue 14).

Our own design ([inferred]): inputs centred and scaled ((x − 0.5) / 0.25); four 3×3 convolutions
32/64/96/128 with ReLU (strides 1/2/2/2); a 128-unit fully connected layer; a linear head over the
six classes. No normalisation layers, so features do not depend on batch statistics (GroupNorm
was tried and sat at chance for 600 steps). AdamW 1e-3, 4,000 steps, ±2 px random shifts, label
smoothing 0.1. The feature is the 128-unit layer's output *before* its ReLU (full-rank Gaussian,
as in digit-FD).
Input (N, 3, 32, 32) in [0, 1]. Scene-FD values are comparable only with the same committed weights
and equal sample sizes (FD's small-sample bias grows as N shrinks).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.errors import ConfigError
from methods.metrics.frechet import frechet_distance_from_features
from sims.data.scenes import IMAGE_SIZE, NUM_CLASSES, load_scenes_split
from sims.zoo.registry import ZooSpec, load_zoo_model, register_zoo
from sims.zoo.training import (
    ClassifierRecipe,
    batched_features,
    card_table,
    classifier_card,
    fit_on_split,
    top1,
    write_zoo_files,
)

NAME = "scenes-classifier"
FEATURE_DIM = 128
RECIPE = ClassifierRecipe(steps=4000, batch_size=64, lr=1e-3, weight_decay=1e-4, max_shift=2,
                          label_smoothing=0.1)
INPUT_MEAN, INPUT_STD = 0.5, 0.25
FLOOR_SIZE = 1000  # the bench's sample count: real-vs-real FD at this size is the noise floor


class ScenesClassifier(nn.Module):
    """(N,3,32,32) in [0,1] → logits (N,6); `features` gives the 128-d penultimate pre-activations."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((3, 32, 1), (32, 64, 2), (64, 96, 2), (96, 128, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(128 * 4 * 4, FEATURE_DIM), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Centre and scale the [0, 1] input (fixed constants, part of the architecture): on raw
        # pixels the ReLU stack sat at chance for hundreds of steps.
        return self.body[:-1]((x - INPUT_MEAN) / INPUT_STD)  # pre-ReLU: see the module docstring

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


def build() -> nn.Module:
    return ScenesClassifier()


def _prepare(images: torch.Tensor | np.ndarray, value_range: tuple[float, float]) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE) or x.shape[0] < 2:
        raise ConfigError(
            f"scene-FD expects ≥ 2 colour images shaped (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got "
            f"{tuple(x.shape)}. Pass channel-first RGB batches at {IMAGE_SIZE}×{IMAGE_SIZE}."
        )
    lo, hi = value_range
    if not hi > lo:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range!r}.")
    x = (x - lo) / (hi - lo)
    if not torch.isfinite(x).all():
        raise ConfigError("images contain NaN or inf; the sampler diverged or the input is broken.")
    if float(x.min()) < -0.5 or float(x.max()) > 1.5:
        raise ConfigError(
            f"images span [{float(x.min()):.2f}, {float(x.max()):.2f}] after mapping value_range="
            f"{value_range} to [0, 1]; pass the range the images are in, e.g. value_range=(-1, 1)."
        )
    return x.clamp(0.0, 1.0)  # samplers overshoot a little; the classifier saw only [0, 1]


@torch.no_grad()
def scene_features(
    model: nn.Module | None, images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 512,
) -> np.ndarray:
    """Penultimate (128-d, pre-ReLU) features of `images` as a float64 array (N, 128)."""
    model = model if model is not None else load_zoo_model(NAME)
    return batched_features(model, _prepare(images, value_range), batch_size)


def scene_fd(
    images_a: torch.Tensor | np.ndarray, images_b: torch.Tensor | np.ndarray, model: nn.Module | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> float:
    """Scene-FD between two image sets (same `value_range`); loads the committed classifier if needed."""
    model = model if model is not None else load_zoo_model(NAME)
    return frechet_distance_from_features(
        scene_features(model, images_a, value_range), scene_features(model, images_b, value_range)
    )


def evaluate(model: nn.Module) -> dict[str, float]:
    """Top-1 and the scale of scene-FD: real-vs-real floors at the bench's size, blur and noise."""
    test, y = load_scenes_split("test")
    train, _ = load_scenes_split("train")
    out = {"test_top1": top1(model, test, y)}
    feats_test = scene_features(model, test)
    gen = torch.Generator().manual_seed(0)
    floors = []
    for _ in range(4):  # four disjoint-ish draws of FLOOR_SIZE real training scenes
        pick = torch.randperm(len(train), generator=gen)[:FLOOR_SIZE]
        floors.append(frechet_distance_from_features(feats_test, scene_features(model, train[pick])))
    out[f"fd_test_vs_train{FLOOR_SIZE}_min"] = float(min(floors))
    out[f"fd_test_vs_train{FLOOR_SIZE}_max"] = float(max(floors))
    kernel = torch.full((3, 1, 3, 3), 1.0 / 9.0)
    blur = torch.nn.functional.conv2d(test, kernel, padding=1, groups=3)
    out["fd_test_vs_blur3x3"] = frechet_distance_from_features(feats_test, scene_features(model, blur))
    noise = torch.rand(test.shape, generator=gen)
    out["fd_test_vs_noise"] = frechet_distance_from_features(feats_test, scene_features(model, noise))
    return out


def fit(seed: int = 0, steps: int | None = None) -> tuple[nn.Module, list[float]]:
    return fit_on_split(load_scenes_split, build, RECIPE, IMAGE_SIZE, seed, steps)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    model, losses = fit(seed, steps)
    wall = time.perf_counter() - start
    metrics = evaluate(model)
    card = classifier_card(
        NAME, model, RECIPE, IMAGE_SIZE, seed, steps, wall, losses,
        data="sims.data.scenes train split (6000 images, 6 classes) at 32x32 RGB, [0,1]; test 1200",
        feature_dim=FEATURE_DIM, **metrics,
    )
    floor_keys = [f"fd_test_vs_train{FLOOR_SIZE}_min", f"fd_test_vs_train{FLOOR_SIZE}_max"]
    md = f"""# scenes-classifier (scene-FD feature model)

Small conv classifier of 32×32 colour `scenes-6` images in [0, 1] whose 128-d penultimate features
(pre-ReLU) define **scene-FD** (`sims.zoo.scenes_classifier.scene_fd`, maths in
`methods/metrics/frechet.py`), the FD features of the `ddpm-scenes` test bed.

{card_table(card, ["data", "steps", "seed", "wall_time_s", "test_top1", "param_count"])}

## Scale of scene-FD (test split, 1,200 images, against ...)

{card_table(card, [*floor_keys, "fd_test_vs_blur3x3", "fd_test_vs_noise"])}

The first two rows are the real-vs-real floor: four random draws of {FLOOR_SIZE} real training scenes
scored against the test split (min and max). A generated set of {FLOOR_SIZE} samples inside that
range is indistinguishable from real scenes to this classifier. Blur is a 3×3 box filter per
channel; noise is uniform in [0, 1].
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="32x32 scenes-6 classifier whose 128-d features define scene-FD (ddpm-scenes)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.9},
    )
)
