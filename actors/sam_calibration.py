"""SAM calibration task: a quantization-ready SAM and its calibration / held-out images loaded once per
actor; a trial is one PTQ4SAM / SAQ-SAM / baseline run and its mask metrics.

A task class for the generic evaluator actor (`actors/evaluator.py`, profile `evaluator_cpu1`).
Thin by design: the methods live in `methods.ptq4sam` / `methods.saqsam` (registry
`SAM_PTQ_METHODS`, papers cited there), the model and data in `sims.zoo.sam_shapes` /
`sims.data.shapes`, the metrics in `methods.metrics.masks` (pycocotools mask AP).

Trial params: `method` (a `methods.saqsam.PRESETS` name, or 'clip_study' with `clip_0`..`clip_{n-1}`,
one clip ratio per decoder attention), `bits` ('w4a4'), `calib` (calibration images), `rep`
(replicate: calibration draw `calib_seed + rep`, method seed `rep`, so at one rep every method sees
the same images) and optionally `buggy_drop` (reproduce the official codes' evaluation bug; the
row says so in `buggy_drop`). Calibration images come from the training seeds only; metrics from
the held-out test seeds, and (clip study) the objective from a separate validation range, so
Optuna never chooses clips on the images it is scored on [our design].

Rows: mask AP / AP50 / AP75 with box prompts and with point prompts (pycocotools, class-agnostic,
the predicted IoU as score), mean IoU per prompt kind, the FP values, attention-focus IoU per
decoder block, the chosen clips, calibration wall / CPU seconds, PAR block evaluations (saved).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.metrics.masks import mask_iou, shapes_mask_ap
from methods.ptq4sam import SAM_PTQ_METHODS
from methods.quant.bits import FAKE_QUANT, parse_bits
from methods.saqsam import PRESETS, attention_focus_ious, reproduce_drop_bug_
from sims.data.shapes import ShapesConfig, make_shapes_dataset, stack_samples

MODELS = ("sam-shapes",)
SAM_BITS = {**FAKE_QUANT, "fp": False, "who": "SAM PTQ"}
VAL_FIRST_SEED = 2_000_000  # the clip study's objective split: disjoint from train and test seeds
RECON_KEYS = ("iters", "batch_size", "weight_lr")


@dataclass(frozen=True)
class SamCalibrationTaskConfig(ConfigDict):
    """Shared by every trial: model, split sizes, reconstruction schedule, first/last-layer bits."""

    model: str = "sam-shapes"
    test_images: int = 48
    val_images: int = 24
    calib_seed: int = 5000
    calib_prompts: str = "mixed"
    iters: int = 20
    batch_size: int = 4
    weight_lr: float = 1e-2
    first_last_bits: int = 8
    focus_images: int = 4
    eval_batch: int = 48
    version: int = 1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"task.model must be one of {list(MODELS)}, got {self.model!r}.")
        sizes = (self.test_images, self.val_images, self.iters, self.batch_size, self.focus_images,
                 self.eval_batch)
        if any(not isinstance(v, int) or v < 1 for v in sizes) or self.weight_lr <= 0:
            raise ConfigError(f"task sizes must be ints >= 1 and weight_lr > 0, got {sizes}, "
                              f"{self.weight_lr}.")
        if self.calib_prompts not in ("box", "point", "mixed"):
            raise ConfigError(f"task.calib_prompts must be box, point or mixed, got "
                              f"{self.calib_prompts!r}.")
        if not 2 <= self.first_last_bits <= 16:
            raise ConfigError(f"task.first_last_bits must lie in 2..16, got {self.first_last_bits}.")


def focus_column(attention: str) -> str:
    """'transformer.layers.0.self_attn' -> 'focus_iou_l0_self_attn' (a plain column name)."""
    name = attention.replace("transformer.", "").replace("layers.", "l").replace(".", "_")
    return f"focus_iou_{name}"


def method_config(method: str, w_bits: int, a_bits: int, cfg: SamCalibrationTaskConfig,
                  clips: tuple[float, ...] = (), overrides: dict[str, Any] | None = None):
    """(registered method, its config) for a preset name or 'clip_study' (one config for all)."""
    if method == "clip_study":
        name, preset = "saqsam", {"recon": False, "fixed_clips": clips}
    elif method in PRESETS:
        name, preset = PRESETS[method]
    else:
        raise ConfigError(f"method must be one of {[*PRESETS, 'clip_study']}, got {method!r}.")
    spec = SAM_PTQ_METHODS.get(name)
    kw = {**preset, "w_bits": w_bits, "a_bits": a_bits, "first_last_bits": cfg.first_last_bits,
          **{k: getattr(cfg, k) for k in RECON_KEYS}, **(overrides or {})}
    return spec, spec.config_cls.from_dict(kw)


@register_task("sam_calibration")
class SamCalibrationTask:
    """Holds the FP SAM, the calibration pool and the held-out splits; `evaluate` quantizes a copy."""

    def __init__(self, cfg: SamCalibrationTaskConfig) -> None:
        from sims.zoo.sam_shapes import TEST_FIRST_SEED, TRAIN_FIRST_SEED, load_sam_shapes

        self.cfg = cfg
        self.sam = load_sam_shapes()
        size = ShapesConfig(image_size=self.sam.image_encoder.img_size)
        self.train_first, self.shapes = TRAIN_FIRST_SEED, size
        self.test = make_shapes_dataset(cfg.test_images, TEST_FIRST_SEED, size)
        self.val = make_shapes_dataset(cfg.val_images, VAL_FIRST_SEED, size)
        self.fp = self._metrics(self.sam, self.test)
        self._pcc_cache: dict[tuple, dict] = {}

    def calibration_set(self, n: int, rep: int):
        from sims.zoo.sam_shapes import prompt_set

        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"calib must be a positive number of images, got {n!r}.")
        first = self.train_first + self.cfg.calib_seed + 1000 * rep  # training seeds only
        return prompt_set(self.sam, make_shapes_dataset(n, first, self.shapes), self.cfg.calib_prompts)

    @torch.no_grad()
    def _metrics(self, model: torch.nn.Module, samples: list) -> dict[str, float]:
        from sims.zoo.sam_shapes import predict

        out: dict[str, float] = {}
        model.eval()
        for kind in ("box", "point"):
            ious, masks, scores = [], [], []
            for start in range(0, len(samples), self.cfg.eval_batch):
                chunk = samples[start : start + self.cfg.eval_batch]
                data = stack_samples(chunk)
                flag = torch.full((len(data.labels),), kind == "box")
                logits, iou = predict(model, data.images, data.image_index, data.boxes, data.points, flag)
                pred = logits[:, 0] > model.mask_threshold
                ious.append(mask_iou(pred, data.masks))
                counts = [len(s.labels) for s in chunk]
                masks += [m.numpy() for m in torch.split(pred, counts)]
                scores += [s.numpy() for s in torch.split(iou[:, 0], counts)]
            ap = shapes_mask_ap([s.masks for s in samples], [s.labels for s in samples], masks, scores)
            out.update({f"{kind}_ap": ap["AP"], f"{kind}_ap50": ap["AP50"], f"{kind}_ap75": ap["AP75"],
                        f"{kind}_iou": float(torch.cat(ious).mean())})
        return out

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int) -> dict:
        w, a = parse_bits(params["bits"]).require(**SAM_BITS).wa
        rep, method, calib = int(params.get("rep", 0)), params["method"], int(params["calib"])
        clips = tuple(float(params[k]) for k in sorted((k for k in params if k.startswith("clip_")),
                                                        key=lambda k: int(k.split("_")[1])))
        buggy = bool(params.get("buggy_drop", False))
        row, model = self.trial(method, w, a, calib, rep, clips=clips, buggy=buggy)
        objectives = {"box_ap": row["box_ap"], "calib_seconds": row.pop("calib_seconds")}
        if method == "clip_study":
            objectives["val_box_ap"] = self._metrics(model, self.val)["box_ap"]
            row.update(self._pcc_side_by_side(w, a, calib, rep))
        return {"objectives": objectives, "metrics": row}

    def trial(self, method: str, w: int, a: int, calib: int, rep: int, *, clips: tuple[float, ...] = (),
              overrides: dict[str, Any] | None = None, buggy: bool = False) -> tuple[dict[str, Any], Any]:
        """One quantization + evaluation: (the row's metrics, the quantized model). `overrides` change
        fields of the method's config (the bench's ablations)."""
        data = self.calibration_set(calib, rep)
        spec, config = method_config(method, w, a, self.cfg, clips, overrides)
        result = spec.run(self.sam, data, config, seed=rep)
        touched = reproduce_drop_bug_(result.model, result.report) if buggy else 0
        torch.manual_seed(rep)  # the bug's random mixing, when reproduced, is seeded too
        t0 = time.perf_counter()
        metrics = self._metrics(result.model, self.test)
        report = result.report
        focus = attention_focus_ious(result.model, data, self.cfg.focus_images)
        recon = report.get("recon", {})
        row = {
            **metrics, **{f"fp_{k}": v for k, v in self.fp.items()},
            "w_bits": w, "a_bits": a, "buggy_drop": buggy, "bug_quantizers": touched,
            "mean_focus_iou": sum(focus.values()) / len(focus),
            **{focus_column(k): v for k, v in focus.items()},
            "clips": ",".join(f"{c['clip']:g}" for c in report.get("pcc", {}).get("clips", [])),
            "calib_seconds": report["calib_seconds"], "calib_cpu_seconds": report["calib_cpu_seconds"],
            "eval_seconds": time.perf_counter() - t0,
            "block_evals": recon.get("block_evals", 0),
            "block_evals_saved": recon.get("block_evals_saved", 0),
            "recon_seconds_per_step": recon.get("seconds_per_step", float("nan")),
            "bimodal_blocks": sum(r["bimodal"] for r in report.get("big", [])),
        }
        return row, result.model

    def _pcc_side_by_side(self, w: int, a: int, calib: int, rep: int) -> dict[str, Any]:
        """PCC's analytic choice on the same calibration images, computed once per actor."""
        key = (w, a, calib, rep)
        if key not in self._pcc_cache:
            spec, config = method_config("saqsam_star", w, a, self.cfg)
            result = spec.run(self.sam, self.calibration_set(calib, rep), config, seed=rep)
            clips = [c["clip"] for c in result.report["pcc"]["clips"]]
            self._pcc_cache[key] = {"pcc_val_box_ap": self._metrics(result.model, self.val)["box_ap"],
                                    "pcc_clips": ",".join(f"{c:g}" for c in clips)}
        return self._pcc_cache[key]
