"""`digits-classifier` and digit-FD: a Fréchet distance in the feature space of a tiny digit classifier.

FID ("GANs Trained by a Two Time-Scale Update Rule ...", Heusel et al., arXiv:1706.08500) scores
generated images by the Fréchet distance between Gaussians fitted to Inception-v3 pool features of
real and generated sets. Inception weights are a download, so the tiny-scale plan
(reference/quant.md §9, "digit-FD") uses a small classifier trained here on digits instead. The
formula and its numerics follow the paper and pytorch-fid (see `methods.metrics.frechet`).

Our own design ([inferred]): the classifier (three 3×3 convolutions 32/64/64 with ReLU, stride
1/2/2, a 64-unit fully connected layer with ReLU, a linear head), no
BatchNorm so features do not depend on batch statistics, ±2 px random shifts and label smoothing
during training so features vary smoothly with small image changes; 16×16 input in [0, 1], the
`ddpm-digits` resolution. The feature is the 64-unit layer's output *before* its ReLU (after
the ReLU half the units are dead on real digits, which leaves a rank-deficient Gaussian). 8×8 or
32×32 images are resized bilinearly (as `sims.data.digits` does) before feature extraction.
Digit-FD values are only comparable with the same committed weights.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError
from methods.metrics.frechet import frechet_distance_from_features
from sims.data.digits import NUM_CLASSES, load_digits_split
from sims.zoo.registry import ZooSpec, load_zoo_model, register_zoo
from sims.zoo.training import (
    ClassifierRecipe,
    batched_features,
    card_table,
    classifier_card,
    fit_digits,
    top1,
    write_zoo_files,
)

NAME = "digits-classifier"
IMAGE_SIZE = 16
FEATURE_DIM = 64
RECIPE = ClassifierRecipe(steps=1500, batch_size=64, lr=2e-3, weight_decay=1e-4, max_shift=2,
                          label_smoothing=0.1)


class DigitsClassifier(nn.Module):
    """(N,1,16,16) in [0,1] → logits (N,10); `features` gives the 64-d penultimate pre-activations."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-ReLU output of the 64-unit layer: about half the units are dead after the ReLU on
        # real digits (zero variance), which would leave a rank-deficient, rectified Gaussian.
        return self.body[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build() -> nn.Module:
    return DigitsClassifier()


def _prepare(images: torch.Tensor | np.ndarray, value_range: tuple[float, float]) -> torch.Tensor:
    """Validate, rescale to [0, 1], clamp and resize images to (N, 1, 16, 16) float32."""
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2] or x.shape[0] < 2:
        raise ConfigError(
            f"digit-FD expects ≥ 2 square grey images shaped (N, 1, H, W) or (N, H, W), got "
            f"{tuple(x.shape)}. Convert colour or batch-first layouts before calling."
        )
    lo, hi = value_range
    if not hi > lo:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range!r}.")
    x = (x - lo) / (hi - lo)
    if not torch.isfinite(x).all():
        raise ConfigError("images contain NaN or inf; the sampler diverged or the input is broken.")
    lo_seen, hi_seen = float(x.min()), float(x.max())
    if lo_seen < -0.5 or hi_seen > 1.5:
        raise ConfigError(
            f"images span [{lo_seen:.2f}, {hi_seen:.2f}] after mapping value_range={value_range} to "
            f"[0, 1]; that is far outside. Pass the range the images are in, e.g. value_range=(-1, 1)."
        )
    x = x.clamp(0.0, 1.0)  # samplers overshoot a little; the classifier saw only [0, 1]
    if x.shape[-1] != IMAGE_SIZE:
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        x = x.clamp(0.0, 1.0)
    return x


@torch.no_grad()
def digit_features(
    model: nn.Module | None, images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 512,
) -> np.ndarray:
    """Penultimate (64-d, pre-ReLU) features of `images` as a float64 array (N, 64)."""
    model = model if model is not None else load_zoo_model(NAME)
    return batched_features(model, _prepare(images, value_range), batch_size)


