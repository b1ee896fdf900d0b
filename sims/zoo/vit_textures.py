"""`vit-textures`: the `vit-digits` timm ViT trained on textures-10 (a ViT PTQ bed with headroom).

Architecture: `sims.zoo.vit_digits.build` — timm's `VisionTransformer` ("An Image is Worth 16x16
Words", arXiv:2010.11929), 16×16 grey input, patch 4, width 64, depth 4, 2 heads, MLP ratio 2 [ours].
Recipe [ours]: the vit-digits recipe (AdamW 2e-3, weight decay 0.05, cosine decay, label smoothing
0.1, ±1 px shifts, batch 64, 4000 steps, one thread). The card records the post-LayerNorm channel
range spread (max/min over channels of each LayerNorm output's per-channel range), the quantity
RepQ-ViT and MGRQ act on: no RepQ-ViT/MGRQ effect may be claimed on a model without a large spread.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sims.zoo import vit_digits
from sims.zoo.registry import ZooSpec, register_zoo
from sims.zoo.textures_training import TEXTURES_DATA, fit_textures, textures_top1
from sims.zoo.training import card_table, classifier_card, write_zoo_files

NAME = "vit-textures"
IMAGE_SIZE = 16
RECIPE = vit_digits.RECIPE


def build() -> nn.Module:
    """timm `VisionTransformer` with `vit_digits.VIT_KWARGS`, fresh weights: (N,1,16,16) → (N,10)."""
    return vit_digits.build()


def fit(seed: int = 0, steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train from scratch deterministically; `steps` overrides the recipe (tests use a few)."""
    return fit_textures(build, RECIPE, IMAGE_SIZE, seed, steps)


@torch.no_grad()
def layernorm_channel_spread(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per LayerNorm: max over channels of the channel's output range / min over channels (on `x`)."""
    ranges: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            def grab(_m, _a, out, n=name):
                flat = out.reshape(-1, out.shape[-1])
                r = flat.max(0).values - flat.min(0).values
                ranges[n] = torch.maximum(ranges[n], r) if n in ranges else r
            hooks.append(m.register_forward_hook(grab))
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: float(r.max() / r.min().clamp_min(1e-12)) for n, r in ranges.items()}


def evaluate(model: nn.Module) -> dict[str, float]:
    return textures_top1(model, IMAGE_SIZE)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    from sims.data.textures import load_textures_split

    start = time.perf_counter()
    model, losses = fit(seed, steps)
    wall = time.perf_counter() - start
    spread = layernorm_channel_spread(model, load_textures_split("train", IMAGE_SIZE)[0][:512])
    card = classifier_card(
        NAME, model, RECIPE, IMAGE_SIZE, seed, steps, wall, losses,
        data=TEXTURES_DATA.format(size=IMAGE_SIZE),
        architecture={"class": "timm.models.vision_transformer.VisionTransformer", **vit_digits.VIT_KWARGS},
        post_layernorm_channel_spread=spread, max_post_layernorm_spread=max(spread.values()),
        **evaluate(model),
    )
    md = f"""# vit-textures

The vit-digits architecture (timm `VisionTransformer`, 16×16 grey input, patch 4, width 64, depth 4,
2 heads, MLP ratio 2) trained on textures-10 (sims/data/textures.py). A ViT post-training
quantization bed with headroom.

Trained by `evfarm zoo train {NAME}` (`sims/zoo/vit_textures.py`): one thread, deterministic kernels,
AdamW + cosine decay, label smoothing 0.1, ±1 px random shifts.

{card_table(card, ["data", "steps", "seed", "wall_time_s", "test_top1", "train_top1", "param_count",
                   "max_post_layernorm_spread"])}

Post-LayerNorm channel range spread (max channel range / min channel range, 512 train patches),
per LayerNorm: {", ".join(f"{k} {v:.1f}x" for k, v in spread.items())}. RepQ-ViT and MGRQ target
spreads of 10x and more; below that, their effects here are not evidence about outlier handling.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="small timm ViT classifier of 16x16 texture patches (ViT PTQ with headroom)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.5},
    )
)
