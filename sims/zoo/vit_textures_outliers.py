"""`vit-textures-outliers`: `vit-textures` with post-LayerNorm outlier channels, float-equivalent.

Why: the trained tiny ViTs have no post-LayerNorm channel outliers (channel range spread at most
4.8x on vit-textures' card), while RepQ-ViT and MGRQ exist to handle the systematic outlier channels
of real ViTs (RepQ-ViT, arXiv 2212.08254, Fig. 1: post-LayerNorm channel ranges that differ by
tens of times in DeiT/Swin). Training a 0.14M-parameter ViT longer does not make them appear
reliably, so this bed *constructs* them [ours]:

* For every LayerNorm that feeds a Linear (each block's `norm1` -> `attn.qkv`, `norm2` -> `mlp.fc1`,
  the final `norm` -> `head`), `channels` of its output channels, drawn by `seed`, get factors
  log-uniform in [`low`, `high`]: gamma_c and beta_c are multiplied by a_c and the consumer's input
  column c is divided by a_c. The network computes the same function in float (tested to 1e-5
  relative), but the activation the consumer's quantizer sees now has outlier channels — the shape
  of the real phenomenon (few systematic channels, set by the LayerNorm affine) — and those columns
  of the weight are small, as in a model whose outliers were learned into gamma.
* What this bed cannot say: whether real outliers arise the same way in training, or how methods
  fare on outliers that are not a pure per-channel scale (token-wise outliers, massive activations).

No training: `train` loads vit-textures' committed weights and applies the transform
deterministically; its card records the spread before and after and the FP top-1 (equal to
vit-textures' by construction, checked).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sims.zoo import vit_digits, vit_textures
from sims.zoo.registry import ZooSpec, load_zoo_model, register_zoo
from sims.zoo.textures_training import TEXTURES_DATA, textures_top1
from sims.zoo.training import card_table, classifier_card, write_zoo_files

NAME = "vit-textures-outliers"
IMAGE_SIZE = vit_textures.IMAGE_SIZE
CHANNELS = 4  # outlier channels per LayerNorm (of 64)
LOW, HIGH = 8.0, 32.0  # their factors, log-uniform


def norm_consumer_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, nn.Linear]]:
    """(name, LayerNorm, the Linear reading it) for every block's norm1/norm2 and the final norm."""
    pairs = []
    for i, blk in enumerate(model.blocks):
        pairs.append((f"blocks.{i}.norm1", blk.norm1, blk.attn.qkv))
        pairs.append((f"blocks.{i}.norm2", blk.norm2, blk.mlp.fc1))
    if not isinstance(model.fc_norm, nn.Identity):
        raise ValueError("expected class-token pooling (fc_norm Identity): the final norm feeds the head")
    pairs.append(("norm", model.norm, model.head))
    return pairs


@torch.no_grad()
def inject_outlier_channels(model: nn.Module, channels: int = CHANNELS, low: float = LOW, high: float = HIGH,
                            seed: int = 0) -> dict[str, dict[int, float]]:
    """Scale `channels` post-LayerNorm channels per LayerNorm by a_c in [low, high], undone in the
    consumer's weight columns (in place); returns {layernorm: {channel: factor}}."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, float]] = {}
    for name, norm, linear in norm_consumer_pairs(model):
        width = norm.weight.numel()
        idx = torch.randperm(width, generator=gen)[:channels]
        u = torch.rand(channels, generator=gen, dtype=torch.float64)
        factors = torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).float()
        norm.weight[idx] *= factors
        norm.bias[idx] *= factors
        linear.weight[:, idx] /= factors
        out[name] = {int(c): float(f) for c, f in zip(idx, factors, strict=True)}
    return out


def build() -> nn.Module:
    return vit_digits.build()


def evaluate(model: nn.Module) -> dict[str, float]:
    return textures_top1(model, IMAGE_SIZE)


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    """Derive the model from vit-textures' committed weights (`steps` is unused: nothing is trained)."""
    from sims.data.textures import load_textures_split

    start = time.perf_counter()
    model = load_zoo_model(vit_textures.NAME)
    probe = load_textures_split("train", IMAGE_SIZE)[0][:512]
    before = vit_textures.layernorm_channel_spread(model, probe)
    factors = inject_outlier_channels(model, seed=seed)
    after = vit_textures.layernorm_channel_spread(model, probe)
    wall = time.perf_counter() - start
    scores = evaluate(model)
    card = classifier_card(
        NAME, model, vit_textures.RECIPE, IMAGE_SIZE, seed, 0, wall, [float("nan")],
        data=TEXTURES_DATA.format(size=IMAGE_SIZE),
        architecture={"class": "timm.models.vision_transformer.VisionTransformer", **vit_digits.VIT_KWARGS},
        derived_from=vit_textures.NAME,
        transform={"channels_per_layernorm": CHANNELS, "factor_low": LOW, "factor_high": HIGH,
                   "factors": {k: {str(c): f for c, f in v.items()} for k, v in factors.items()}},
        post_layernorm_channel_spread_before=before, post_layernorm_channel_spread=after,
        max_post_layernorm_spread=max(after.values()), min_post_layernorm_spread=min(after.values()),
        **scores,
    )
    card["steps"] = 0
    card.pop("final_loss", None)
    md = f"""# vit-textures-outliers

`vit-textures` with constructed post-LayerNorm outlier channels: per LayerNorm feeding a Linear,
{CHANNELS} channels get gamma and beta multiplied by factors log-uniform in [{LOW:g}, {HIGH:g}] and the
consumer's input columns divided by the same factors — the same function in float, but activations
with the few systematic outlier channels RepQ-ViT and MGRQ are built for. Constructed, not learned
[ours]: see `sims/zoo/vit_textures_outliers.py` for what this bed can and cannot say.

Made by `evfarm zoo train {NAME}` (no training; deterministic from vit-textures' weights).

{card_table(card, ["data", "derived_from", "seed", "test_top1", "train_top1", "param_count",
                   "min_post_layernorm_spread", "max_post_layernorm_spread"])}

Post-LayerNorm channel range spread (max channel range / min channel range, 512 train patches),
before -> after: {", ".join(f"{k} {before[k]:.1f}x -> {after[k]:.1f}x" for k in after)}.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric="test_top1",
        description="vit-textures with constructed post-LayerNorm outlier channels (RepQ-ViT/MGRQ bed)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.005, "target": 0.5},
    )
)