def digit_fd(
    images_a: torch.Tensor | np.ndarray, images_b: torch.Tensor | np.ndarray, model: nn.Module | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> float:
    """Digit-FD between two image sets (same `value_range`); loads the committed classifier if needed."""
    model = model if model is not None else load_zoo_model(NAME)
    return frechet_distance_from_features(
        digit_features(model, images_a, value_range), digit_features(model, images_b, value_range)
    )


def reference_images(seed: int = 0) -> dict[str, torch.Tensor]:
    """Sets that show the digit-FD scale: real train digits (all, and 256 of them: the floor for a
    256-sample score), uniform noise, blurred and shifted test digits."""
    test, _ = load_digits_split("test", IMAGE_SIZE)
    train, _ = load_digits_split("train", IMAGE_SIZE)
    gen = torch.Generator().manual_seed(seed)
    kernel = torch.full((1, 1, 3, 3), 1.0 / 9.0)
    blur = F.conv2d(F.conv2d(test, kernel, padding=1), kernel, padding=1)
    return {
        "train": train,
        "train256": train[torch.randperm(len(train), generator=gen)[:256]],
        "noise": torch.rand(test.shape, generator=gen),
        "blur3x3x2": blur,
        "shift2px": F.pad(test, (2, 0, 2, 0))[:, :, :IMAGE_SIZE, :IMAGE_SIZE],  # down-right, zero fill
    }


def evaluate(model: nn.Module) -> dict[str, float]:
    test, y = load_digits_split("test", IMAGE_SIZE)
    out = {"test_top1": top1(model, test, y)}
    feats_test = digit_features(model, test)
    for key, imgs in reference_images().items():
        out[f"fd_test_vs_{key}"] = frechet_distance_from_features(feats_test, digit_features(model, imgs))
    return out


def fit(seed: int = 0, steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train from scratch deterministically; `steps` overrides the recipe (tests use a few)."""
    return fit_digits(build, RECIPE, IMAGE_SIZE, seed, steps)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    model, losses = fit(seed, steps)
    wall = time.perf_counter() - start
    metrics = evaluate(model)
    card = classifier_card(
        NAME, model, RECIPE, IMAGE_SIZE, seed, steps, wall, losses,
        data=f"sims.data.digits train split (1347 images) at {IMAGE_SIZE}x{IMAGE_SIZE}, [0,1]",
        feature_dim=FEATURE_DIM, **metrics,
    )
    md = f"""# digits-classifier (digit-FD feature model)

Small conv classifier of 16×16 digits in [0, 1] whose 64-d penultimate features (pre-ReLU) define
**digit-FD**: the Fréchet distance between Gaussians fitted to the features of two image sets
(`sims.zoo.digits_classifier.digit_fd`, maths in `methods/metrics/frechet.py`). It stands in for
FID's Inception features, which would need a download.

{card_table(card, ["data", "steps", "seed", "wall_time_s", "test_top1", "param_count"])}

## Scale of digit-FD (test split, 450 images, against ...)

{card_table(card, ["fd_test_vs_train", "fd_test_vs_train256", "fd_test_vs_blur3x3x2", "fd_test_vs_shift2px",
                    "fd_test_vs_noise"])}

`fd_test_vs_train` is the floor: two real sets of different digits (`fd_test_vs_train256`: 256
random real training digits, the floor for a score of 256 generated samples). Blur is a 3×3 box
filter applied twice; shift moves the test digits 2 px down-right with zero fill; noise is uniform
in [0, 1]. Values near the floor mean
"indistinguishable from real digits to this classifier"; values near `fd_test_vs_noise` mean
"no digit structure". Digit-FD of N generated samples carries a small-sample bias (fewer samples →
larger FD), so compare sets of equal size only.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="16x16 digits classifier whose 64-d features define digit-FD",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.95},
    )
)
