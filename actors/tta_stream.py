"""The TTA stream task: one quantized model adapted online over one continual corruption stream.

A task class for the generic evaluator actor (`actors/evaluator.py`, profile `tta_stream_cpu1`):
it loads the source model and the calibration images once, quantizes per bit setting / TTAQ parts
(cached, and deep-copied per trial so adaptation never leaks between trials), and each chunk of a
trial adapts `n_batches` stream batches, returning one row per batch (`row_kind="stream"`:
domain, batch index, `batch_error` (`error` is the farm's error-text column), entropy, seconds)
and a `checkpoint` (adapted BN/affine state, ABL statistics, per-domain tallies, stream
position). A retried trial receives the checkpoint of its last landed chunk and resumes at that
stream position, so no batch is counted twice. The maths
lives in `methods.ttaq` (PTQ + PEM/PCR, ABL), `methods.tta` (adaptation) and `sims.data.digits_c`
(streams); TTAQ: arXiv:2412.09899. Trial params: `stream_seed`, `bits` ('w2a4' | 'fp', a
`methods.quant.bits` spec), `tta` ('none' | a TTA_METHODS name), `ttaq` ('none' |
'pem+pcr+abl' ...), `label_order`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import CheckpointError, ConfigError
from methods.quant.bits import parse_bits
from methods.tta.stream import StreamAdapter
from methods.ttaq import TTAQ_BITS, TTAQConfig, parse_parts, run_ttaq_ptq
from sims.data.digits_c import COMPUTED_SOURCES, CorruptionStream, CorruptionStreamConfig

LABEL_ORDERS = ("balanced", "imbalanced")
DIGITS_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness",
            "pixelate", "elastic_transform")


@dataclass(frozen=True)
class TTAStreamTaskConfig(ConfigDict):
    """Model, stream and PTQ settings shared by every trial of a stream sweep.

    model: zoo name; checkpoint: a user's weights for it (safetensors, or .pth read with
    weights_only=True) or, with `arch`, a timm checkpoint file. source/root: digits-c, textures-C
    ("textures", with model="cnn-bn-textures") or a
    CIFAR-10-C / ImageNet-C folder; batches_per_domain: 0 takes each whole split; calib_path: .npy
    of clean calibration images for folder sources (uint8 NHWC or float NCHW in [0, 1]);
    input_mean/std: normalisation of real models' inputs.
    """

    model: str = "cnn-bn-digits"
    checkpoint: str | None = None
    arch: str | None = None
    num_classes: int = 10
    source: str = "digits"
    root: str | None = None
    corruptions: tuple[str, ...] = DIGITS_C
    severity: int = 3
    batch_size: int = 32
    batches_per_domain: int = 14
    image_size: int = 16
    imbalance_alpha: float = 0.1
    calib_images: int = 256
    calib_path: str | None = None
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    ptq_iters: int = 100
    ptq_seed: int = 0
    n_batches: int = 7
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        if self.n_batches < 1 or self.calib_images < 1:
            raise ConfigError(f"n_batches and calib_images must be >= 1, got {self.n_batches}, "
                              f"{self.calib_images}.")
        if self.arch and not self.checkpoint:
            raise ConfigError(f"arch={self.arch!r} needs checkpoint= a local timm checkpoint file.")
        if (self.input_mean is None) != (self.input_std is None) or (
                self.input_mean is not None and len(self.input_mean) != len(self.input_std)):
            raise ConfigError(f"input_mean and input_std go together, one value per input channel; got "
                              f"{self.input_mean} and {self.input_std}.")
        if self.source not in COMPUTED_SOURCES and not self.calib_path:
            raise ConfigError(f"source {self.source!r} needs calib_path= a .npy of clean calibration images.")
        self.stream_config(0, "balanced")  # validates the stream fields

    def stream_config(self, seed: int, label_order: str) -> CorruptionStreamConfig:
        if label_order not in LABEL_ORDERS:
            raise ConfigError(f"label_order must be one of {LABEL_ORDERS}, got {label_order!r}.")
        return CorruptionStreamConfig(
            corruptions=self.corruptions, severity=self.severity, batch_size=self.batch_size,
            image_size=self.image_size, seed=int(seed), batches_per_domain=self.batches_per_domain or None,
            label_shift=self.imbalance_alpha if label_order == "imbalanced" else None,
            source=self.source, root=self.root)


def load_source_model(cfg: TTAStreamTaskConfig) -> torch.nn.Module:
    from sims.zoo.checkpoints import one_line, read_state_dict
    from sims.zoo.registry import ZOO, load_zoo_model

    if cfg.arch:
        from sims.zoo.checkpoints import load_timm_checkpoint

        return load_timm_checkpoint(cfg.checkpoint, cfg.arch)
    import sims.zoo.cnn_bn_digits  # noqa: F401  (registers the default zoo model)

    if not cfg.checkpoint:
        return load_zoo_model(cfg.model)
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise CheckpointError(f"Expected a weights file for zoo model {cfg.model!r} at {path} "
                              "(.safetensors, or .pth of a state_dict()), but there is no such file.")
    model = ZOO.get(cfg.model).build()
    state = read_state_dict(path)  # safetensors, or torch.load(weights_only=True): typed errors only
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path} does not fit zoo model {cfg.model!r}: {one_line(exc)}. Pass the "
                              f"checkpoint of that architecture (--set task.model=NAME), or a timm "
                              f"checkpoint with --arch.") from exc
    return model.eval()


def check_sources(cfg: TTAStreamTaskConfig) -> None:
    """Load the user's checkpoint and open the calibration file in the driver, before Ray starts.

    A task that fails in an actor's `__init__` kills the actor and every trial's retry with it; a
    `CheckpointError` here is exit 2 with one paragraph instead (issue 21, row 10).
    """
    if not cfg.arch:
        from sims.zoo import ZOO  # importing the package registers every zoo model

        ZOO.get(cfg.model)
    if cfg.checkpoint:
        load_source_model(cfg)
    if cfg.calib_path:
        _read_calibration(Path(cfg.calib_path), mmap_mode="r")


def _read_calibration(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    what = (f"calibration images {path}: expected a .npy array of clean images (uint8 NHWC, or float "
            f"NCHW in [0, 1]) written with numpy.save")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except (OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"Could not read {what} ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(arr, np.ndarray) or arr.ndim != 4:
        found = f"an array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise CheckpointError(f"Bad {what}; found {found}.")
    return arr


def load_calibration(cfg: TTAStreamTaskConfig) -> torch.Tensor:
    if cfg.calib_path:
        arr = _read_calibration(Path(cfg.calib_path))
        x = torch.from_numpy(arr.transpose(0, 3, 1, 2) / 255.0 if arr.dtype == np.uint8 else arr).float()
    elif cfg.source == "textures":  # textures-C: calibrate on clean textures-10 train patches
        from sims.data.textures import load_textures_split

        x = load_textures_split("train", cfg.image_size)[0]
    else:
        from sims.data.digits import load_digits_split

        x = load_digits_split("train", cfg.image_size)[0]
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.ptq_seed))[: cfg.calib_images]
    return x[keep]


@register_task("tta_stream")
class TTAStreamTask:
    def __init__(self, cfg: TTAStreamTaskConfig) -> None:
        self.cfg = cfg
        self.fp = load_source_model(cfg)
        self.norm = None
        if cfg.input_mean is not None:
            shape = (1, -1, 1, 1)
            mean, std = torch.tensor(cfg.input_mean), torch.tensor(cfg.input_std)
            self.norm = (mean.reshape(shape), std.reshape(shape))
        self.calib = self._prep(load_calibration(cfg))
        self.models: dict[tuple, torch.nn.Module] = {}
        self.runs: dict[int, tuple[StreamAdapter, CorruptionStream]] = {}

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.norm is None else (x - self.norm[0]) / self.norm[1]

    def quantized(self, bits: str, parts: frozenset[str]) -> torch.nn.Module:
        spec = parse_bits(bits).require(**TTAQ_BITS)
        if spec.is_fp:
            return self.fp
        wa = spec.wa
        key = (wa, "pem" in parts, "pcr" in parts)
        if key not in self.models:
            cfg = TTAQConfig(w_bits=wa[0], a_bits=wa[1], pem=key[1], pcr=key[2],
                             iters=max(self.cfg.ptq_iters, 1),
                             reconstruct=self.cfg.ptq_iters > 0)
            self.models[key] = run_ttaq_ptq(self.fp, self.calib, cfg, seed=self.cfg.ptq_seed).model
        return self.models[key]

    def _start(self, params: dict[str, Any], seed: int, checkpoint: dict | None, chunk: int):
        parts = parse_parts(params.get("ttaq", "none"))
        model = copy.deepcopy(self.quantized(params.get("bits", "w4a4"), parts))
        adapter = StreamAdapter(model, params.get("tta", "tent"), self.cfg.num_classes, "abl" in parts, seed)
        stream = CorruptionStream(self.cfg.stream_config(int(params.get("stream_seed", 0)),
                                                         params.get("label_order", "balanced")))
        if chunk > 0:
            if checkpoint is None:
                raise CheckpointError(
                    f"chunk {chunk} of a trial arrived without its stream state or a checkpoint.")
            adapter.load_state_dict(checkpoint["adapter"])
            stream.start_at(int(checkpoint["position"]))
        return adapter, stream

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int,
                 checkpoint: dict | None = None) -> dict[str, Any]:
        if trial not in self.runs or chunk == 0 or checkpoint is not None:
            self.runs = {trial: self._start(params, seed, checkpoint, chunk)}  # one live stream per actor
        adapter, stream = self.runs[trial]
        last = chunk == n_chunks - 1
        end = len(stream) if last else min(len(stream), stream.position + self.cfg.n_batches)
        rows = []
        while stream.position < end:
            b = next(stream)
            stats = adapter.step(self._prep(b.x), b.y, b.domain)
            rows.append({"row_kind": "stream", "step": b.batch_index, "domain": b.domain,
                         "domain_index": b.domain_index, "batch_index": b.batch_index, **stats})
        if not last:
            return {"rows": rows, "intermediate": adapter.mean_error(),
                    "checkpoint": {"position": stream.position, "adapter": adapter.state_dict()}}
        self.runs.pop(trial, None)
        per_domain = adapter.domain_errors()
        return {"rows": rows, "objectives": {"mean_error": adapter.mean_error()},
                "metrics": {"stream_batches": len(stream), **{f"err_{d}": e for d, e in per_domain.items()}}}
