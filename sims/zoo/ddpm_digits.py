"""`ddpm-digits`: a diffusers `UNet2DModel` ε-predictor of 16×16 digits with a DDPM/DDIM scheduler.

Follows "Denoising Diffusion Probabilistic Models" (Ho et al., arXiv:2006.11239) for the training
objective (predict the noise ε added at a uniformly drawn timestep, MSE), "Improved Denoising
Diffusion Probabilistic Models" (Nichol & Dhariwal, arXiv:2102.09672) for the cosine noise schedule
(diffusers' `squaredcos_cap_v2`), and "Denoising Diffusion Implicit Models" (Song et al.,
arXiv:2010.02502) for deterministic 50-step sampling (η = 0). Model and schedulers are diffusers'
own classes, so CacheQuant/DilateQuant code written for diffusers runs on this model and on a real
pipeline folder (see `sims.zoo.checkpoints`).

Our own choices ([inferred], sized by env.md §10): UNet2DModel(sample_size 16, 1 channel,
block_out_channels (32, 64, 64), layers_per_block 1, Down/AttnDown/Down, GroupNorm 8 groups),
1000 training timesteps, AdamW 2e-3 with 50 warm-up steps and cosine decay to 10 %, batch 64,
images scaled to [-1, 1], an exponential moving average of the weights (decay ramping up to 0.995,
as diffusers' `EMAModel` warm-up does) which is what is committed; one thread, deterministic.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sims.data.digits import load_digits_split
from sims.zoo.diffusion_training import (
    DiffusionRecipe,
    ddim_sample,
    fit_eps_model,
    scheduler_config_of,
    scheduler_from_config,
)
from sims.zoo.registry import WEIGHTS_DIR, ZooSpec, load_zoo_model, read_card, register_zoo
from sims.zoo.training import card_table, param_count, write_zoo_files

NAME = "ddpm-digits"
IMAGE_SIZE = 16
UNET_KWARGS: dict[str, Any] = {
    "sample_size": IMAGE_SIZE,
    "in_channels": 1,
    "out_channels": 1,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}
SCHEDULER_KWARGS: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                    "prediction_type": "epsilon"}
STEPS = 1500
BATCH_SIZE = 64
LR = 2e-3
WARMUP = 50
EMA_MAX_DECAY = 0.995
EVAL_SAMPLES = 256
EVAL_DDIM_STEPS = 50
EVAL_SEED = 1234


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


def sample(
    unet: nn.Module, scheduler: Any, n: int, steps: int = EVAL_DDIM_STEPS, seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """`n` samples (N,1,16,16) in [0, 1] from fixed Gaussian noise; DDIM with η = 0 is deterministic."""
    return ddim_sample(unet, scheduler, (1, IMAGE_SIZE, IMAGE_SIZE), n, steps, seed, batch_size)


def fit(
    seed: int = 0, steps: int | None = None, progress: Callable[[int, float], None] | None = None
) -> tuple[nn.Module, list[float]]:
    """Train deterministically; returns the EMA U-Net (eval mode) and per-step losses.

    `progress(step, loss)` is called after every step (the CLI prints from it; this module does not).
    """
    recipe = DiffusionRecipe(steps=STEPS if steps is None else steps, batch_size=BATCH_SIZE, lr=LR,
                             warmup=WARMUP, ema_max_decay=EMA_MAX_DECAY)
    x0_all = load_digits_split("train", IMAGE_SIZE)[0] * 2.0 - 1.0
    return fit_eps_model(build, x0_all, build_scheduler("ddpm", scheduler_config()), recipe, seed, progress)


def evaluate(model: nn.Module, n: int = EVAL_SAMPLES, steps: int = EVAL_DDIM_STEPS) -> dict[str, float]:
    """Digit-FD of `n` DDIM samples vs the real test split, and the digit classifier's view of them."""
    from sims.zoo import digits_classifier as dc

    classifier = load_zoo_model(dc.NAME)
    samples = sample(model, build_scheduler("ddim", scheduler_config()), n, steps, seed=EVAL_SEED)
    test = load_digits_split("test", IMAGE_SIZE)[0]
    with torch.no_grad():
        probs = classifier(samples).softmax(1)
        real_conf = float(classifier(test).softmax(1).max(1).values.mean())
    return {
        f"digit_fd_ddim{steps}_{n}": dc.digit_fd(samples, test, classifier),
        "classifier_confidence": float(probs.max(1).values.mean()),
        "classifier_confidence_real_test": real_conf,
        "classes_present": int(probs.argmax(1).unique().numel()),
    }


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, title: str = "") -> Path:
    """Write images (N,1,H,W) in [0,1] as a PNG grid (methods.plotting: Agg canvas, no pyplot)."""
    from methods.plotting import new_figure, save_figure

    n = len(images)
    rows = math.ceil(n / nrow)
    fig, axes = new_figure(rows, nrow, figsize=(nrow * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def train(
    out_dir: Path | None = None, seed: int = 0, steps: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train, sample, score and write weights + card + sample grid PNG into `out_dir`."""
    start = time.perf_counter()
    model, losses = fit(seed, steps, progress)
    wall = time.perf_counter() - start
    eval_start = time.perf_counter()
    metrics = evaluate(model)
    eval_wall = time.perf_counter() - eval_start
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(sample(model, build_scheduler("ddim", scheduler_config()), 64, seed=seed),
                     out / f"{NAME}-samples.png", title=f"{NAME}: 64 DDIM-50 samples, seed {seed}")
    card = {
        "name": NAME,
        "data": f"sims.data.digits train split (1347 images) at {IMAGE_SIZE}x{IMAGE_SIZE}, scaled to [-1,1]",
        "image_size": IMAGE_SIZE,
        "architecture": {"class": "diffusers.UNet2DModel", **UNET_KWARGS},
        "scheduler_class": "DDPMScheduler",
        "scheduler_config": scheduler_config(),
        "steps": steps or STEPS,
        "seed": seed,
        "recipe": {"optimizer": "adamw", "lr": LR, "warmup": WARMUP, "cosine_to": 0.1,
                   "batch_size": BATCH_SIZE,
                   "ema_max_decay": EMA_MAX_DECAY, "weights": "ema"},
        "wall_time_s": round(wall, 2),
        "eval_wall_time_s": round(eval_wall, 2),
        "final_loss_mean100": sum(losses[-100:]) / len(losses[-100:]),
        "param_count": param_count(model),
        "eval": {"samples": EVAL_SAMPLES, "ddim_steps": EVAL_DDIM_STEPS, "eta": 0.0, "seed": EVAL_SEED,
                 "reference": "digits test split, 450 images, 16x16"},
        "sample_grid": grid.name,
        **metrics,
    }
    key = f"digit_fd_ddim{EVAL_DDIM_STEPS}_{EVAL_SAMPLES}"
    md = f"""# ddpm-digits

diffusers `UNet2DModel` ε-predictor of 16×16 one-channel digits (block_out_channels (32, 64, 64),
Down/AttnDown/Down, layers_per_block 1), trained with the DDPM objective on the cosine
(`squaredcos_cap_v2`) schedule, 1000 timesteps. Committed weights are the EMA weights. Rebuild a
scheduler with `sims.zoo.ddpm_digits.build_scheduler("ddim" | "ddpm")`; images are in [-1, 1]
inside the model, `sample()` returns [0, 1].

{card_table(card, ["data", "steps", "seed", "wall_time_s", "final_loss_mean100", "param_count"])}

## Sample quality ({EVAL_SAMPLES} DDIM-{EVAL_DDIM_STEPS} samples, η = 0, seed {EVAL_SEED})

{card_table(card, [key, "classifier_confidence", "classifier_confidence_real_test", "classes_present"])}

Digit-FD is measured with the committed `digits-classifier` against the 450 real test digits; see
`digits-classifier.md` for its scale (real-vs-real floor, blurred digits, noise).
Sample grid: `{grid.name}`.
"""
    return write_zoo_files(NAME, model, card, md, out_dir)


SPEC = register_zoo(
    ZooSpec(
        name=NAME,
        build=build,
        train=train,
        evaluate=evaluate,
        metric=f"digit_fd_ddim{EVAL_DDIM_STEPS}_{EVAL_SAMPLES}",
        description="diffusers UNet2DModel eps-predictor of 16x16 digits (CacheQuant, DilateQuant)",
        extra={"image_size": IMAGE_SIZE, "tolerance": 0.5, "rel_tolerance": 0.1, "lower_is_better": True},
    )
)
