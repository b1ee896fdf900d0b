"""`ddpm-scenes`: a 4-level diffusers `UNet2DModel` ε-predictor of 32×32 colour `scenes-6` images.

The second diffusion test bed of issue 14. `ddpm-digits` (16 px, two levels) caps caching: its
shallowest up-block is a third of a step. This bed has the shape of the U-Nets the papers cache
and quantize: four resolution levels (32, 16, 8, 4 px) with growing widths (24, 48, 72, 96), two
ResBlocks per level, self-attention at the two low-resolution levels, so a cache point can be one
ResBlock of any level (`methods.unet_blocks`). Training objective, EMA and DDIM sampling are the
shared ones in `sims.zoo.diffusion_training` ([paper] DDPM objective, [inferred] schedule).

Our own choices ([inferred], sized to train in about 75 minutes on one CPU thread): the widths
above, GroupNorm with 8 groups, attention head dim 8, diffusers' `squaredcos_cap_v2` cosine
schedule with 1000 training timesteps, AdamW 1e-3 peak with 100 warm-up steps and cosine decay to
10 %, batch 64, 2,200 steps, EMA decay up to 0.999; images in [-1, 1] inside the model. Quality is
scored with scene-FD (`sims.zoo.scenes_classifier`) of 1,000 DDIM-20 samples against the 1,200
real test scenes, with a grouped-jackknife CI over the samples and the real-vs-real floor at the
same size beside it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.metrics.frechet import frechet_distance, gaussian_stats
from methods.metrics.stats import grouped_jackknife_ci
from sims.data.scenes import IMAGE_SIZE, load_scenes_split
from sims.zoo.diffusion_training import (
    DiffusionRecipe,
    ddim_sample,
    fit_eps_model,
    scheduler_config_of,
    scheduler_from_config,
)
from sims.zoo.registry import WEIGHTS_DIR, ZooSpec, load_zoo_model, read_card, register_zoo
from sims.zoo.training import card_table, param_count, write_zoo_files

NAME = "ddpm-scenes"
CHANNELS = 3
UNET_KWARGS: dict[str, Any] = {
    "sample_size": IMAGE_SIZE,
    "in_channels": CHANNELS,
    "out_channels": CHANNELS,
    "layers_per_block": 2,
    "block_out_channels": (24, 48, 72, 96),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
    "attention_head_dim": 8,
}
SCHEDULER_KWARGS: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                    "prediction_type": "epsilon"}
RECIPE = DiffusionRecipe(steps=2200, batch_size=64, lr=1e-3, warmup=100, ema_max_decay=0.999)
EVAL_SAMPLES = 1000
EVAL_DDIM_STEPS = 20
EVAL_SEED = 1234
FD_GROUPS = 20


def build() -> nn.Module:
    """diffusers `UNet2DModel` with `UNET_KWARGS` and fresh weights: (x_t, t) → predicted ε."""
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_KWARGS)


def scheduler_config() -> dict[str, Any]:
    """The DDPM scheduler's full config as a JSON-ready dict (private `_` keys dropped)."""
    return scheduler_config_of(SCHEDULER_KWARGS)


def build_scheduler(kind: str = "ddim", config: dict[str, Any] | None = None, root: Path | None = None):
    """A fresh `DDIMScheduler` or `DDPMScheduler` from `config` (default: the committed card's)."""
    if config is None:
        config = read_card(NAME, root)["scheduler_config"]
    return scheduler_from_config(kind, config)


def load(kind: str = "ddim", root: Path | None = None) -> tuple[nn.Module, Any]:
    """The committed U-Net (eval mode) and a scheduler rebuilt from its card."""
    return load_zoo_model(NAME, root), build_scheduler(kind, root=root)


