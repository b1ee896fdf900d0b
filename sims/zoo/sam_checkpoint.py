"""Load a user's real Segment Anything checkpoint (`.pth`, ViT-B/L/H) from a local path, safely.

SAQ-SAM ("SAQ-SAM: Semantically-Aligned Quantization for Segment Anything Model",
arXiv 2503.06515) quantizes the official SAM ViT-B/L/H checkpoints ("Segment Anything",
arXiv 2304.02643) [paper]. The architecture comes from segment_anything's own
`sam_model_registry` [code]; unlike its `build_sam*` helpers, which call `torch.load(f)` on the
file, we build with `checkpoint=None` and load the state dict ourselves with
`torch.load(..., map_location="cpu", weights_only=True)` (house rule: no unpickling of arbitrary
objects), check every key and shape before `load_state_dict`, and turn each failure into a
`CheckpointError` that names the file, the variant and where to get the official checkpoint
[inferred]. Nothing is ever downloaded.
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from methods.errors import CheckpointError, UnknownNameError, did_you_mean

# Official release file names (segment-anything README, "Model Checkpoints").
OFFICIAL_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
DOWNLOAD_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
# Encoder width of each variant: identifies which variant a state dict belongs to.
ENCODER_DIMS = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


def _how_to_get(variant: str) -> str:
    name = OFFICIAL_FILES[variant]
    return (f"Download the official SAM {variant} checkpoint {name} (segment-anything README, "
            f"'Model Checkpoints': {DOWNLOAD_BASE}{name}) on a machine with network access and pass "
            f"its local path.")


def _default_builders() -> Mapping[str, Callable[..., nn.Module]]:
    from segment_anything import sam_model_registry

    return sam_model_registry


def guess_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """The SAM variant whose encoder width matches the state dict's patch embedding, if any."""
    weight = state.get(_PATCH_KEY)
    if not isinstance(weight, torch.Tensor) or weight.dim() == 0:
        return None
    for variant, dim in ENCODER_DIMS.items():
        if weight.shape[0] == dim:
            return variant
    return None


def read_sam_state_dict(path: str | Path, variant: str = "vit_b") -> dict[str, torch.Tensor]:
    """The tensors of a SAM `.pth` file, read with `weights_only=True`; any failure → CheckpointError."""
    _check_variant(variant)
    p = Path(path)
    expected = f"a SAM {variant} checkpoint (official file {OFFICIAL_FILES[variant]})"
    if not p.is_file():
        raise CheckpointError(f"Expected {expected} at {p}, but no such file exists. {_how_to_get(variant)}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, TypeError) as exc:
        raise CheckpointError(
            f"Could not read {p} as {expected}: {type(exc).__name__}: {str(exc)[:300]}. The file is "
            f"corrupted, truncated or not a PyTorch checkpoint of tensors. {_how_to_get(variant)}"
        ) from exc
    # Fine-tuning scripts often wrap the weights; unwrap the usual containers [inferred].
    if isinstance(obj, dict) and set(obj) <= {"model", "state_dict", "epoch", "optimizer"}:
        obj = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{p} loaded, but it is not a state dict of tensors (got {type(obj).__name__}); expected "
            f"{expected}. {_how_to_get(variant)}"
        )
    return obj


def _check_variant(variant: str) -> None:
    if variant not in OFFICIAL_FILES:
        raise UnknownNameError(
            f"Unknown SAM variant {variant!r}. {did_you_mean(variant, OFFICIAL_FILES)} "
            f"Supported: {', '.join(OFFICIAL_FILES)}."
        )


def _mismatch_report(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
    return "; ".join(parts)


def load_sam_checkpoint(path: str | Path, variant: str = "vit_b",
                        builders: Mapping[str, Callable[..., nn.Module]] | None = None) -> nn.Module:
    """Build SAM `variant` with segment_anything's registry and load the weights at `path`.

    Args:
        path: local `.pth` file, e.g. `sam_vit_b_01ec64.pth`.
        variant: "vit_b", "vit_l" or "vit_h".
        builders: variant → `builder(checkpoint=None)`; defaults to `sam_model_registry`
            (tests pass a tiny builder instead of building a 90M-parameter ViT-B).

    Returns:
        The `Sam` in eval mode on the CPU.

    Raises:
        CheckpointError: the file is missing, unreadable, not a state dict, or its keys/shapes do
            not match `variant` (the message names a variant that would fit, if one does).
    """
    state = read_sam_state_dict(path, variant)
    builder = (builders or _default_builders()).get(variant)
    if builder is None:
        raise UnknownNameError(f"No builder for SAM variant {variant!r} in the given registry.")
    model = builder(checkpoint=None)
    report = _mismatch_report(model, state)
    if report:
        guess = guess_variant(state)
        hint = ""
        if guess and guess != variant:
            hint = f" The file looks like a {guess} checkpoint; pass variant={guess!r}."
        raise CheckpointError(
            f"{path} does not match the SAM {variant} architecture: {report}.{hint} Expected the official "
            f"{variant} checkpoint {OFFICIAL_FILES[variant]}. {_how_to_get(variant)}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
