"""`sam-shapes`: a small Segment Anything model trained on the synthetic `shapes` data.

The tiny stand-in for SAM ("Segment Anything", arXiv 2304.02643) on which SAQ-SAM
("SAQ-SAM: Semantically-Aligned Quantization for Segment Anything Model", arXiv 2503.06515) is
checked at small scale (quant.md §9.1). The model is assembled from segment_anything's own classes
[code]: `ImageEncoderViT` (patch embedding, absolute + relative position embeddings, windowed
attention blocks with global-attention blocks at `global_attn_indexes`, conv neck),
`PromptEncoder` (random-Fourier point/box embeddings) and `MaskDecoder` with a `TwoWayTransformer`.
The encoder has two stages, each ending in a global block, like SAM-B's four stages of three.

Training follows the SAM paper's recipe in spirit [paper]: mixed box and point prompts, boxes
jittered by noise proportional to their side, points drawn uniformly inside the object, a
mask loss on the single-mask output plus the minimum loss over the three multimask outputs, and
an MSE loss teaching the IoU head the IoU of each output. BCE + dice (instead of SAM's 20:1
focal + dice), the sizes, optimiser and schedule are our own choices for a CPU run [inferred].

Because `Sam.forward` is `@torch.no_grad()` and its `MaskDecoder.forward` expects one image per
call, training and evaluation use `decode_masks`, which runs the decoder's own submodules on a
batch of prompts from different images; a test checks it equals `MaskDecoder.forward`.
"""
from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError
from methods.metrics.masks import map_lite, mask_iou, shapes_mask_ap
from sims.data.shapes import ShapesBatch, ShapesConfig, make_shapes_dataset, stack_samples
from sims.zoo.registry import WEIGHTS_DIR, ZooSpec, card_path, register_zoo, save_zoo_weights, weights_path

NAME = "sam-shapes"
TRAIN_FIRST_SEED = 0
TEST_FIRST_SEED = 1_000_000  # far from the training seeds: the held-out images are disjoint
PIXEL_MEAN = (0.5, 0.5, 0.5)  # images are in [0, 1]; Sam.preprocess normalises with these
PIXEL_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class SamShapesConfig:
    """Architecture of the tiny Sam (64-px RGB input, 8-px patches → 8×8 tokens → 32×32 mask logits)."""

    img_size: int = 64
    patch_size: int = 8
    encoder_dim: int = 64
    encoder_depth: int = 4
    encoder_heads: int = 2
    global_attn_indexes: tuple[int, ...] = (1, 3)
    window_size: int = 4
    prompt_dim: int = 64
    decoder_mlp_dim: int = 256
    decoder_heads: int = 2
    version: int = 1

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}.")
        if any(not 0 <= i < self.encoder_depth for i in self.global_attn_indexes):
            raise ConfigError(
                f"global_attn_indexes {self.global_attn_indexes} must lie in [0, {self.encoder_depth})."
            )
        if self.prompt_dim % 8 or self.encoder_dim % self.encoder_heads:
            raise ConfigError("prompt_dim must be a multiple of 8 and encoder_dim of encoder_heads.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SamShapesRecipe:
    """Data, optimiser and schedule of `train` (recorded in the model card)."""

    steps: int = 3000
    images_per_step: int = 16
    train_images: int = 4000
    test_images: int = 200
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    box_fraction: float = 0.5
    box_noise: float = 0.1  # std of corner jitter, as a fraction of the box side
    grad_clip: float = 1.0
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "images_per_step", "train_images", "test_images", "warmup_steps"):
            value, least = getattr(self, name), 0 if name == "warmup_steps" else 1
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"sam-shapes recipe {name} must be an int >= {least}, got {value!r}.")
        if self.train_images < self.images_per_step:
            raise ConfigError(
                f"sam-shapes recipe needs train_images >= images_per_step, got {self.train_images} "
                f"< {self.images_per_step}."
            )
        valid = 0.0 <= self.box_fraction <= 1.0 and self.lr > 0 and self.box_noise >= 0
        if not (valid and self.grad_clip > 0):
            raise ConfigError(
                f"sam-shapes recipe needs 0 <= box_fraction <= 1, lr > 0, box_noise >= 0, grad_clip > 0; "
                f"got {self.box_fraction}, {self.lr}, {self.box_noise}, {self.grad_clip}."
            )

    def to_dict(self) -> dict:
        return asdict(self)


