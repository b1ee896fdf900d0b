"""Diffusion-quantization task: one U-Net + its FP calibration trajectories loaded once per actor; a
trial quantizes a copy with one method of issue 15 and scores it.

A task class for the generic evaluator actor (`actors/evaluator.py`), the calibration worker of the
diffusion methods. Thin by design (DESIGN.md house rule 3): the methods are
`methods.dilatequant` (WD + TPQ + BKD; `prepare_ptq`, the Q-Diffusion-style PTQ baseline on the
same calibration set), `methods.efficientdm`, `methods.diffusion_qat`; the FP trajectories and the
calibration draw are `methods.quant.unet_units.fp_trajectories` / `FPTrajectories.pick`; FD is
`methods.metrics.frechet` on the zoo's digit-classifier features, as `actors.model_shard` computes
the CacheQuant grid's digit-FD; the MSE CI is `methods.metrics.stats.bootstrap_ci`.

A trial's parameters (`DQPoint`, unknown keys refused): `method` (qdiffusion | dilatequant |
efficientdm | diffusion_qat), `bits` ('w4a4' ... 'w8a8'), `dilation` (DilateQuant's WD on/off; only
DilateQuant has it), `calib` (calibration samples drawn from the stored trajectories), `iters`
(DilateQuant's iterations per unit; EfficientDM and QAT get `iters` x units optimizer steps in total,
the same budget [ours]; PTQ none), `weight_lr`, `quant_lr`, `lora_lr` (EfficientDM), `max_scale`
(WD's cap on s; 0 = no cap) and `rep`. At one `rep` every method sees the same calibration samples
(drawn with seed `calib_seed + rep`) and runs with seed `rep`: paired comparisons; the farm's
per-trial seed stays in the row's `seed` column but is not used, so a grid is reproducible [ours].

Row: the quality objective (`fd`: digit-FD of `samples` generated images against the real test
digits, for the zoo's 1x16x16 ddpm-digits; `mse` otherwise) with a 95 % grouped-jackknife CI over
the generated samples (`fd_lo`, `fd_hi`, the real set fixed; `fd_jackknife_ci` says why not a
bootstrap) [ours]; `mse` of the final samples against the FP samples from the same noise (+
bootstrap CI over samples); `quantize_seconds` (wall time of the method's prepare, calibration
draw included, the shared FP trajectories not); `quantize_cpu_seconds` (process CPU time of the
same block: on a shared machine the wall time depends on the load, the CPU time much less);
`peak_mem_mb` with `peak_mem_kind`: 'rss_delta' on a CPU device (the process's resident set
sampled every `rss_interval_s` during prepare, minus the resident set before; torch's CPU
allocations are not seen by tracemalloc, so RSS is used; freed heap is handed back to the OS
first, `malloc_trim`, so an earlier trial's leftovers do not hide this one's growth) or
'cuda_max_allocated' on a GPU (`torch.cuda.max_memory_allocated` after a reset); the method's
config as JSON (`method_config`), its version, the task config version and the torch / diffusers
versions.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actors.model_shard import ShardConfig, load_pipeline
from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.diffusion_qat import DiffusionQATConfig, prepare_qat
from methods.dilatequant import UNET_QAT_BITS, DilateQuantConfig, prepare_dilatequant, prepare_ptq
from methods.efficientdm import EfficientDMConfig, prepare_efficientdm
from methods.errors import ConfigError, did_you_mean
from methods.metrics.frechet import fd_ci, frechet_distance, gaussian_stats
from methods.metrics.stats import bootstrap_ci
from methods.quant.bits import canonical_bits, parse_bits
from methods.quant.unet_units import check_unet, fp_trajectories, unit_names

METHODS = ("qdiffusion", "dilatequant", "efficientdm", "diffusion_qat")


@dataclass(frozen=True)
class DQPoint(ConfigDict):
    """One trial, as it travels from the driver and lands as row columns (module docstring)."""

    method: str = "dilatequant"
    bits: str = "w4a4"
    dilation: bool = True
    calib: int = 64
    iters: int = 20
    weight_lr: float = 1e-4
    quant_lr: float = 1e-4
    lora_lr: float = 1e-3
    max_scale: float = 0.0
    rep: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"method must be one of {list(METHODS)}, got {self.method!r}. "
                f"{did_you_mean(str(self.method), METHODS)}"
            )
        object.__setattr__(self, "bits", canonical_bits(self.bits, **UNET_QAT_BITS, who=self.method))
        if self.dilation and self.method != "dilatequant":
            raise ConfigError(
                f"dilation is DilateQuant's weight dilation; method {self.method!r} has none. "
                "Set dilation=false for it (the sweep's grid does)."
            )
        if self.max_scale != 0 and not self.max_scale >= 1:
            raise ConfigError(f"max_scale must be 0 (no cap) or >= 1, got {self.max_scale}.")
        if self.calib < 1 or self.iters < 0 or self.rep < 0:
            raise ConfigError(
                f"need calib >= 1, iters >= 0, rep >= 0; got {self.calib}, {self.iters}, {self.rep}."
            )


@dataclass(frozen=True)
class DiffusionQuantTaskConfig(ConfigDict):
    """model: 'auto' (zoo ddpm-digits; untrained if its weights are missing), 'untrained' or a local
    diffusers folder; steps: DDIM steps; samples: evaluated samples; trajectories: FP calibration
    trajectories recorded once (a trial's `calib` <= trajectories x steps); batch_size: BKD/LoRA/QAT
    batch; fd_boot: bootstrap resamples of the MSE CI; fd_groups: jackknife groups of the FD CI."""

    model: str = "auto"
    device: str = "cpu"
    steps: int = 10
    samples: int = 64
    trajectories: int = 32
    batch_size: int = 32
    noise_seed: int = 1234
    calib_seed: int = 1000
    fd_boot: int = 1000
    fd_groups: int = 16
    rss_interval_s: float = 0.005
    version: int = 1

    def __post_init__(self) -> None:
        if self.steps < 2 or self.samples < 2 or self.trajectories < 1 or self.batch_size < 1:
            raise ConfigError(
                f"need steps >= 2, samples >= 2, trajectories >= 1, batch_size >= 1; got "
                f"{self.steps}, {self.samples}, {self.trajectories}, {self.batch_size}."
            )
        if self.fd_boot < 100 or self.fd_groups < 2 or not self.rss_interval_s > 0:
            raise ConfigError(
                f"need fd_boot >= 100, fd_groups >= 2 and rss_interval_s > 0; got "
                f"{self.fd_boot}, {self.fd_groups}, {self.rss_interval_s}."
            )


def fd_jackknife_ci(
    feats: np.ndarray,
    real_stats: tuple[np.ndarray, np.ndarray],
    groups: int = 16,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """FD of `feats` (N, D) against fixed real statistics, with a delete-a-group jackknife t-interval:
    the samples are split at random into `groups` groups, FD recomputed with each group left out,
    SE^2 = (g - 1) / g * sum_j (FD_(j) - mean)^2, interval FD +- t_{g-1} SE
    (`methods.metrics.stats.grouped_jackknife_ci`) [ours]. A percentile
    bootstrap does not work here: resampling with replacement duplicates samples, which shrinks the
    fitted covariance and inflated every resampled FD (measured: at 32 samples all 200 resamples lay
    above the plug-in FD, so its 'CI' excluded the estimate)."""
    est = fd_ci(feats, real_stats, groups, level, seed)
    return est.value, est.lo, est.hi


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`), so an RSS delta measures this
    block's allocations and not how much an earlier trial left in the allocator's free lists."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the delta is then a lower bound
        pass


class PeakMemory:
    """Peak memory of a block: RSS above the start sampled by a thread (CPU), or CUDA's counter."""

    def __init__(self, device: torch.device, interval_s: float) -> None:
        self.device, self.interval = device, interval_s
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_delta"
        self.peak_mb = math.nan

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_max_allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _release_free_heap()
        self._base = self._peak = self.rss_bytes()
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, self.rss_bytes())

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.kind == "cuda_max_allocated":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self.rss_bytes())
        self.peak_mb = max(peak - self._base, 0) / 2**20


