"""Training and evaluation on `textures-10` (sims/data/textures.py) for the zoo's texture models.

The same deterministic recipe machinery as the digits models (`sims.zoo.training`): one thread,
deterministic kernels, a seeded generator for batches and ±shift augmentation [ours].
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sims.zoo.training import ClassifierRecipe, fit_on_split, top1

TEXTURES_DATA = (
    "sims.data.textures textures-10: 3000 train / 1000 test {size}x{size} grey patches from disjoint "
    "column ranges of ten scikit-image images, [0,1]"
)


def fit_textures(build: Callable[[], nn.Module], recipe: ClassifierRecipe, image_size: int, seed: int = 0,
                 steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train `build()` on the textures-10 train split deterministically; `steps` overrides the recipe."""
    from sims.data.textures import load_textures_split

    return fit_on_split(load_textures_split, build, recipe, image_size, seed, steps)


def textures_top1(model: nn.Module, image_size: int) -> dict[str, float]:
    """Test and train top-1 of a textures-10 classifier."""
    from sims.data.textures import load_textures_split

    x, y = load_textures_split("test", image_size)
    xt, yt = load_textures_split("train", image_size)
    return {"test_top1": top1(model, x, y), "train_top1": top1(model, xt, yt)}
