"""`cnn-bn-digits`: a three-layer conv + BatchNorm classifier of 16×16 digits (TTA and CNN PTQ target).

The architecture is the "TinyCNN" of the TTAQ tiny-scale plan (reference/quant.md §9.4, for
"TTAQ: Towards Stable Post-training Quantization in Continuous Domain Adaptation",
arXiv:2412.09899): three 3×3 convolutions with 16/32/64 channels, each followed by BatchNorm and
ReLU, global average pooling and a linear layer. BatchNorm is the point: Tent-style test-time
adaptation updates its affine parameters and statistics.

Our own choices ([inferred]): 16×16 input (the 8×8 digits bilinearly upsampled by
`sims.data.digits`) so that blur, pixelation, occlusion and translation corruptions of digits-C
have room to act, the same resolution as `ddpm-digits`; stride 2 in the last two convolutions
(16→8→4); AdamW 3e-3 with cosine decay, batch 64, ±1 px random shifts, 1500 steps, one thread.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from sims.data.digits import NUM_CLASSES
from sims.zoo.registry import ZooSpec, register_zoo
from sims.zoo.training import (
    DIGITS_DATA,
    ClassifierRecipe,
    card_table,
    classifier_card,
    digits_top1,
    fit_digits,
    write_zoo_files,
)

NAME = "cnn-bn-digits"
IMAGE_SIZE = 16
CHANNELS = (16, 32, 64)
RECIPE = ClassifierRecipe(steps=1500, batch_size=64, lr=3e-3, weight_decay=1e-4, max_shift=1)


def build() -> nn.Module:
    """The architecture with fresh weights: (N,1,16,16) in [0,1] → (N,10) logits."""
    layers: list[nn.Module] = []
    c_in = 1
    for i, c_out in enumerate(CHANNELS):
        stride = 1 if i == 0 else 2
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, NUM_CLASSES))


def fit(seed: int = 0, steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train from scratch deterministically; `steps` overrides the recipe (tests use a few)."""
    return fit_digits(build, RECIPE, IMAGE_SIZE, seed, steps)


def evaluate(model: nn.Module) -> dict[str, float]:
    return digits_top1(model, IMAGE_SIZE)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    """Train, measure and write weights + card into `out_dir` (default: the committed zoo folder)."""
    start = time.perf_counter()
    model, losses = fit(seed, steps)
    wall = time.perf_counter() - start
    metrics = evaluate(model)
    data = DIGITS_DATA.format(size=IMAGE_SIZE)
    card = classifier_card(NAME, model, RECIPE, IMAGE_SIZE, seed, steps, wall, losses, data=data, **metrics)
    md = f"""# cnn-bn-digits

Three-layer conv + BatchNorm + ReLU classifier (channels {CHANNELS}, stride 1/2/2, global average
pool, linear) of 16×16 digits in [0, 1]. Architecture of the TTAQ tiny-scale plan; used for
test-time adaptation (Tent on BN affine parameters) and CNN post-training quantization.

Trained by `evfarm zoo train {NAME}` (`sims/zoo/cnn_bn_digits.py`): one thread, deterministic
kernels, ±1 px random shifts, AdamW with cosine decay.

{card_table(card, ["data", "steps", "seed", "wall_time_s", "test_top1", "train_top1", "param_count"])}

Limitations: 1347 training images of one small scanned-digits set; not calibrated; the test split
is the fixed 25 % stratified split of `sims.data.digits`.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="conv+BatchNorm classifier of 16x16 digits (TTA, CNN PTQ)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.95},
    )
)