def method_config(point: DQPoint, task_cfg: DiffusionQuantTaskConfig, n_units: int) -> Any:
    """The method's own config for a point (it validates again); None for the PTQ baseline."""
    common = {
        "bits": point.bits,
        "batch_size": task_cfg.batch_size,
        "calib_size": point.calib,
        "trajectories": task_cfg.trajectories,
        "seed": point.rep,
    }
    if point.method == "dilatequant":
        return DilateQuantConfig(
            **common,
            dilation=point.dilation,
            iters=point.iters,
            max_scale=point.max_scale or None,
            weight_lr=point.weight_lr,
            quant_lr=point.quant_lr,
        )
    if point.method == "efficientdm":
        return EfficientDMConfig(
            **common, iters=point.iters * n_units, lora_lr=point.lora_lr, quant_lr=point.quant_lr
        )
    if point.method == "diffusion_qat":
        return DiffusionQATConfig(
            **common, iters=point.iters * n_units, weight_lr=point.weight_lr, quant_lr=point.quant_lr
        )
    return None


@register_task("diffusion_quant")
class DiffusionQuantTask:
    """Holds the FP U-Net, its FP calibration trajectories, the evaluation noise and FP samples."""

    def __init__(self, cfg: DiffusionQuantTaskConfig) -> None:
        self.cfg, self.device = cfg, torch.device(cfg.device)
        unet, self.scheduler, self.model_name = load_pipeline(ShardConfig(model=cfg.model, device=cfg.device))
        check_unet(unet)  # an unknown U-Net class or block is refused before any sampling
        self.unet = unet.to(self.device).eval()
        self.n_units = len(unit_names(self.unet))
        size = unet.config.sample_size
        size = tuple(size) if isinstance(size, list | tuple) else (size, size)
        shape = (unet.config.in_channels, *size)
        gen = torch.Generator().manual_seed(cfg.noise_seed)
        self.noise = torch.randn((cfg.samples, *shape), generator=gen).to(self.device)
        calib_noise = torch.randn((cfg.trajectories, *shape), generator=gen).to(self.device)
        t0 = time.perf_counter()
        self.traj = fp_trajectories(self.unet, self.scheduler, calib_noise, cfg.steps)
        self.trajectory_seconds = time.perf_counter() - t0
        from methods.deepcache import DeepCacheUNet, sample_loop

        self.fp_samples = sample_loop(
            DeepCacheUNet(self.unet, 0), self.scheduler, self.noise, cfg.steps, list(range(cfg.steps))
        )
        self.digits = shape == (1, 16, 16) and cfg.model in ("auto", "untrained")
        self.quality = "fd" if self.digits else "mse"
        if self.digits:
            from sims.data.digits import load_digits_split
            from sims.zoo import digits_classifier as dc
            from sims.zoo.registry import load_zoo_model

            self._classifier = load_zoo_model(dc.NAME)
            self.real_features = dc.digit_features(self._classifier, load_digits_split("test", 16)[0])
            self._real_stats = gaussian_stats(self.real_features)
            self.fp_fd = self.fd_with_ci(self.fp_samples)[0]

    def features(self, x: torch.Tensor) -> np.ndarray:
        from sims.zoo import digits_classifier as dc

        return dc.digit_features(self._classifier, ((x.cpu() + 1) / 2).clamp(0, 1))

    def fd_of_features(self, feats: np.ndarray) -> float:
        return frechet_distance(*gaussian_stats(feats), *self._real_stats)

    def fd_with_ci(self, x: torch.Tensor, seed: int = 0) -> tuple[float, float, float]:
        """Digit-FD of samples `x` against the real test digits and its grouped-jackknife CI over `x`."""
        return fd_jackknife_ci(self.features(x), self._real_stats, self.cfg.fd_groups, seed=seed)

    def prepare(self, point: DQPoint):
        """The evaluation-ready sampler of one point and what preparing it cost."""
        cfg = method_config(point, self.cfg, self.n_units)
        torch.manual_seed(point.rep)  # LoRA's initialisation draws from the global generator
        with PeakMemory(self.device, self.cfg.rss_interval_s) as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            calib = self.traj.pick(point.calib, self.cfg.calib_seed + point.rep)
            if point.method == "qdiffusion":
                sampler = prepare_ptq(self.unet, self.scheduler, self.cfg.steps, point.bits, calib)
            else:
                prepare = {
                    "dilatequant": prepare_dilatequant,
                    "efficientdm": prepare_efficientdm,
                    "diffusion_qat": prepare_qat,
                }[point.method]
                sampler = prepare(self.unet, self.scheduler, self.cfg.steps, cfg, calib)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.last_cpu_seconds = cpu
        return sampler, cfg, seconds, mem

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int) -> dict:
        point = DQPoint.from_dict(params)
        sampler, cfg, seconds, mem = self.prepare(point)
        x = sampler.sample(self.noise)
        per_sample = (x - self.fp_samples).pow(2).flatten(1).mean(1).double().cpu().numpy()
        mse = bootstrap_ci(per_sample, n_boot=self.cfg.fd_boot, seed=point.rep)
        objectives = {"mse": mse.value}
        metrics: dict[str, Any] = {"mse_lo": mse.lo, "mse_hi": mse.hi}
        if self.digits:
            fd, lo, hi = self.fd_with_ci(x, seed=point.rep)
            objectives["fd"] = fd
            metrics.update(fd_lo=lo, fd_hi=hi, fp_fd=self.fp_fd)
        import diffusers

        report = sampler.report or {}
        metrics.update(
            **dict(zip(("w_bits", "a_bits"), parse_bits(point.bits).wa, strict=True)),
            quantize_seconds=seconds,
            quantize_cpu_seconds=self.last_cpu_seconds,
            peak_mem_mb=mem.peak_mb,
            peak_mem_kind=mem.kind,
            optimizer_steps=int(report.get("optimizer_steps", 0)),
            units=self.n_units,
            calib_seed=self.cfg.calib_seed + point.rep,
            method_seed=point.rep,
            model=self.model_name,
            samples=self.cfg.samples,
            steps=self.cfg.steps,
            trajectory_seconds=self.trajectory_seconds,
            method_config=json.dumps(
                cfg.to_dict() if cfg is not None else {"bits": point.bits, "split": True},
                sort_keys=True,
                default=str,
            ),
            method_version=getattr(cfg, "version", 1),
            task_version=self.cfg.version,
            torch_version=torch.__version__,
            diffusers_version=diffusers.__version__,
            **{k: v for k, v in report.items() if k.startswith("wd_") and isinstance(v, int | float)},
        )
        return {"objectives": objectives, "metrics": metrics}
