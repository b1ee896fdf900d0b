"""Tiny SLTNet, its ANN twin and the spiking baseline, trained on the event simulator.

Zoo entries `sltnet-events`, `sltnet-ann-events`, `snn-baseline-events` (methods/sltnet.py;
paper: SLTNet, arXiv 2412.12843). Data: `sims.data.events` at 32x48 (1 kHz internal frames),
DDD17-like fixed 50 ms windows, the official 5-bin voxel grid (normalised), labels at the
window's end; training windows from simulator seeds 0-7, held-out evaluation windows from seeds
1000-1003 (other scenes: other layouts, objects, textures, thresholds and noise draws).

Recipe [code: train.py]: Adam lr 1e-3, OHEM cross-entropy (thresh 0.7, min_kept B·H·W/16),
auxiliary early-head loss weight 0.4, random horizontal flips, T = 1. Ours [ours]: 32x48 sensor,
base width 16 with one SCB per encoder stage (the official network is base 32 with 3 per stage,
~413k parameters), a fixed step budget instead of 300 epochs, no StepLR (it would decay only a few
percent within the budget), batch 16, one thread, deterministic kernels.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.metrics.energy import measure_energy
from methods.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou, ohem_cross_entropy
from methods.sltnet import LIF, SEG_MODELS, param_count
from sims.data.event_repr import voxel_grid
from sims.data.events import CLASS_NAMES, EventSimConfig, windows
from sims.zoo.registry import ZooSpec, register_zoo
from sims.zoo.training import card_table, deterministic, write_zoo_files

SENSOR = EventSimConfig(height=32, width=48, frame_rate_hz=1000.0)
WINDOW_US = 50_000
BINS = 5
TRAIN_SEEDS = tuple(range(8))
TRAIN_WINDOWS = 40
EVAL_SEEDS = (1000, 1001, 1002, 1003)
EVAL_WINDOWS = 15
ARCH = {"base": 16, "blocks": (1, 1, 1), "n_classes": len(CLASS_NAMES), "in_channels": BINS}
RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "steps": 400, "ohem_thresh": 0.7,
          "aux_weight": 0.4, "hflip": True, "time_steps": 1}
DATA_LINE = (f"sims.data.events {SENSOR.height}x{SENSOR.width} at 1 kHz, {WINDOW_US // 1000} ms windows, "
             f"{BINS}-bin voxel grid; train seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]} x {TRAIN_WINDOWS} "
             "windows, "
             f"eval seeds {EVAL_SEEDS[0]}-{EVAL_SEEDS[-1]} x {EVAL_WINDOWS}")
MODELS = {"sltnet-events": "sltnet", "sltnet-ann-events": "sltnet-ann", "snn-baseline-events": "snn-baseline"}


def voxel_windows(sim: EventSimConfig, seed: int, n: int, duration_us: int = WINDOW_US, bins: int = BINS,
                  mode: str = "duration", n_events: int = 2_000):
    """(voxel grid [bins, H, W] float32, labels [H, W] int64) for n successive windows of one stream."""
    for w in windows(sim, seed, mode=mode, duration_us=duration_us, n_events=n_events, n_windows=n):
        yield voxel_grid(w.x, w.y, w.t, w.p, sim.height, sim.width, bins=bins), w.labels


@functools.lru_cache(maxsize=4)
def event_dataset(seeds: tuple[int, ...], n_per_seed: int, sim: EventSimConfig = SENSOR,
                  bins: int = BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked voxel grids [N, bins, H, W] and labels [N, H, W] of n_per_seed windows per seed."""
    xs, ys = [], []
    for seed in seeds:
        for grid, labels in voxel_windows(sim, seed, n_per_seed, bins=bins):
            xs.append(grid)
            ys.append(labels)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def build(kind: str = "sltnet", **overrides: Any) -> nn.Module:
    return SEG_MODELS.create(kind, **{**ARCH, **overrides})