def build_sam_shapes(config: SamShapesConfig | None = None) -> nn.Module:
    """The tiny `Sam` with freshly initialised weights (draws from torch's global generator)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c = config or SamShapesConfig()
    grid = c.img_size // c.patch_size
    encoder = ImageEncoderViT(
        img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.encoder_dim, depth=c.encoder_depth,
        num_heads=c.encoder_heads, mlp_ratio=4.0, out_chans=c.prompt_dim, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=c.window_size,
        global_attn_indexes=c.global_attn_indexes,
    )
    # SAM zero-initialises pos_embed because it loads pretrained weights; from scratch a small
    # random start breaks the symmetry between positions [inferred].
    nn.init.trunc_normal_(encoder.pos_embed, std=0.02)
    prompt = PromptEncoder(embed_dim=c.prompt_dim, image_embedding_size=(grid, grid),
                           input_image_size=(c.img_size, c.img_size), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=c.prompt_dim, mlp_dim=c.decoder_mlp_dim,
                                      num_heads=c.decoder_heads),
        transformer_dim=c.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=c.prompt_dim,
    )
    return Sam(encoder, prompt, decoder, pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD)).eval()


def decode_masks(sam: nn.Module, image_embeddings: torch.Tensor, sparse: torch.Tensor,
                 dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four mask logits (P, 4, h, w) and IoU predictions (P, 4) for P prompts.

    `image_embeddings` is (P, C, h, w): one (possibly repeated) image embedding per prompt. This is
    `MaskDecoder.predict_masks` with the per-image `repeat_interleave` left out, so prompts of
    different images can share one call; index 0 is the single-mask output, 1..3 the multimask ones.
    """
    dec = sam.mask_decoder
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse], dim=1)
    src = image_embeddings + dense
    pos = sam.prompt_encoder.get_dense_pe().expand(src.size(0), -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos, tokens)
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    bu, cu, hu, wu = upscaled.shape
    masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
    return masks, dec.iou_prediction_head(hs[:, 0, :])


def encode_prompts(sam: nn.Module, boxes: torch.Tensor, points: torch.Tensor,
                   use_box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse (P, 2, C) and dense embeddings; prompt p is boxes[p] if use_box[p] else points[p].

    A box gives two corner tokens and a lone point gives the point plus SAM's padding token, so
    both kinds have two tokens and mix in one batch.
    """
    pe = sam.prompt_encoder
    n = boxes.size(0)
    sparse = torch.zeros(n, 2, pe.embed_dim)
    if bool(use_box.any()):
        sparse_b, _ = pe(points=None, boxes=boxes[use_box], masks=None)
        sparse = sparse.index_put((use_box.nonzero().flatten(),), sparse_b)
    if bool((~use_box).any()):
        pts = points[~use_box].unsqueeze(1)
        sparse_p, _ = pe(points=(pts, torch.ones(pts.shape[:2])), boxes=None, masks=None)
        sparse = sparse.index_put(((~use_box).nonzero().flatten(),), sparse_p)
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, *pe.image_embedding_size)
    return sparse, dense


def predict(sam: nn.Module, images: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor,
            points: torch.Tensor, use_box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits at image resolution (P, 4, H, W) and IoU predictions (P, 4) for P prompts."""
    emb = sam.image_encoder(torch.stack([sam.preprocess(x) for x in images]))
    sparse, dense = encode_prompts(sam, boxes, points, use_box)
    logits, iou = decode_masks(sam, emb[image_index], sparse, dense)
    if logits.shape[-1] != images.shape[-1]:
        logits = F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False)
    return logits, iou


