"""Loaders for real checkpoints from a local path: diffusers pipeline/U-Net folders and timm files.

The same method code that runs on the zoo's tiny models runs on a user's real checkpoint on a GPU
box; these loaders are the only door. Rules (DESIGN.md decisions 7 and 9): nothing downloads
(`HF_HUB_OFFLINE=1`, `local_files_only=True`, timm `pretrained=False`), nothing unpickles freely
(safetensors, or `torch.load(weights_only=True)`), and every failure — missing path, wrong folder
layout, corrupted file, state dict that does not fit — is a `CheckpointError` that names the file
that was expected and how to get it.

Folder layouts follow diffusers' `save_pretrained` conventions ([code]: `model_index.json`,
`unet/config.json`, `unet/diffusion_pytorch_model.safetensors`, `scheduler/scheduler_config.json`);
timm checkpoint unwrapping (`state_dict`/`model` containers, `module.`/`_orig_mod.` prefixes)
follows timm's `load_checkpoint`/`clean_state_dict` ([code]). Inferring the head size from the
checkpoint and the error texts are our own design ([inferred]). No paper.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.errors import CheckpointError, ConfigError, did_you_mean

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
WEIGHT_STEM = "diffusion_pytorch_model"
TIMM_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SCHEDULER_KINDS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler"}
_HOW_TO_GET_PIPELINE = (
    "Save one with `pipeline.save_pretrained(DIR)` or fetch it on a machine with network access "
    "(`huggingface-cli download <repo-id> --local-dir DIR`), then copy the folder here."
)
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError, json.JSONDecodeError,
                pickle.UnpicklingError, zipfile.BadZipFile)


def _offline() -> None:
    # Set before diffusers/huggingface_hub read it, so no loader can reach the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class DiffusersCheckpoint:
    """A loaded diffusers U-Net, its scheduler (None when the folder has none) and where they came from."""

    unet: nn.Module
    scheduler: Any
    unet_class: str
    unet_dir: Path
    scheduler_dir: Path | None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Could not read {what} {path} as JSON ({exc}). {_HOW_TO_GET_PIPELINE}"
        ) from exc


def _resolve_unet_dir(path: Path) -> tuple[Path, Path | None]:
    """Accept a pipeline folder (with unet/) or a U-Net folder itself; find the scheduler folder."""
    if not path.exists():
        raise CheckpointError(
            f"Expected a diffusers pipeline folder at {path} (with model_index.json, unet/config.json, "
            f"unet/{WEIGHT_STEM}.safetensors and scheduler/scheduler_config.json), but the path does "
            f"not exist. {_HOW_TO_GET_PIPELINE}"
        )
    if (path / "unet" / "config.json").is_file():
        unet_dir, sched_dir = path / "unet", path / "scheduler"
    elif (path / "config.json").is_file():
        unet_dir, sched_dir = path, path.parent / "scheduler"
    else:
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else [path.name]
        raise CheckpointError(
            f"{path} is not a diffusers pipeline or U-Net folder: expected {path}/unet/config.json (a "
            f"pipeline, e.g. DDPMPipeline or a Stable Diffusion folder) or {path}/config.json (a U-Net "
            f"folder); found {found[:10]}. {_HOW_TO_GET_PIPELINE}"
        )
    return unet_dir, (sched_dir if (sched_dir / "scheduler_config.json").is_file() else None)


def _weights_options(unet_dir: Path) -> dict[str, Any]:
    """`use_safetensors`/`variant` for from_pretrained, from the weight files actually present."""
    for use_st, ext in ((True, "safetensors"), (False, "bin")):
        single, sharded = unet_dir / f"{WEIGHT_STEM}.{ext}", unet_dir / f"{WEIGHT_STEM}.{ext}.index.json"
        if single.is_file() or sharded.is_file():
            return {"use_safetensors": use_st}
    for use_st, ext in ((True, "safetensors"), (False, "bin")):
        variants = sorted(unet_dir.glob(f"{WEIGHT_STEM}.*.{ext}"))
        if variants:  # e.g. diffusion_pytorch_model.fp16.safetensors
            return {"use_safetensors": use_st, "variant": variants[0].name.split(".")[1]}
    raise CheckpointError(
        f"No U-Net weights in {unet_dir}: expected {unet_dir / (WEIGHT_STEM + '.safetensors')} (or .bin). "
        f"The folder may have been copied without its weight files (git-lfs?). {_HOW_TO_GET_PIPELINE}"
    )


def _load_scheduler(sched_dir: Path | None, kind: str | None) -> Any:
    import diffusers

    if kind is not None and kind not in SCHEDULER_KINDS:
        raise ConfigError(f"scheduler kind must be one of {sorted(SCHEDULER_KINDS)} or None, got {kind!r}.")
    if sched_dir is None:
        return None
    config = _read_json(sched_dir / "scheduler_config.json", "scheduler config")
    name = SCHEDULER_KINDS[kind] if kind else config.get("_class_name", "")
    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    if cls is None or not issubclass(cls, diffusers.SchedulerMixin):
        raise CheckpointError(
            f"{sched_dir / 'scheduler_config.json'} names scheduler class {name!r}, which this diffusers "
            f"({diffusers.__version__}) does not provide. Pass scheduler_kind='ddim' or 'ddpm' to rebuild "
            f"a known scheduler from the same config."
        )
    try:
        return cls.from_config(config)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"Could not build {name} from {sched_dir} ({exc}).") from exc


def load_diffusers_unet(path: str | Path, scheduler_kind: str | None = None) -> DiffusersCheckpoint:
    """Load the U-Net (eval mode, CPU) and scheduler of a local diffusers pipeline or U-Net folder.

    Args:
        path: a pipeline folder (DDPMPipeline/DDIMPipeline or Stable Diffusion: has `unet/`) or a
            U-Net folder (has `config.json` and `diffusion_pytorch_model.safetensors`/`.bin`).
        scheduler_kind: None keeps the folder's scheduler class; "ddim"/"ddpm" rebuilds that class
            from the folder's scheduler config.
    """
    _offline()
    unet_dir, sched_dir = _resolve_unet_dir(Path(path))
    config = _read_json(unet_dir / "config.json", "U-Net config")
    class_name = config.get("_class_name")
    if class_name not in UNET_CLASSES:
        raise CheckpointError(
            f"{unet_dir / 'config.json'} describes a {class_name!r}; expected one of {UNET_CLASSES} "
            f"(the `unet/` of a DDPM, DDIM or Stable Diffusion pipeline)."
        )
    import diffusers

    options = _weights_options(unet_dir)
    try:
        unet, info = getattr(diffusers, class_name).from_pretrained(
            str(unet_dir), local_files_only=True, output_loading_info=True, **options
        )
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"Could not load {class_name} weights from {unet_dir} ({type(exc).__name__}: {exc}). The weight "
            f"file is corrupted, truncated, or does not match config.json. {_HOW_TO_GET_PIPELINE}"
        ) from exc
    # diffusers only warns about missing/unexpected keys and randomly initialises the missing ones;
    # a half-random U-Net would silently ruin every measurement, so load strictly.
    bad = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if bad:
        summary = "; ".join(f"{k}: {list(v)[:5]}{' ...' if len(v) > 5 else ''}" for k, v in bad.items())
        raise CheckpointError(
            f"The weights in {unet_dir} do not match config.json ({summary}). The weight file is "
            f"incomplete or belongs to another model. {_HOW_TO_GET_PIPELINE}"
        )
    return DiffusersCheckpoint(unet.eval(), _load_scheduler(sched_dir, scheduler_kind), class_name,
                               unet_dir, sched_dir)


def one_line(text: object, limit: int = 400) -> str:
    """`text` on one line (whitespace runs collapsed), cut at `limit` characters: error paragraphs."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _torch_load_reason(exc: BaseException) -> str:
    """The informative part of a torch.load failure (its weights-only message spans many lines)."""
    paragraphs = [p for p in str(exc).split("\n\n") if p.strip()]
    boilerplate = ("Weights only load failed", "Check the documentation of torch.load")
    # keep e.g. "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
    kept = [p for p in paragraphs if not p.strip().startswith(boilerplate)] or paragraphs[:1]
    return one_line(" ".join(kept).replace("WeightsUnpickler error: ", ""), 240)