def sample(unet: nn.Module, scheduler: Any, n: int, steps: int = EVAL_DDIM_STEPS, seed: int = 0,
           batch_size: int = 250) -> torch.Tensor:
    """`n` samples (N,3,32,32) in [0, 1] from fixed Gaussian noise (DDIM, η = 0)."""
    return ddim_sample(unet, scheduler, (CHANNELS, IMAGE_SIZE, IMAGE_SIZE), n, steps, seed, batch_size)


def fit(seed: int = 0, steps: int | None = None, progress: Callable[[int, float], None] | None = None,
        threads: int = 1) -> tuple[nn.Module, list[float]]:
    """Train deterministically; returns the EMA U-Net (eval mode) and per-step losses."""
    recipe = DiffusionRecipe(**{**RECIPE.to_dict(), "steps": steps or RECIPE.steps, "threads": threads})
    x0_all = load_scenes_split("train")[0] * 2.0 - 1.0
    return fit_eps_model(build, x0_all, build_scheduler("ddpm", scheduler_config()), recipe, seed, progress)


def fd_with_ci(samples: torch.Tensor, classifier: nn.Module | None = None, groups: int = FD_GROUPS,
               seed: int = 0) -> dict[str, float]:
    """Scene-FD of `samples` (N,3,32,32 in [0,1]) against the real test split, 95 % grouped-jackknife CI."""
    from sims.zoo import scenes_classifier as sc

    classifier = classifier if classifier is not None else load_zoo_model(sc.NAME)
    real = gaussian_stats(sc.scene_features(classifier, load_scenes_split("test")[0]))
    est = grouped_jackknife_ci(sc.scene_features(classifier, samples),
                               lambda f: frechet_distance(*gaussian_stats(f), *real), groups, seed=seed)
    return {"fd": est.value, "fd_lo": est.lo, "fd_hi": est.hi, "n": est.n}


