"""The reference-model zoo: name → how to build, train, load and describe a tiny model.

Each zoo model registers a `ZooSpec` (house rule 1); importing the `sims.zoo` package registers
all of them. Weights are committed as safetensors under `sims/zoo/weights/<name>.safetensors` next
to a model card `<name>.md` and the card's measured figures `<name>.json`; `evfarm zoo train NAME`
reruns the deterministic training script. `ZOO.create(name)` is the model with its committed
weights (`load_zoo_model`); zoo models take no config. Loading never unpickles: safetensors only.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from methods.errors import CheckpointError
from methods.registry import Registry

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ZooSpec:
    """How to build (architecture only), train and describe one zoo model.

    Args:
        name: registry name, also the weights file stem.
        build: returns the architecture with freshly initialised weights.
        train: `train(out_dir: Path, seed: int) -> dict` trains deterministically, writes
            `<name>.safetensors`, `<name>.json` and `<name>.md` into `out_dir`, returns the card dict.
        evaluate: `evaluate(model) -> dict` recomputes the card's headline metric from the weights.
        metric: the key of the headline metric in the card (e.g. "test_top1").
        description: one line for listings.
    """

    name: str
    build: Callable[[], nn.Module]
    train: Callable[..., dict[str, Any]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    metric: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    config_cls: ClassVar[type | None] = None  # a zoo model is fixed by its committed weights

    def create(self) -> nn.Module:
        """The model with its committed weights, in eval mode on the CPU (`load_zoo_model`)."""
        return load_zoo_model(self.name)


ZOO: Registry[ZooSpec] = Registry("zoo model", ZooSpec, home="sims.zoo")


def register_zoo(spec: ZooSpec) -> ZooSpec:
    ZOO.register(spec.name)(spec)
    return spec


def weights_path(name: str, root: Path | None = None) -> Path:
    return (root or WEIGHTS_DIR) / f"{name}.safetensors"


def card_path(name: str, root: Path | None = None) -> Path:
    return (root or WEIGHTS_DIR) / f"{name}.json"


def read_card(name: str, root: Path | None = None) -> dict[str, Any]:
    path = card_path(name, root)
    if not path.is_file():
        raise CheckpointError(
            f"Model card {path.name} for zoo model {name!r} is missing (expected at {path}). "
            f"Run `evfarm zoo train {name}` to create it."
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Model card {path} of zoo model {name!r} is not readable JSON ({exc}). The file is "
            f"corrupted; restore it from git (`git checkout -- {path.name}` in its folder) or "
            f"recreate it with `evfarm zoo train {name}`."
        ) from exc
    if not isinstance(card, dict):
        raise CheckpointError(
            f"Model card {path} of zoo model {name!r} holds a JSON {type(card).__name__}, expected an "
            f"object of measured figures; restore it from git or recreate it with `evfarm zoo train {name}`."
        )
    return card


def save_zoo_weights(name: str, model: nn.Module, root: Path | None = None) -> Path:
    from safetensors.torch import save_file

    path = weights_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"zoo_model": name})
    tmp.replace(path)
    return path


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning every failure into a `CheckpointError` that says what to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"Expected a safetensors weights file at {path}, but it does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"Could not read weights file {path} as safetensors ({exc}). The file is corrupted or "
            f"not a safetensors file; restore it from git or retrain it with `evfarm zoo train`."
        ) from exc


def load_zoo_model(name: str, root: Path | None = None) -> nn.Module:
    """Build zoo model `name` and load its committed weights (strict), in eval mode on the CPU."""
    spec = ZOO.get(name)
    model = spec.build()
    state = load_state_dict_file(weights_path(name, root))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Weights in {weights_path(name, root)} do not match the {name!r} architecture: {exc}. "
            f"Retrain with `evfarm zoo train {name}`."
        ) from exc
    return model.eval()