def _read_timm_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, *_LOAD_ERRORS) as exc:
            raise CheckpointError(
                f"Could not read {path} as safetensors ({exc}); the file is corrupted or truncated. "
                f"Copy it again from its source."
            ) from exc
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"Could not read {path} with torch.load(weights_only=True) ({type(exc).__name__}: "
            f"{_torch_load_reason(exc)}). The "
            f"file is corrupted, or it pickles objects other than tensors, which evfarm refuses to load. "
            f"Convert it to safetensors on a machine you trust: "
            f"`safetensors.torch.save_file(state_dict, 'model.safetensors')`."
        ) from exc


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common checkpoint containers and strip wrapper prefixes."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):  # timm train scripts / DeiT / others
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds no state dict of tensors (found {type(obj).__name__}); expected a timm model's "
            f"`state_dict()`, optionally under a 'state_dict' or 'model' key."
        )
    cleaned = {}
    for key, value in obj.items():
        for prefix in ("_orig_mod.", "module."):  # torch.compile and DDP wrappers, either order
            key = key.removeprefix(prefix)
        cleaned[key.removeprefix("_orig_mod.")] = value
    return cleaned


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor state dict in a local `.safetensors` or `.pth/.pt/.bin` file, never unpickling freely.

    `.safetensors` loads with safetensors, anything else with `torch.load(weights_only=True)`;
    checkpoint containers (`state_dict`/`model` keys) and wrapper prefixes are unwrapped. Every
    failure (missing file, corrupted file, pickled objects other than tensors, no tensor dict) is a
    `CheckpointError` naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Expected a weights file at {path} (.safetensors, or .pth/.pt/.bin of a state_dict()), but "
            f"{'it is not a file' if path.exists() else 'there is no such file'}."
        )
    return _unwrap_state_dict(_read_timm_file(path), path)