def evaluate(model: nn.Module, n: int = EVAL_SAMPLES, steps: int = EVAL_DDIM_STEPS) -> dict[str, float]:
    """Scene-FD ± CI of `n` DDIM samples, the real-vs-real floor at the same size, class coverage."""
    from sims.zoo import scenes_classifier as sc

    classifier = load_zoo_model(sc.NAME)
    samples = sample(model, build_scheduler("ddim", scheduler_config()), n, steps, seed=EVAL_SEED)
    fd = fd_with_ci(samples, classifier)
    train = load_scenes_split("train")[0]
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(EVAL_SEED))[:n]
    floor = fd_with_ci(train[pick], classifier)
    with torch.no_grad():
        probs = classifier(samples).softmax(1)
    key = f"scene_fd_ddim{steps}_{n}"
    return {
        key: fd["fd"], f"{key}_lo": fd["fd_lo"], f"{key}_hi": fd["fd_hi"],
        f"real_train{n}_fd": floor["fd"], f"real_train{n}_fd_lo": floor["fd_lo"],
        f"real_train{n}_fd_hi": floor["fd_hi"],
        "classifier_confidence": float(probs.max(1).values.mean()),
        "class_shares_min": float(torch.bincount(probs.argmax(1), minlength=probs.shape[1]).min()) / n,
    }


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, title: str = "") -> Path:
    """Write colour images (N,3,H,W) in [0,1] as a PNG grid (methods.plotting, Agg)."""
    from methods.plotting import new_figure, save_figure

    rows = math.ceil(len(images) / nrow)
    fig, axes = new_figure(rows, nrow, figsize=(nrow * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None,
          progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train, sample, score and write weights + card + sample grid PNG into `out_dir`."""
    start = time.perf_counter()
    model, losses = fit(seed, steps, progress)
    wall = time.perf_counter() - start
    eval_start = time.perf_counter()
    metrics = evaluate(model)
    eval_wall = time.perf_counter() - eval_start
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(sample(model, build_scheduler("ddim", scheduler_config()), 64, steps=50, seed=seed),
                     out / f"{NAME}-samples.png", title=f"{NAME}: 64 DDIM-50 samples, seed {seed}")
    card = {
        "name": NAME,
        "data": "sims.data.scenes train split (6000 images, 6 classes) at 32x32 RGB, scaled to [-1,1]",
        "image_size": IMAGE_SIZE,
        "architecture": {"class": "diffusers.UNet2DModel", **UNET_KWARGS},
        "scheduler_class": "DDPMScheduler",
        "scheduler_config": scheduler_config(),
        "steps": steps or RECIPE.steps,
        "seed": seed,
        "recipe": {**RECIPE.to_dict(), "steps": steps or RECIPE.steps, "weights": "ema"},
        "wall_time_s": round(wall, 2),
        "eval_wall_time_s": round(eval_wall, 2),
        "final_loss_mean100": sum(losses[-100:]) / len(losses[-100:]),
        "param_count": param_count(model),
        "eval": {"samples": EVAL_SAMPLES, "ddim_steps": EVAL_DDIM_STEPS, "eta": 0.0, "seed": EVAL_SEED,
                 "ci": f"95% grouped jackknife, {FD_GROUPS} groups",
                 "reference": "scenes test split, 1200 images, 32x32"},
        "sample_grid": grid.name,
        **metrics,
    }
    key = f"scene_fd_ddim{EVAL_DDIM_STEPS}_{EVAL_SAMPLES}"
    floor = f"real_train{EVAL_SAMPLES}_fd"
    md = f"""# ddpm-scenes

diffusers `UNet2DModel` ε-predictor of 32×32 colour `scenes-6` images: four levels (block_out_channels
(24, 48, 72, 96)), two ResBlocks per level, attention at 8×8 and 4×4 (Down/Down/AttnDown/AttnDown),
cosine (`squaredcos_cap_v2`) schedule with 1000 timesteps; committed weights are the EMA weights.
Rebuild a scheduler with `sims.zoo.ddpm_scenes.build_scheduler("ddim" | "ddpm")`; images are in
[-1, 1] inside the model, `sample()` returns [0, 1].

{card_table(card, ["data", "steps", "seed", "wall_time_s", "final_loss_mean100", "param_count"])}

## Sample quality ({EVAL_SAMPLES} DDIM-{EVAL_DDIM_STEPS} samples, η = 0, seed {EVAL_SEED})

| set | scene-FD vs 1,200 real test scenes [95 % CI] |
|---|---|
| generated, {EVAL_SAMPLES} samples | {card[key]:.3f} [{card[key + "_lo"]:.3f}, {card[key + "_hi"]:.3f}] |
| real training scenes, {EVAL_SAMPLES} (the floor) | {card[floor]:.3f} [{card[floor + "_lo"]:.3f}, \
{card[floor + "_hi"]:.3f}] |

{card_table(card, ["classifier_confidence", "class_shares_min", "eval_wall_time_s"])}

CIs: delete-a-group jackknife over the samples ({FD_GROUPS} groups), the real set fixed
(`methods.metrics.stats.grouped_jackknife_ci`). Scene-FD uses the committed `scenes-classifier`
(see its card for the scale: blur, noise). Sample grid: `{grid.name}` (DDIM-50).

What this bed is for: measuring what caching and quantization *cost relative to this FP model*
(paired FD differences on the same noise, bench_cachequant), on a U-Net whose low-resolution levels
hold most of the compute. It is not a good generator: its FD is far above the real-vs-real floor
(a {card["steps"]}-step budget on one CPU core), and the smallest generated class share is
{card["class_shares_min"]:.3f} (uniform: 0.167) — striped backgrounds come out rarer than smooth ones.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric=f"scene_fd_ddim{EVAL_DDIM_STEPS}_{EVAL_SAMPLES}",
        description="4-level diffusers UNet2DModel eps-predictor of 32x32 colour scenes (CacheQuant)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.5, "rel_tolerance": 0.1, "lower_is_better": True},
    )
)