def fit(kind: str, seed: int = 0, steps: int | None = None, data: tuple | None = None,
        progress: Callable[[str], None] | None = None,
        arch: dict | None = None) -> tuple[nn.Module, list[float]]:
    """Train one network with the recipe (`arch` overrides ARCH); deterministic for a seed on one thread."""
    x, y = data if data is not None else event_dataset(TRAIN_SEEDS, TRAIN_WINDOWS)
    steps = RECIPE["steps"] if steps is None else steps
    losses: list[float] = []
    with deterministic(seed) as gen:
        model = build(kind, **(arch or {})).train()
        opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
        for step in range(steps):
            idx = torch.randint(0, x.shape[0], (RECIPE["batch_size"],), generator=gen)
            xb, yb = x[idx], y[idx]
            if RECIPE["hflip"]:
                flip = torch.rand(xb.shape[0], generator=gen) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                yb = torch.where(flip.view(-1, 1, 1), yb.flip(-1), yb)
            out, early = model(xb)
            loss = ohem_cross_entropy(out, yb, RECIPE["ohem_thresh"]) \
                + RECIPE["aux_weight"] * ohem_cross_entropy(early, yb, RECIPE["ohem_thresh"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress and (step + 1) % 50 == 0:
                progress(f"{kind} step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f}")
    return model.eval(), losses


def segment(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def evaluate(model: nn.Module, data: tuple | None = None) -> dict[str, Any]:
    """Held-out mIoU, per-class IoU, firing rate and energy per window of one model."""
    x, y = data if data is not None else event_dataset(EVAL_SEEDS, EVAL_WINDOWS)
    cm = confusion_matrix(segment(model, x), y, len(CLASS_NAMES))
    spiking = any(isinstance(m, LIF) for m in model.modules())
    report = measure_energy(model, x[:1], "snn" if spiking else "ann", spiking_types=(LIF,))
    majority = np.bincount(y.numpy().ravel(), minlength=len(CLASS_NAMES)).argmax()
    base_cm = confusion_matrix(np.full(y.shape, majority), y, len(CLASS_NAMES))
    ious = dict(zip(CLASS_NAMES, map(float, iou_per_class(cm)), strict=True))
    return {"val_miou": mean_iou(cm), "val_iou": ious,
            "majority_miou": mean_iou(base_cm), "mean_firing_rate": report.mean_firing_rate,
            "macs_per_window": report.macs, "energy_uj_per_window": report.energy_uj,
            "float_mac_share": report.float_macs / report.macs if report.macs else float("nan")}


def _trainer(name: str) -> Callable[..., dict[str, Any]]:
    kind = MODELS[name]

    def train(out_dir: Path | None = None, seed: int = 0, steps: int | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        data = event_dataset(TRAIN_SEEDS, TRAIN_WINDOWS)
        data_s = time.perf_counter() - start
        model, losses = fit(kind, seed, steps, data, progress)
        wall = time.perf_counter() - start
        metrics = evaluate(model)
        card = {"name": name, "kind": kind, "arch": {k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in ARCH.items()},
                "recipe": {**RECIPE, "steps": steps or RECIPE["steps"]}, "seed": seed,
                "data": DATA_LINE, "param_count": param_count(model), "wall_time_s": round(wall, 1),
                "data_time_s": round(data_s, 1),
                "final_loss": float(np.mean(losses[-20:])), **metrics}
        md = f"""# {name}

{SEG_MODELS.get(kind).description}; tiny width ({ARCH}) trained on the event-camera simulator
(`sims/zoo/sltnet_events.py`): Adam 1e-3, OHEM cross-entropy, auxiliary loss 0.4, T = 1.

{card_table(card, ["data", "seed", "wall_time_s", "val_miou", "majority_miou", "mean_firing_rate",
                   "param_count", "macs_per_window", "energy_uj_per_window"])}

Per-class IoU on the held-out seeds: {", ".join(f"{k} {v:.3f}" for k, v in card["val_iou"].items())}.

Limitations: simulated scenes only (no DDD17 / DSEC claim); 32x48 sensor; a few minutes of CPU
training, far from the official 300 epochs.
"""
        return write_zoo_files(name, model, card, md, out_dir)

    return train


SPECS = {name: register_zoo(ZooSpec(name=name, build=functools.partial(build, kind), train=_trainer(name),
                                    evaluate=evaluate, metric="val_miou",
                                    description=f"{kind} on simulated 32x48 event windows (mIoU)",
                                    extra={"tolerance": 1e-6, "kind": kind}))
         for name, kind in MODELS.items()}


if __name__ == "__main__":  # train all three on one shared dataset: `python -m sims.zoo.sltnet_events`
    for zoo_name in MODELS:
        trained = SPECS[zoo_name].train(progress=print)
        print(zoo_name, {k: trained[k] for k in ("val_miou", "mean_firing_rate", "wall_time_s")})
