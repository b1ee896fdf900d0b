"""Calibration-worker task: zoo classifiers and the digits splits loaded once; a trial is one PTQ run.

A task class for the generic evaluator actor (`actors/evaluator.py`; profiles `calibrator_cpu2` or
`evaluator_cpu1`). Thin by design (DESIGN.md house rule 3): the quantizers, reconstruction and
methods live in `methods.quant` / `methods.ptq` (registry `PTQ_METHODS`; papers cited there), the
bit counts in `methods.quant.counts`, top-1 in `methods.metrics.classification`.

Trial params: `model` (a zoo name), `method` (a `PTQ_METHODS` name), `bits` ('w4a4', a
`methods.quant.bits` spec), `calib` (calibration images) and `rep` (replicate index). The
calibration subset is drawn from the train split with seed `calib_seed + rep` and the method runs
with seed `rep`, so at one `rep` every method sees the same images (paired comparison) [our design;
the farm's per-trial seed stays in the row's `seed` column but is not used, which keeps the grid
reproducible]. Reconstruction methods take the task's `iters` / `batch_size` / `weight_lr` (the
tiny-scale schedule of `sweeps/bench_ptq.py`); first/last layer at `first_last_bits` for every
method.

Reported per trial: test top-1 (objective), FP top-1 and the drop, calibration wall and CPU seconds
(quantize + calibrate + reconstruct, from the method's report), the bits report summarised as mean
weight / activation bits over the quantized layers, MACs and BOPs per sample (and the BOP-equivalent
bit width sqrt(BOPs / MACs)).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.metrics.classification import top1_accuracy
from methods.ptq import PTQ_METHODS
from methods.quant import count_macs_bops
from methods.quant.bits import FAKE_QUANT, parse_bits
from sims.data.digits import load_digits_split

MODELS = ("cnn-bn-digits", "vit-digits")
RECON_KEYS = ("iters", "batch_size", "weight_lr")
#: The bits a PTQ trial takes: w2..16 a2..16, no 'fp' (every row reports the FP top-1), no kv.
PTQ_BITS = {**FAKE_QUANT, "fp": False, "who": "PTQ"}


@dataclass(frozen=True)
class CalibrationTaskConfig(ConfigDict):
    """Shared by every trial: image size, reconstruction schedule, first/last-layer policy.

    `weight_lr` 1e-2 (not the papers' 1e-3): over a few dozen iterations the AdaRound variables
    barely leave nearest rounding at 1e-3 (measured in `sweeps/bench_ptq.py`'s docstring).
    """

    image_size: int = 16
    iters: int = 40
    batch_size: int = 32
    weight_lr: float = 1e-2
    first_last_bits: int = 8
    calib_seed: int = 1000
    eval_batch: int = 256
    models: tuple[str, ...] = MODELS  # zoo models loaded once per actor (the sweep sets its grid's)
    version: int = 1

    def __post_init__(self) -> None:
        if self.image_size not in (8, 16, 32):
            raise ConfigError(
                f"image_size must be 8, 16 or 32 (the digits loader's sizes), got {self.image_size}."
            )
        if not self.models or any(m not in MODELS for m in self.models):
            raise ConfigError(
                f"task.models must be a non-empty subset of {list(MODELS)}, got {list(self.models)}."
            )
        if self.iters < 1 or self.batch_size < 1 or self.eval_batch < 1 or self.weight_lr <= 0:
            raise ConfigError(
                f"iters, batch_size, eval_batch must be >= 1 and weight_lr > 0; got {self.iters}, "
                f"{self.batch_size}, {self.eval_batch}, {self.weight_lr}."
            )
        if not 2 <= self.first_last_bits <= 16:
            raise ConfigError(f"first_last_bits must lie in 2..16, got {self.first_last_bits}.")


def load_classifier(name: str) -> torch.nn.Module:
    """A zoo digit classifier with its committed weights (CheckpointError if they are missing)."""
    if name not in MODELS:
        raise ConfigError(f"model must be one of {list(MODELS)}, got {name!r}.")
    import sims.zoo.cnn_bn_digits  # noqa: F401  (registers the zoo entries)
    import sims.zoo.vit_digits  # noqa: F401
    from sims.zoo.registry import load_zoo_model

    return load_zoo_model(name)


def bits_summary(rows: list[dict]) -> dict[str, float]:
    """Mean weight / activation bits over the quantized entries of `methods.quant.bits_report`."""
    w = [r["w_bits"] for r in rows if r["w_bits"] is not None]
    a = [r["a_bits"] for r in rows if r["a_bits"] is not None]
    return {
        "mean_w_bits": float(statistics.mean(w)) if w else float("nan"),
        "mean_a_bits": float(statistics.mean(a)) if a else float("nan"),
        "fp_modules": sum(r["w_bits"] is None and r["a_bits"] is None for r in rows),
    }


@register_task("calibration")
class CalibrationTask:
    """Holds the FP models, train images and test split; `evaluate` quantizes a copy per trial."""

    def __init__(self, cfg: CalibrationTaskConfig) -> None:
        self.cfg = cfg
        models = cfg.models
        self.x_train, _ = load_digits_split("train", cfg.image_size)
        self.x_test, self.y_test = load_digits_split("test", cfg.image_size)
        self.models = {name: load_classifier(name) for name in models}
        self.fp_top1 = {name: self._top1(m) for name, m in self.models.items()}
        from methods.quant.api import _timm_attention_cls

        _timm_attention_cls()  # import timm now, not inside the first trial's timed calibration

    @torch.no_grad()
    def _top1(self, model: torch.nn.Module) -> float:
        model.eval()
        step = self.cfg.eval_batch
        logits = torch.cat([model(self.x_test[i : i + step]) for i in range(0, len(self.x_test), step)])
        return top1_accuracy(logits, self.y_test)

    def _calibration_set(self, size: int, rep: int) -> torch.Tensor:
        if not 1 <= size <= len(self.x_train):
            raise ConfigError(f"calib must lie in 1..{len(self.x_train)} (train images), got {size}.")
        gen = torch.Generator().manual_seed(self.cfg.calib_seed + rep)
        return self.x_train[torch.randperm(len(self.x_train), generator=gen)[:size]]

    def _method_config(self, method: str, w_bits: int, a_bits: int):
        spec = PTQ_METHODS.get(method)
        kw: dict[str, Any] = {"w_bits": w_bits, "a_bits": a_bits, "first_last_bits": self.cfg.first_last_bits}
        fields = spec.config_cls.__dataclass_fields__
        kw.update({k: getattr(self.cfg, k) for k in RECON_KEYS if k in fields})
        return spec, spec.make_config(**kw)

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int) -> dict:
        name = params["model"]
        if name not in self.models:
            raise ConfigError(f"this worker holds models {list(self.models)}; a trial asked for {name!r}.")
        bits = parse_bits(params["bits"]).require(**PTQ_BITS).wa
        rep = int(params.get("rep", 0))
        calib = self._calibration_set(int(params["calib"]), rep)
        spec, config = self._method_config(params["method"], *bits)
        result = spec.run(self.models[name], calib, config, seed=rep)
        top1 = self._top1(result.model)
        counts = count_macs_bops(result.model, self.x_test[:1])
        report = result.report
        metrics = {
            "w_bits": bits[0],
            "a_bits": bits[1],
            "fp_top1": self.fp_top1[name],
            "top1_drop": self.fp_top1[name] - top1,
            "calib_cpu_seconds": report["calib_cpu_seconds"],
            **bits_summary(report["bits"]),
            "macs": counts["macs"],
            "bop_bits": math.sqrt(counts["bops"] / counts["macs"]) if counts["macs"] else float("nan"),
            "bop_reduction": counts["fp_bops"] / counts["bops"] if counts["bops"] else float("nan"),
            "calib_seed": self.cfg.calib_seed + rep,
        }
        # every candidate objective is returned; the sweep picks which ones the study optimises
        objectives = {"top1": top1, "bops": float(counts["bops"]), "calib_seconds": report["calib_seconds"]}
        return {"objectives": objectives, "metrics": metrics}
