"""Tiny region segmenter of the search rig's wide-angle panorama (zoo entry `search-segmenter`).

Paper context: the PPM of "A Novel Wide-Area Multiobject Detection System with High-Probability
Region Searching" (arXiv 2405.04589) starts from a semantic segmentation of the wide-angle image
(the authors' code runs a pretrained street-scene model [code]). Here a project-trained stand-in
[ours]: a fully convolutional net with dilations 1-2-4-8 (receptive field 31 px) and BatchNorm, on
RGB plus a normalised row-coordinate channel (CoordConv: "where in the image" is a legitimate cue
for sky vs road), 5 classes (road, sidewalk, tree, building, sky).

Data [ours]: panoramas rendered by `sims/rigs/panorama.py` from the default `SearchRigConfig`
scene generator, in their own seed families (`SEGMENTER_TRAIN_KEY` for training,
`SEGMENTER_EVAL_KEY` for the held-out card figures), disjoint from every evaluated scene
(`build_session(seed)` uses an empty spawn key). Recipe [ours]: Adam 3e-3, batch 8 of random 64x64
crops with horizontal flips, cross-entropy, a fixed step budget, one thread, deterministic kernels.

`segment_panorama(img, class_names)` is what the rig calls: softmax probabilities (H, W, C) in the
caller's class order.

    python -m sims.zoo.search_segmenter     # retrain, rewrite weights/search-segmenter.*
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from sims.zoo.registry import ZooSpec, register_zoo
from sims.zoo.search_segmenter_net import (  # noqa: F401  (the rig's inference API, re-exported)
    ARCH,
    CLASS_NAMES,
    NAME,
    TinySegmenter,
    build,
    check_classes,
    loaded_segmenter,
    segment_panorama,
    with_coords,
)
from sims.zoo.training import card_table, deterministic, param_count, write_zoo_files

TRAIN_SCENES = 48
EVAL_SCENES = 16
RECIPE = {"optimizer": "adam", "lr": 3e-3, "batch_size": 8, "crop": 64, "steps": 500, "hflip": True}


@functools.lru_cache(maxsize=4)
def panorama_dataset(key: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4, H, W) inputs and (N, H, W) labels (segmenter class order) of n rendered scenes."""
    from sims.rigs.panorama import render_panorama
    from sims.rigs.search_rig import SearchRigConfig, family_seed, make_scene

    cfg = SearchRigConfig()
    remap = check_classes(cfg.class_names)
    xs, ys = [], []
    for k in range(n):
        rng = np.random.default_rng(family_seed(key, k))
        scene = make_scene(cfg, rng)
        img = render_panorama(scene.geometry, scene.objects, cfg.class_names, rng, noise=cfg.wide_noise)
        xs.append(with_coords(img))
        ys.append(torch.from_numpy(remap[scene.labels].astype(np.int64)))
    return torch.stack(xs), torch.stack(ys)


def fit(seed: int = 0, steps: int | None = None,
        progress: Callable[[str], None] | None = None) -> tuple[nn.Module, list[float]]:
    from sims.rigs.search_rig import SEGMENTER_TRAIN_KEY

    x, y = panorama_dataset(SEGMENTER_TRAIN_KEY, TRAIN_SCENES)
    steps = RECIPE["steps"] if steps is None else steps
    crop, bs = RECIPE["crop"], RECIPE["batch_size"]
    _, _, h, w = x.shape
    losses: list[float] = []
    with deterministic(seed) as gen:
        model = build().train()
        opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
        for step in range(steps):
            idx = torch.randint(0, x.shape[0], (bs,), generator=gen)
            r0 = torch.randint(0, h - crop + 1, (bs,), generator=gen)
            c0 = torch.randint(0, w - crop + 1, (bs,), generator=gen)
            xb = torch.stack([x[i, :, r:r + crop, c:c + crop] for i, r, c in zip(idx, r0, c0, strict=True)])
            yb = torch.stack([y[i, r:r + crop, c:c + crop] for i, r, c in zip(idx, r0, c0, strict=True)])
            if RECIPE["hflip"]:
                flip = torch.rand(bs, generator=gen) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(-1), yb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress and (step + 1) % 100 == 0:
                progress(f"{NAME} step {step + 1}/{steps} loss {np.mean(losses[-100:]):.3f}")
    return model.eval(), losses