def _head_size(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    weight = state.get(f"{names[0]}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


def load_timm_checkpoint(
    path: str | Path, arch: str, num_classes: int | None = None, **model_kwargs: Any
) -> nn.Module:
    """Build `timm.create_model(arch, pretrained=False, ...)` and load a local checkpoint (strict).

    `num_classes=None` takes the head size from the checkpoint. `.safetensors` loads with
    safetensors; `.pth/.pt/.bin` with `torch.load(weights_only=True)`.
    """
    _offline()
    import timm

    path = Path(path)
    if not timm.is_model(arch):
        raise ConfigError(f"Unknown timm architecture {arch!r}. {did_you_mean(arch, timm.list_models())}")
    if path.suffix not in TIMM_SUFFIXES or not path.is_file():
        raise CheckpointError(
            f"Expected a timm checkpoint file for {arch!r} at {path} (one of {', '.join(TIMM_SUFFIXES)}), "
            f"but {'it does not exist' if not path.exists() else 'it is not such a file'}. Get one on a "
            f"machine with network access: `m = timm.create_model({arch!r}, pretrained=True)` then "
            f"`safetensors.torch.save_file(m.state_dict(), 'model.safetensors')`, and copy it here."
        )
    state = _unwrap_state_dict(_read_timm_file(path), path)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if num_classes is None:
        head = _head_size(model, state)
        if head is not None and head != model.num_classes:
            model.reset_classifier(head)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"The state dict in {path} does not fit timm {arch!r} (num_classes={model.num_classes}, "
            f"kwargs={model_kwargs}): {one_line(exc)}. Check the architecture name, num_classes and "
            f"model kwargs (img_size, in_chans) the checkpoint was trained with."
        ) from exc
    return model.eval()