def _mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + dice per prompt and output: logits (P, K, H, W), target (P, H, W) → (P, K)."""
    t = target.unsqueeze(1).float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").flatten(2).mean(-1)
    p = logits.sigmoid().flatten(2)
    tf = t.flatten(2)
    dice = 1 - (2 * (p * tf).sum(-1) + 1) / (p.sum(-1) + tf.sum(-1) + 1)
    return bce + dice


def _jitter_boxes(boxes: torch.Tensor, noise: float, size: int, gen: torch.Generator) -> torch.Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    jittered = boxes + torch.randn(boxes.shape, generator=gen) * noise * wh
    return jittered.clamp(0, size)


def _random_interior_points(masks: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A uniformly drawn pixel (x, y) inside each mask."""
    flat = masks.flatten(1).float()
    idx = torch.multinomial(flat, 1, generator=gen).squeeze(1)
    w = masks.shape[-1]
    return torch.stack([idx % w, idx // w], dim=1).float()


def _lr_at(step: int, recipe: SamShapesRecipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * frac))


def _train_step(sam, opt, data: ShapesBatch, img_ids: torch.Tensor, recipe: SamShapesRecipe,
                gen: torch.Generator) -> float:
    obj = torch.isin(data.image_index, img_ids).nonzero().flatten()
    remap = torch.full((len(data.images),), -1, dtype=torch.long)
    remap[img_ids] = torch.arange(len(img_ids))
    masks = data.masks[obj]
    use_box = torch.rand(len(obj), generator=gen) < recipe.box_fraction
    boxes = _jitter_boxes(data.boxes[obj], recipe.box_noise, data.images.shape[-1], gen)
    points = _random_interior_points(masks, gen)
    image_index = remap[data.image_index[obj]]
    logits, iou_pred = predict(sam, data.images[img_ids], image_index, boxes, points, use_box)
    losses = _mask_losses(logits, masks)
    mask_loss = losses[:, 0] + losses[:, 1:].min(dim=1).values
    with torch.no_grad():
        true_iou = mask_iou(logits > 0, masks.unsqueeze(1).expand_as(logits))
    loss = mask_loss.mean() + F.mse_loss(iou_pred, true_iou)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(sam.parameters(), recipe.grad_clip)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: nn.Module, n_images: int = 200, first_seed: int = TEST_FIRST_SEED,
             batch_images: int = 50) -> dict[str, float]:
    """Held-out metrics of the single-mask output: box IoU, point IoU, mAP-lite and COCO mask AP.

    Prompts are exact: the tight box and the interior point farthest from the boundary that
    `shapes` provides for every object. Mask AP uses box prompts, the predicted IoU as score, and
    class-agnostic COCO evaluation.
    """
    model.eval()
    samples = make_shapes_dataset(n_images, first_seed, ShapesConfig(image_size=model.image_encoder.img_size))
    box_ious, point_ious, pred_masks, scores = [], [], [], []
    for start in range(0, n_images, batch_images):
        chunk = samples[start : start + batch_images]
        data = stack_samples(chunk)
        n = len(data.labels)
        for use_box in (True, False):
            flag = torch.full((n,), use_box)
            logits, iou = predict(model, data.images, data.image_index, data.boxes, data.points, flag)
            pred = logits[:, 0] > model.mask_threshold
            (box_ious if use_box else point_ious).append(mask_iou(pred, data.masks))
            if use_box:
                counts = [len(s.labels) for s in chunk]
                pred_masks += list(torch.split(pred, counts))
                scores += [s.numpy() for s in torch.split(iou[:, 0], counts)]
    box_iou, point_iou = torch.cat(box_ious), torch.cat(point_ious)
    ap = shapes_mask_ap([s.masks for s in samples], [s.labels for s in samples],
                        [m.numpy() for m in pred_masks], scores)
    return {"box_iou": float(box_iou.mean()), "point_iou": float(point_iou.mean()),
            "box_map_lite": map_lite(box_iou), "point_map_lite": map_lite(point_iou),
            "mask_ap": ap["AP"], "mask_ap50": ap["AP50"], "mask_ap75": ap["AP75"],
            "n_images": n_images, "n_objects": int(box_iou.numel())}


