"""Shared pieces of the zoo's deterministic training scripts: seeding, one-thread determinism,
a plain classifier loop with random-shift augmentation, top-1 evaluation and model-card writing.

Our own design ([inferred]); no paper. The recipe follows env.md §10 (small CNN with BatchNorm,
Adam, batch 64, one torch thread) and nanoGPT's habit of a single readable training loop.
Determinism: every random draw comes from one `torch.Generator` seeded by the caller, the loop runs
under `torch.use_deterministic_algorithms(True)` with one intra-op thread, so the same seed on the
same machine and torch build gives the same weight bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError
from sims.zoo.registry import card_path, save_zoo_weights, weights_path


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1) -> Iterator[torch.Generator]:
    """Seed torch, use one thread and deterministic kernels; restore the caller's settings after.

    Yields the generator that every random draw of the training loop must use.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}.")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)  # module constructors draw from the global generator
    gen = torch.Generator().manual_seed(seed)
    try:
        yield gen
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]² with zero fill.

    Digits sit on a black (0) background, so zero padding is the natural fill.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):  # n ≤ batch size; a loop is clearer than a gather here
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@dataclass(frozen=True)
class ClassifierRecipe:
    """Optimiser and schedule of `fit_classifier` (recorded verbatim in the model card)."""

    steps: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_shift: int = 0
    label_smoothing: float = 0.0
    cosine: bool = True
    optimizer: str = "adamw"
    version: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be ≥ 1, got {self.steps}, {self.batch_size}.")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of a fresh permutation per epoch, for exactly `steps` batches."""
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]
            done += 1
            if done == steps:
                return


def fit_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: ClassifierRecipe, gen: torch.Generator
) -> list[float]:
    """Train `model` in place with cross-entropy; returns the per-step losses."""
    opt_cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps) if recipe.cosine else None
    model.train()
    losses = []
    for idx in batches(len(x), recipe.batch_size, recipe.steps, gen):
        xb = random_shift(x[idx], recipe.max_shift, gen)
        loss = F.cross_entropy(model(xb), y[idx], label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


DIGITS_DATA = "sims.data.digits train split (1347 images) at {size}x{size}, [0,1]; test split 450 images"


def fit_on_split(load_split: Callable[[str, int], tuple[torch.Tensor, torch.Tensor]],
                 build: Callable[[], nn.Module], recipe: ClassifierRecipe, image_size: int, seed: int = 0,
                 steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train `build()` on `load_split("train", image_size)` deterministically (`steps` overrides)."""
    if steps is not None:
        recipe = ClassifierRecipe(**{**recipe.to_dict(), "steps": steps})
    x, y = load_split("train", image_size)
    with deterministic(seed) as gen:
        model = build()
        losses = fit_classifier(model, x, y, recipe, gen)
    return model, losses


def fit_digits(build: Callable[[], nn.Module], recipe: ClassifierRecipe, image_size: int, seed: int = 0,
               steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train `build()` on the digits train split deterministically; `steps` overrides the recipe."""
    from sims.data.digits import load_digits_split

    return fit_on_split(load_digits_split, build, recipe, image_size, seed, steps)


def digits_top1(model: nn.Module, image_size: int) -> dict[str, float]:
    """Test and train top-1 of a digits classifier."""
    from sims.data.digits import load_digits_split

    x, y = load_digits_split("test", image_size)
    xt, yt = load_digits_split("train", image_size)
    return {"test_top1": top1(model, x, y), "train_top1": top1(model, xt, yt)}


def classifier_card(name: str, model: nn.Module, recipe: ClassifierRecipe, image_size: int, seed: int,
                    steps: int | None, wall: float, losses: list[float], data: str,
                    **extra: Any) -> dict[str, Any]:
    """The card fields every digits classifier of the zoo records (`extra` adds its own)."""
    return {
        "name": name,
        "data": data,
        "image_size": image_size,
        **extra,
        "steps": steps or recipe.steps,
        "seed": seed,
        "recipe": {**recipe.to_dict(), "steps": steps or recipe.steps},
        "wall_time_s": round(wall, 2),
        "final_loss": losses[-1],
        "param_count": param_count(model),
    }


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of correctly classified images (eval mode, no gradient)."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = model(x[start : start + batch_size]).argmax(1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / len(x)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment() -> dict[str, str]:
    """Library versions that decide whether a retrain reproduces the committed bytes."""
    import numpy

    env = {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}
    for mod in ("timm", "diffusers"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            continue
    return env


def write_zoo_files(
    name: str, model: nn.Module, card: dict[str, Any], model_card_md: str, out_dir: Path | None
) -> dict[str, Any]:
    """Write `<name>.safetensors`, `<name>.json` (card + weights hash) and `<name>.md` into `out_dir`."""
    out = Path(out_dir) if out_dir is not None else None
    path = save_zoo_weights(name, model, out)
    card = {**card, "weights_file": path.name, "weights_sha256": file_sha256(path),
            "weights_bytes": path.stat().st_size, "environment": environment()}
    card_path(name, out).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    weights_path(name, out).with_suffix(".md").write_text(model_card_md.rstrip() + "\n")
    return card


def card_table(card: dict[str, Any], keys: list[str]) -> str:
    """A markdown table of selected card entries, for the `.md` model card."""
    rows = ["| field | value |", "|---|---|"]
    for key in keys:
        value = card.get(key)
        if isinstance(value, float):
            value = f"{value:.4g}"
        rows.append(f"| {key} | {value} |")
    return "\n".join(rows)


@torch.no_grad()
def batched_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """`model.features` (a feature network's penultimate layer) over `x` in batches, eval mode, as a
    float64 array: what digit- and scene-FD are computed on."""
    model.eval()
    feats = [model.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(feats).double().numpy()
