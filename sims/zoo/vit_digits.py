"""`vit-digits`: a small timm `VisionTransformer` classifier of 16×16 digits (transformer PTQ target).

Architecture: timm's own `VisionTransformer` ("An Image is Worth 16x16 Words", Dosovitskiy et al.,
arXiv:2010.11929), built from timm's class with `pretrained=False`, configured small: 16×16 grey
input, patch 4 (4×4 = 16 tokens + class token), width 64, depth 4, 2 heads, MLP ratio 2. Using
timm's class means quantizers and hooks written against timm ViTs (`blocks[i].attn.qkv`,
`blocks[i].mlp.fc1`, ...) run unchanged on this model and on a real timm checkpoint.

Our own choices ([inferred]): the size (env.md §5 measured a similar 0.31M model), AdamW 2e-3 with
weight decay 0.05 and cosine decay, label smoothing 0.1 and ±1 px random shifts (ViTs lack the
convolution's translation prior, and 1347 images are few), 4000 steps at batch 64, one thread.
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

NAME = "vit-digits"
IMAGE_SIZE = 16
VIT_KWARGS: dict[str, Any] = {
    "img_size": IMAGE_SIZE,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": NUM_CLASSES,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 2,
    "mlp_ratio": 2.0,
}
RECIPE = ClassifierRecipe(steps=4000, batch_size=64, lr=2e-3, weight_decay=0.05, max_shift=1,
                          label_smoothing=0.1)


def build() -> nn.Module:
    """timm `VisionTransformer` with `VIT_KWARGS`, fresh weights: (N,1,16,16) in [0,1] → (N,10)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**VIT_KWARGS)


def fit(seed: int = 0, steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train from scratch deterministically; `steps` overrides the recipe (tests use a few)."""
    return fit_digits(build, RECIPE, IMAGE_SIZE, seed, steps)


def evaluate(model: nn.Module) -> dict[str, float]:
    return digits_top1(model, IMAGE_SIZE)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    model, losses = fit(seed, steps)
    wall = time.perf_counter() - start
    card = classifier_card(
        NAME, model, RECIPE, IMAGE_SIZE, seed, steps, wall, losses, data=DIGITS_DATA.format(size=IMAGE_SIZE),
        architecture={"class": "timm.models.vision_transformer.VisionTransformer", **VIT_KWARGS},
        **evaluate(model),
    )
    md = f"""# vit-digits

timm `VisionTransformer` (pretrained=False) configured small: 16×16 grey input, patch 4, width 64,
depth 4, 2 heads, MLP ratio 2, class-token pooling. Target for ViT post-training quantization;
module names are timm's own, so code written for real timm ViTs runs on it.

Trained by `evfarm zoo train {NAME}` (`sims/zoo/vit_digits.py`): one thread, deterministic kernels,
AdamW + cosine decay, label smoothing 0.1, ±1 px random shifts.

{card_table(card, ["data", "steps", "seed", "wall_time_s", "test_top1", "train_top1", "param_count"])}

Limitations: trained on 1347 images only; accuracy is below the conv models' on this data, as
expected for a ViT without a convolutional prior at this scale.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="small timm VisionTransformer classifier of 16x16 digits (ViT PTQ)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.90},
    )
)