def fit(recipe: SamShapesRecipe, config: SamShapesConfig, seed: int = 0,
        progress: Callable[[int, float], None] | None = None) -> tuple[nn.Module, list[float]]:
    """Train a fresh model with the recipe; every random draw comes from `seed` (one thread).

    `progress(step, loss)` is called after every step (the `evfarm zoo train` CLI prints from it).
    """
    data = stack_samples(make_shapes_dataset(recipe.train_images, TRAIN_FIRST_SEED,
                                             ShapesConfig(image_size=config.img_size)))
    torch.manual_seed(seed)  # module constructors draw from the global generator
    gen = torch.Generator().manual_seed(seed)
    sam = build_sam_shapes(config).train()
    opt = torch.optim.AdamW(sam.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    losses: list[float] = []
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        img_ids = torch.randperm(len(data.images), generator=gen)[: recipe.images_per_step]
        losses.append(_train_step(sam, opt, data, img_ids, recipe, gen))
        if progress is not None:
            progress(step + 1, losses[-1])
    return sam.eval(), losses


def train(out_dir: Path | str | None = None, seed: int = 0, steps: int | None = None,
          recipe: SamShapesRecipe | None = None, config: SamShapesConfig | None = None,
          progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train deterministically, write weights, card (JSON + Markdown) and an overlay PNG; return the card.

    `out_dir=None` writes into the committed weights folder; `steps` overrides the recipe's count.
    """
    recipe = recipe or SamShapesRecipe()
    if steps is not None:
        recipe = replace(recipe, steps=steps)
    config = config or SamShapesConfig()
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only slow every worker down (env.md)
    try:
        t0, c0 = time.time(), time.process_time()
        sam, losses = fit(recipe, config, seed, progress)
        # the CPU is shared with other jobs: CPU time says more about the cost than wall time
        train_seconds, cpu_seconds = time.time() - t0, time.process_time() - c0
        metrics = evaluate(sam, recipe.test_images)
        subset = evaluate(sam, SUBSET_IMAGES)
    finally:
        torch.set_num_threads(old_threads)
    save_zoo_weights(NAME, sam, out)
    card = _card(sam, config, recipe, seed, (train_seconds, cpu_seconds), losses, metrics, subset)
    card["qk_outliers"] = outlier_summary(measure_qk_outliers(sam))
    card_path(NAME, out).write_text(json.dumps(card, indent=2) + "\n")
    save_overlay(sam, out / f"{NAME}-overlay.png")
    (out / f"{NAME}.md").write_text(model_card_markdown(card))
    return card


SUBSET_IMAGES = 24  # the test re-evaluates this many held-out images and compares with the card


def _card(sam, config, recipe, seed, seconds, losses, metrics, subset) -> dict[str, Any]:
    return {
        "name": NAME,
        "data": {"generator": "sims.data.shapes", "shapes_config": ShapesConfig(config.img_size).to_dict(),
                 "train_seeds": [TRAIN_FIRST_SEED, TRAIN_FIRST_SEED + recipe.train_images - 1],
                 "test_seeds": [TEST_FIRST_SEED, TEST_FIRST_SEED + recipe.test_images - 1]},
        "architecture": config.to_dict(),
        "params": int(sum(p.numel() for p in sam.parameters())),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "steps": recipe.steps,
        "wall_time_s": round(seconds[0], 1),
        "cpu_time_s": round(seconds[1], 1),
        "threads": 1,
        "final_train_loss": float(np.mean(losses[-100:])),
        "test": metrics,
        "test_subset": subset,
        "box_iou": metrics["box_iou"],
        "point_iou": metrics["point_iou"],
        "mask_ap": metrics["mask_ap"],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def save_overlay(sam: nn.Module, path: Path, n_images: int = 6) -> Path:
    """PNG of box- and point-prompted masks on the first held-out images (methods.plotting, no pyplot)."""
    from matplotlib.patches import Rectangle

    from methods.plotting import colormap, new_figure, save_figure

    shapes_cfg = ShapesConfig(image_size=sam.image_encoder.img_size)
    samples = make_shapes_dataset(n_images, TEST_FIRST_SEED, shapes_cfg)
    data = stack_samples(samples)
    rows = []
    with torch.no_grad():
        for use_box in (True, False):
            flag = torch.full((len(data.labels),), use_box)
            logits, _ = predict(sam, data.images, data.image_index, data.boxes, data.points, flag)
            rows.append(logits[:, 0] > sam.mask_threshold)
    colours = colormap("tab10")
    fig, axes = new_figure(2, n_images, figsize=(2.2 * n_images, 4.8), squeeze=False)
    for r, (pred, title) in enumerate(zip(rows, ("box prompt", "point prompt"), strict=True)):
        for i in range(n_images):
            ax = axes[r, i]
            ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            for k in (data.image_index == i).nonzero().flatten().tolist():
                colour = colours(k % 10)
                # predicted mask: outline in the object's colour over the image (the objects are
                # flat-coloured, so an outline shows the fit better than a tint)
                ax.contour(pred[k].float().numpy(), levels=[0.5], colors=[colour], linewidths=1.6)
                if r == 0:
                    x0, y0, x1, y1 = data.boxes[k].tolist()
                    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                           ec="white", lw=0.8, ls="--"))
                else:
                    ax.plot(*data.points[k].tolist(), marker="*", color="white", mec="black", ms=9)
                iou = float(mask_iou(pred[k], data.masks[k]))
                ax.text(data.boxes[k, 0].item(), data.boxes[k, 1].item() - 1.5, f"{iou:.2f}",
                        color="white", fontsize=7, bbox={"facecolor": colour, "pad": 0.5, "lw": 0})
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(title)
    fig.suptitle("sam-shapes on held-out images: predicted mask outlines, prompts (dashed box / star), "
                 "mask IoU per object", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def model_card_markdown(card: dict[str, Any]) -> str:
    """The Markdown model card for a card dict written by `train`."""
    t, a, r, d = card["test"], card["architecture"], card["recipe"], card["data"]
    grid = a["img_size"] // a["patch_size"]
    lines = [
        "# sam-shapes",
        "",
        "A small Segment Anything model built from `segment_anything`'s own classes (ImageEncoderViT,",
        "PromptEncoder, MaskDecoder + TwoWayTransformer) and trained from scratch on the synthetic `shapes`",
        "images for box and point prompts. It is the tiny stand-in for SAM in the SAQ-SAM experiments.",
        "",
        f"- Architecture: {a['img_size']}-px RGB input, patch {a['patch_size']} ({grid}x{grid} tokens), "
        f"encoder dim {a['encoder_dim']}, depth {a['encoder_depth']}, {a['encoder_heads']} heads, "
        f"window {a['window_size']}, global attention at blocks {list(a['global_attn_indexes'])}, "
        f"relative position embeddings; prompt/decoder dim {a['prompt_dim']}, two-way transformer "
        f"depth 2, MLP {a['decoder_mlp_dim']}; {card['params']:,} parameters. Mask logits come out at "
        f"{4 * grid}x{4 * grid} and are bilinearly upsampled to the image size.",
        f"- Data: `sims.data.shapes` at {a['img_size']} px, training seeds "
        f"{d['train_seeds'][0]}..{d['train_seeds'][1]}, held-out seeds "
        f"{d['test_seeds'][0]}..{d['test_seeds'][1]} (disjoint).",
        f"- Training: {card['steps']} steps of {r['images_per_step']} images (all their objects), "
        f"AdamW lr {r['lr']}, weight decay {r['weight_decay']}, {r['warmup_steps']} warm-up steps then "
        f"cosine decay, gradient clip {r['grad_clip']}. Each object is prompted by a box "
        f"({r['box_fraction']:.0%}, corners jittered by {r['box_noise']} x side) or a uniformly drawn "
        "interior point; loss = BCE + dice on the single-mask output + the minimum over the three "
        "multimask outputs + MSE of the IoU head.",
        f"- Seed {card['seed']}, one torch thread, {card['cpu_time_s']:.0f} s of CPU time "
        f"({card['wall_time_s']:.0f} s wall time on a 2-core machine shared with other jobs; "
        f"torch {card['torch']}).",
        f"- Held-out result ({t['n_images']} images, {t['n_objects']} objects, single-mask output, "
        "exact prompts):",
        f"  - box prompt: mean mask IoU **{t['box_iou']:.3f}**, mAP-lite {t['box_map_lite']:.3f}",
        f"  - point prompt (interior point farthest from the boundary): mean mask IoU "
        f"**{t['point_iou']:.3f}**, mAP-lite {t['point_map_lite']:.3f}",
        f"  - COCO mask AP (pycocotools, class-agnostic, box prompts, predicted IoU as score): "
        f"AP {t['mask_ap']:.3f}, AP50 {t['mask_ap50']:.3f}, AP75 {t['mask_ap75']:.3f}",
        "- Reproduce: `evfarm zoo train sam-shapes` (or `sims.zoo.sam_shapes.train(out_dir, seed=0)`);",
        "  `sims.zoo.sam_shapes.evaluate(model)` recomputes the figures from the weights.",
        "",
        *_outlier_lines(card.get("qk_outliers")),
        "![overlay: box-prompted (top) and point-prompted (bottom) masks on held-out images]"
        "(sam-shapes-overlay.png)",
        "",
    ]
    return "\n".join(lines)


def prompt_set(sam: nn.Module, samples: list, prompt: str = "box"):
    """A `methods.quant.sam_modules.SamPromptSet` of shapes samples: preprocessed images and one exact
    prompt per object ('box': the tight box, 'point': the interior point farthest from the boundary,
    'mixed': boxes and points alternating object by object)."""
    from methods.quant.sam_modules import SamPromptSet

    if prompt not in ("box", "point", "mixed"):
        raise ConfigError(f"prompt must be 'box', 'point' or 'mixed', got {prompt!r}.")
    data = stack_samples(samples)
    n = len(data.labels)
    use_box = torch.full((n,), prompt == "box") if prompt != "mixed" else torch.arange(n) % 2 == 0
    with torch.no_grad():
        sparse, _ = encode_prompts(sam, data.boxes, data.points, use_box)
        images = torch.stack([sam.preprocess(x) for x in data.images])
    return SamPromptSet(images, data.image_index, sparse)


def measure_qk_outliers(model: nn.Module, n_images: int = 64,
                        first_seed: int = TEST_FIRST_SEED) -> dict[str, Any]:
    """SAQ-SAM's outlier question on held-out images, box and point prompts: per decoder attention
    quantizer of the q/k path, max |x| / 99.9th percentile of |x| (`qk_outlier_ratios`)."""
    from methods.quant.sam_modules import qk_outlier_ratios

    samples = make_shapes_dataset(n_images, first_seed, ShapesConfig(image_size=model.image_encoder.img_size))
    rows = qk_outlier_ratios(model, prompt_set(model, samples, "mixed"))
    ratios = [r["ratio"] for r in rows]
    return {"n_images": n_images, "prompts": "mixed box/point", "rows": rows,
            "max_ratio": max(ratios), "median_ratio": float(np.median(ratios)),
            "max_abs": max(r["max_abs"] for r in rows)}


def outlier_summary(measured: dict[str, Any]) -> dict[str, Any]:
    """The card's record of `measure_qk_outliers`: the summary and the ratio of every quantizer."""
    rows = [{"attention": r["attention"], "tensor": r["tensor"], "max_abs": round(r["max_abs"], 3),
             "q999_abs": round(r["q999_abs"], 3), "ratio": round(r["ratio"], 3)} for r in measured["rows"]]
    keys = ("n_images", "prompts", "max_ratio", "median_ratio", "max_abs")
    return {k: measured[k] for k in keys} | {"rows": rows}


def _outlier_lines(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    return [
        f"- Decoder q/k outliers (SAQ-SAM's premise; {summary['n_images']} held-out images, "
        f"{summary['prompts']} prompts): over the {len(summary['rows'])} q/k-path quantizers of the "
        f"decoder attentions (inputs and outputs of q_proj and k_proj), max |x| / 99.9th percentile of |x| "
        f"is at most **{summary['max_ratio']:.2f}** (median {summary['median_ratio']:.2f}; largest |x| "
        f"{summary['max_abs']:.1f}). SAQ-SAM reports a bulk in about [-1, 1] and extremes near +-170 in "
        "pretrained SAM; this model has no such outliers, so PCC's effect here is measured, not assumed. "
        "Per-quantizer values: `qk_outliers` in the JSON card; "
        "`sims.zoo.sam_shapes.measure_qk_outliers(model)` recomputes them.",
        "",
    ]


def load_sam_shapes(root: Path | None = None) -> nn.Module:
    """The committed `sam-shapes` model (strict safetensors load, eval mode)."""
    from sims.zoo.registry import load_zoo_model

    return load_zoo_model(NAME, root)


SPEC = register_zoo(ZooSpec(
    name=NAME,
    build=build_sam_shapes,
    train=train,
    evaluate=evaluate,
    metric="box_iou",
    description="tiny Sam (segment_anything classes) for box/point prompts on synthetic shapes",
    # `evfarm zoo check` tolerance: float differences between machines move the IoU by far less
    extra={"weights": weights_path(NAME).name, "tolerance": 0.01},
))

