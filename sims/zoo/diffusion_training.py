"""Shared DDPM ε-training and DDIM sampling of the zoo's diffusion test beds (`ddpm-digits`,
`ddpm-scenes`).

Objective from "Denoising Diffusion Probabilistic Models" (Ho et al., arXiv:2006.11239): predict
the noise ε added at a uniformly drawn timestep, MSE. Schedule [inferred]: AdamW, linear warm-up,
cosine decay to 10 % of the peak rate; an exponential moving average of the weights whose decay
ramps up as diffusers' `EMAModel` warm-up does, min(max_decay, (1 + step) / (10 + step)); the EMA
weights are what a bed commits. Sampling: DDIM with η = 0 from fixed Gaussian noise.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError
from sims.zoo.training import batches, deterministic


@dataclass(frozen=True)
class DiffusionRecipe:
    """Optimiser, schedule and EMA of `fit_eps_model` (recorded verbatim in the model card)."""

    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    ema_max_decay: float = 0.995
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, step: int, max_decay: float) -> None:
    decay = min(max_decay, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - decay)


def fit_eps_model(
    build: Callable[[], nn.Module], x0_all: torch.Tensor, scheduler: Any, recipe: DiffusionRecipe,
    seed: int = 0, progress: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train `build()` on images `x0_all` in [-1, 1] deterministically; returns the EMA model (eval
    mode) and the per-step losses. `progress(step, loss)` is called after every step."""
    with deterministic(seed, threads=recipe.threads) as gen:
        model = build()
        ema = build()
        ema.load_state_dict(model.state_dict())
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, recipe.steps, recipe.warmup))
        model.train()
        losses = []
        for step, idx in enumerate(batches(len(x0_all), recipe.batch_size, recipe.steps, gen)):
            x0 = x0_all[idx]
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
            loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            ema_update(ema, model, step, recipe.ema_max_decay)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, losses[-1])
    return ema.eval(), losses


@torch.no_grad()
def ddim_sample(
    unet: nn.Module, scheduler: Any, shape: tuple[int, int, int], n: int, steps: int, seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """`n` samples (N, *shape) in [0, 1] from fixed Gaussian noise; DDIM with η = 0 is deterministic."""
    if n < 1 or steps < 1:
        raise ConfigError(f"need n ≥ 1 samples and steps ≥ 1, got n={n}, steps={steps}.")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *shape), generator=gen)
    unet.eval()
    out = []
    for start in range(0, n, batch_size):
        x = noise[start : start + batch_size]
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            x = scheduler.step(eps, t, x, generator=gen).prev_sample
        out.append(x)
    return ((torch.cat(out) + 1.0) / 2.0).clamp(0.0, 1.0)


SCHEDULER_KINDS = ("ddim", "ddpm")


def scheduler_config_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A DDPM scheduler's full config from `kwargs` as a JSON-ready dict (private `_` keys dropped)."""
    from diffusers import DDPMScheduler

    cfg = dict(DDPMScheduler(**kwargs).config)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def scheduler_from_config(kind: str, config: dict[str, Any]):
    """A fresh `DDIMScheduler` ('ddim') or `DDPMScheduler` ('ddpm') from a card's scheduler config."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind not in SCHEDULER_KINDS:
        raise ConfigError(f"scheduler kind must be one of {SCHEDULER_KINDS}, got {kind!r}.")
    return (DDIMScheduler if kind == "ddim" else DDPMScheduler).from_config(config)