@torch.no_grad()
def evaluate(model: nn.Module) -> dict[str, Any]:
    """Held-out pixel accuracy and mIoU on `EVAL_SCENES` rendered scenes (+ the majority baseline)."""
    from sims.rigs.search_rig import SEGMENTER_EVAL_KEY

    x, y = panorama_dataset(SEGMENTER_EVAL_KEY, EVAL_SCENES)
    pred = model.eval()(x).argmax(1)
    cm = confusion_matrix(pred, y, len(CLASS_NAMES))
    majority = np.bincount(y.numpy().ravel(), minlength=len(CLASS_NAMES)).argmax()
    base_cm = confusion_matrix(np.full(y.shape, majority), y, len(CLASS_NAMES))
    cm_np = np.asarray(cm)
    return {"val_pixel_acc": float(np.trace(cm_np) / cm_np.sum()), "val_miou": mean_iou(cm),
            "val_iou": dict(zip(CLASS_NAMES, map(float, iou_per_class(cm)), strict=True)),
            "majority_miou": mean_iou(base_cm),
            "majority_pixel_acc": float(np.trace(np.asarray(base_cm)) / np.asarray(base_cm).sum())}


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    from sims.rigs.search_rig import SEGMENTER_TRAIN_KEY

    panorama_dataset(SEGMENTER_TRAIN_KEY, TRAIN_SCENES)
    data_s = time.perf_counter() - start
    model, losses = fit(seed, steps, progress)
    wall = time.perf_counter() - start
    metrics = evaluate(model)
    card = {"name": NAME, "classes": list(CLASS_NAMES),
            "arch": {k: list(v) if isinstance(v, tuple) else v for k, v in ARCH.items()},
            "recipe": {**RECIPE, "steps": steps or RECIPE["steps"]}, "seed": seed,
            "data": (f"sims/rigs/panorama.py renders of the default SearchRigConfig, 128x128 RGB + row "
                     f"coordinate; train: {TRAIN_SCENES} scenes of family SEGMENTER_TRAIN_KEY, held-out: "
                     f"{EVAL_SCENES} scenes of family SEGMENTER_EVAL_KEY (never an evaluated scene)"),
            "param_count": param_count(model), "wall_time_s": round(wall, 1), "data_time_s": round(data_s, 1),
            "threads": 1, "final_loss": float(np.mean(losses[-20:])), **metrics}
    md = f"""# {NAME}

Tiny dilated FCN ({ARCH}) that segments the search rig's rendered wide-angle panorama into
{", ".join(CLASS_NAMES)} (`sims/zoo/search_segmenter.py`). Its softmax output and confidence build
the panoramic probability map of `methods/ppm_search.py`.

Training recipe: Adam lr {RECIPE["lr"]}, batch {RECIPE["batch_size"]} random {RECIPE["crop"]}x{RECIPE["crop"]}
crops with horizontal flips, cross-entropy, {card["recipe"]["steps"]} steps, seed {seed}, one CPU thread,
deterministic kernels.

{card_table(card, ["data", "wall_time_s", "val_pixel_acc", "val_miou", "majority_pixel_acc",
                   "majority_miou", "param_count", "final_loss"])}

Held-out per-class IoU: {", ".join(f"{k} {v:.3f}" for k, v in card["val_iou"].items())}.

Limitations: rendered scenes only (no Cityscapes / real street claim); 128x128 input; the
renderer's textures are the whole domain, so this says nothing about real wide-angle images.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(ZooSpec(name=NAME, build=build, train=train, evaluate=evaluate, metric="val_miou",
                            description="tiny dilated FCN on the search rig's rendered panoramas (mIoU)",
                            extra={"tolerance": 1e-6}))


if __name__ == "__main__":  # `python -m sims.zoo.search_segmenter`
    trained = train(progress=print)
    print(NAME, {k: trained[k] for k in ("val_pixel_acc", "val_miou", "majority_miou", "wall_time_s")})
