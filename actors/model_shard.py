"""Model-shard task: a diffusion U-Net + scheduler loaded once, evaluating cache x quantization configs.

Thin by design (DESIGN.md house rule 3): the maths is in `methods.deepcache` / `methods.cachequant`;
this class holds the pipeline, the fixed noise seeds, the FP reference samples and a memo of what
several configurations share (DPS features, cache corrections), and returns plain dicts for the
generic `actors.evaluator.Evaluator` (task protocol in that module).

A trial's parameters are a flat dict of typed values, `ShardPoint`: interval (int), schedule
(str), bits (canonical spelling, e.g. 'w8a8'), corrections (none / cache / quant / both) and
quantizer ('qdiffusion', CacheQuant's own per-timestep PTQ, the default; 'dilatequant': DilateQuant's
WD + TPQ + BKD U-Net inside the cached sampler, the two lab methods composed — a point names it only
when it is not the default, so the default grid's points and rows are unchanged). The task
builds a `ShardPoint` once with `from_dict` (unknown keys refused) and from it the method's
`CacheQuantConfig`, which is the one place a schedule or bit width is validated. Metrics: per-sample
MACs and BOPs of the sampling loop and their speed-ups over FP full compute; wall-clock and CPU-time
speed-ups timed back to back against FP on 16 samples; CPU seconds of the whole trial (calibration
included); MSE of the final samples against FP samples from the same noise (every model); digit-FD
against the real test digits (only for 1x16x16 models, where the zoo's digit classifier is a
feature network; otherwise the objective is absent, never NaN). `ShardConfig.quality` names the
quality objective: 'auto' = digit_fd for the zoo's ddpm-digits, scene_fd (`sims.zoo.scenes_classifier`)
for its 3x32x32 ddpm-scenes, mse for any other model [ours]. `ShardPoint.cache_point` caches at one
ResBlock (`methods.unet_blocks` address) instead of DeepCache branch 0; named only when set.
Conditional U-Nets from `--model` get an all-zero text embedding of 77 tokens (no text encoder is
loaded) [inferred]: quality is then MSE vs FP in latent space only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from actors.task import register_task
from methods.cachequant import PRESETS, CacheQuantConfig, prepare_cachequant, preset_config
from methods.config_dict import ConfigDict
from methods.deepcache import loop_macs, step_bops, step_macs
from methods.errors import ConfigError, did_you_mean

CORRECTIONS = {"none": (False, False), "cache": (True, False), "quant": (False, True), "both": (True, True)}
QUALITY = ("auto", "digit_fd", "scene_fd", "mse")
SCENES_MODEL = "ddpm-scenes"  # the zoo's 4-level 3x32x32 bed; its quality objective is scene-FD
FP_QUANTIZER = "qdiffusion"  # ShardPoint.quantizer's default: CacheQuant's own per-timestep PTQ


@dataclass(frozen=True)
class ShardPoint(ConfigDict):
    """One grid point, as it travels from the driver to the task and lands as row columns.

    interval: cache interval N (1 = no caching); schedule: uniform | nonuniform | dps | qdps;
    bits: a bits spec ('fp', 'w8a8', ...); corrections: none | cache | quant | both (cache DEC,
    quantization DEC, both); quantizer: qdiffusion (default) | dilatequant.
    """

    interval: int = 1
    schedule: str = "uniform"
    bits: str = "fp"
    corrections: str = "none"
    quantizer: str = "qdiffusion"
    cache_point: str = ""  # a methods.unet_blocks address ("up.3.res.1"); "" = DeepCache branch 0

    def __post_init__(self) -> None:
        if self.corrections not in CORRECTIONS:
            raise ConfigError(
                f"corrections must be one of {list(CORRECTIONS)}, got {self.corrections!r}. "
                f"{did_you_mean(str(self.corrections), CORRECTIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The point's columns; `quantizer` and `cache_point` only when not the default, so the default
        grid's points (and rows) are exactly what they were before the fields existed."""
        out = super().to_dict()
        if out["quantizer"] == FP_QUANTIZER:
            del out["quantizer"]
        if not out["cache_point"]:
            del out["cache_point"]
        return out

    @property
    def uses_calibration(self) -> bool:
        """Whether the point's samples depend on the calibration draw: quantization, a searched schedule
        (DPS, quantization-aware DPS) or a correction. FP with a fixed schedule does not."""
        return self.bits != "fp" or self.schedule in ("dps", "qdps") or self.corrections != "none"

    def method_config(self, calib_samples: int, preset: str = "ours") -> CacheQuantConfig:
        """The method's config; it validates interval, schedule and bits (the only place that does).
        Preset 'ours' takes `calib_samples` for calibration and DPS; 'official' its own sizes."""
        cache_dec, quant_dec = CORRECTIONS[self.corrections]
        sizes = {"calib_samples": calib_samples, "dps_samples": calib_samples} if preset == "ours" else {}
        return preset_config(
            preset,
            interval=self.interval,
            schedule=self.schedule,
            bits=self.bits,
            cache_dec=cache_dec,
            quant_dec=quant_dec,
            quantizer=self.quantizer,
            cache_point=self.cache_point,
            **sizes,
        )


FP_POINT = ShardPoint()


@dataclass(frozen=True)
class ShardConfig(ConfigDict):
    """model: 'auto' (zoo ddpm-digits, untrained if its weights are missing), 'untrained',
    'ddpm-scenes' (the zoo's 4-level 32x32 colour bed), or a local diffusers folder;
    steps/samples/calib_samples: DDIM steps, evaluated and calibration samples."""

    model: str = "auto"
    device: str = "cpu"
    steps: int = 20
    samples: int = 64
    calib_samples: int = 8
    noise_seed: int = 1234
    # 0: the calibration noise follows the evaluation noise on noise_seed's generator (every row before
    # the field existed); k > 0: an independent calibration draw, generator seed (noise_seed, k)
    calib_seed: int = 0
    quality: str = "auto"
    preset: str = "ours"  # methods.cachequant.PRESETS: 'ours' or 'official' (the DDPM-CIFAR code path)
    version: int = 1

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"task.preset must be one of {list(PRESETS)}, got {self.preset!r}. "
                              f"{did_you_mean(str(self.preset), PRESETS)}")
        if isinstance(self.calib_seed, bool) or not isinstance(self.calib_seed, int) or self.calib_seed < 0:
            raise ConfigError(f"task.calib_seed must be an integer >= 0 (0 = the default calibration draw); "
                              f"got {self.calib_seed!r}.")
        if self.steps < 2 or self.samples < 2 or self.calib_samples < 1:
            raise ConfigError(
                f"need steps >= 2, samples >= 2, calib_samples >= 1; got {self.steps}, "
                f"{self.samples}, {self.calib_samples}."
            )
        if self.quality not in QUALITY:
            raise ConfigError(
                f"task.quality must be one of {list(QUALITY)}, got {self.quality!r}: 'digit_fd' needs the "
                f"zoo's 1x16x16 digits model, 'scene_fd' its 3x32x32 ddpm-scenes, 'mse' (against FP "
                f"samples from the same noise) works for any."
            )

    def quality_objective(self) -> str:
        """The objective the grid minimises: digit-FD for the zoo model, MSE vs FP for any other."""
        if self.quality != "auto":
            return self.quality
        if self.model == SCENES_MODEL:
            return "scene_fd"
        return "digit_fd" if self.model in ("auto", "untrained") else "mse"


def load_pipeline(cfg: ShardConfig) -> tuple[torch.nn.Module, Any, str]:
    from sims.zoo import ddpm_digits as dd

    if cfg.model in ("auto", "untrained"):
        from sims.zoo.registry import weights_path

        if cfg.model == "auto" and weights_path(dd.NAME).is_file():
            unet, sched = dd.load("ddim")
            return unet, sched, dd.NAME
        torch.manual_seed(0)
        return dd.build().eval(), dd.build_scheduler("ddim", dd.scheduler_config()), f"{dd.NAME} (untrained)"
    if cfg.model == SCENES_MODEL:
        from sims.zoo import ddpm_scenes as ds

        unet, sched = ds.load("ddim")  # a missing weights file is a CheckpointError saying what to run
        return unet, sched, ds.NAME
    from sims.zoo.checkpoints import load_diffusers_unet

    ck = load_diffusers_unet(cfg.model, scheduler_kind="ddim")
    return ck.unet, ck.scheduler, str(cfg.model)


def fd_feature_net(scenes: bool) -> tuple[str, Any, Any]:
    """The zoo's FD feature network for a bed: (quality name, features of [0, 1] images, split loader
    `split("test" | "train")` -> images). scenes-classifier for ddpm-scenes, digits-classifier else."""
    from sims.zoo.registry import load_zoo_model

    if scenes:
        from sims.data.scenes import load_scenes_split
        from sims.zoo import scenes_classifier as sc

        net = load_zoo_model(sc.NAME)
        return ("scene_fd", lambda imgs: sc.scene_features(net, imgs),
                lambda split: load_scenes_split(split)[0])
    from sims.data.digits import load_digits_split
    from sims.zoo import digits_classifier as dc

    net = load_zoo_model(dc.NAME)
    return ("digit_fd", lambda imgs: dc.digit_features(net, imgs),
            lambda split: load_digits_split(split, 16)[0])


@register_task("model_shard")
class ModelShardTask:
    def __init__(self, cfg: ShardConfig) -> None:
        self.cfg, self.device = cfg, torch.device(cfg.device)
        unet, self.scheduler, self.model_name = load_pipeline(cfg)
        self.unet = unet.to(self.device).eval()
        size = unet.config.sample_size
        size = tuple(size) if isinstance(size, list | tuple) else (size, size)
        shape = (unet.config.in_channels, *size)
        gen = torch.Generator().manual_seed(cfg.noise_seed)
        self.noise = torch.randn((cfg.samples, *shape), generator=gen).to(self.device)
        self._gen_after_noise = gen.get_state()
        self.calib_noise = self._calibration_noise(cfg, shape, gen)
        self.cond = self._cond(cfg.samples)
        # digit-FD only where the zoo's digit classifier is a feature network for these samples
        zoo_or_asked = cfg.model in ("auto", "untrained") or cfg.quality == "digit_fd"
        self.digits = shape == (1, 16, 16) and zoo_or_asked
        if cfg.quality_objective() == "digit_fd" and not self.digits:
            raise ConfigError(
                f"digit-FD needs 1x16x16 samples (the zoo's ddpm-digits); model {self.model_name} makes "
                f"{shape}. Use task.quality='mse'."
            )
        self.scenes = shape == (3, 32, 32) and (cfg.model == SCENES_MODEL or cfg.quality == "scene_fd")
        if cfg.quality_objective() == "scene_fd" and not self.scenes:
            raise ConfigError(
                f"scene-FD needs 3x32x32 samples (the zoo's ddpm-scenes); model {self.model_name} makes "
                f"{shape}. Use task.quality='mse' or task.model='ddpm-scenes'."
            )
        self.memo: dict = {}
        fp = self._prepare(FP_POINT)
        fp.sample(self.noise[:2], self._cond(2))  # warm-up, so the timed FP loop is not the first call
        self.fp, (self.fp_samples, self.fp_seconds) = fp, self._sample(fp)
        self.fp_macs = step_macs(fp.dc, self.noise, 500, self._cond(1))["full"]
        self.fp_bops = step_bops(fp.dc, self.noise, 500, self._cond(1))["full"]

    def _calibration_noise(self, cfg: ShardConfig, shape: tuple, gen: torch.Generator) -> torch.Tensor:
        n_calib = max(cfg.calib_samples, FP_POINT.method_config(cfg.calib_samples, cfg.preset).noise_needed)
        if cfg.calib_seed:
            gen = torch.Generator().manual_seed(cfg.noise_seed * 1_000_003 + cfg.calib_seed)
        return torch.randn((n_calib, *shape), generator=gen).to(self.device)

    def with_calibration(self, calib_seed: int) -> "ModelShardTask":
        """The same task (model, evaluation noise, FP samples, timings) with another calibration draw:
        a calibration seed is a unit of a CI without re-sampling FP. Nothing calibrated is shared
        (a fresh memo); the copy's cfg records the seed."""
        if calib_seed == self.cfg.calib_seed:
            return self
        other = copy.copy(self)
        other.cfg = replace(self.cfg, calib_seed=calib_seed)
        gen = torch.Generator()
        gen.set_state(self._gen_after_noise)  # where __init__'s draw of calib_seed 0 starts
        other.calib_noise = other._calibration_noise(other.cfg, tuple(self.noise.shape[1:]), gen)
        other.memo = {}
        return other

    def _cond(self, n: int) -> dict:
        if type(self.unet).__name__ != "UNet2DConditionModel":
            return {}
        dim = self.unet.config.cross_attention_dim
        return {"encoder_hidden_states": torch.zeros(n, 77, dim, device=self.device)}

    def _prepare(self, point: ShardPoint):
        cfg = point.method_config(self.cfg.calib_samples, self.cfg.preset)
        return prepare_cachequant(
            self.unet,
            self.scheduler,
            self.cfg.steps,
            cfg,
            self.calib_noise,
            self._cond(len(self.calib_noise)),
            self.memo,
        )

    def _sample(self, sampler) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        x = sampler.sample(self.noise, self.cond)
        return x, time.perf_counter() - t0

    def _timed(self, sampler, n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        sampler.sample(self.noise[:n], self._cond(n))
        return time.perf_counter() - t0, time.process_time() - c0

    def speedups(self, sampler, n: int = 16) -> dict[str, float]:
        """Wall-clock and CPU-time speed-up over FP, timed back to back on the same `n` samples (FP
        before and after; the faster FP run counts) so that load from other processes cancels out."""
        n = min(n, self.cfg.samples)
        runs = [self._timed(self.fp, n), self._timed(sampler, n), self._timed(self.fp, n)]
        fp_wall, fp_cpu = min(runs[0][0], runs[2][0]), min(runs[0][1], runs[2][1])
        return {"wall_speedup": fp_wall / runs[1][0], "cpu_time_speedup": fp_cpu / max(runs[1][1], 1e-9)}

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int) -> dict:
        point = ShardPoint.from_dict(params)
        cpu0 = time.process_time()  # CPU seconds: what the trial costs on an idle core
        sampler = self._prepare(point)
        x, seconds = self._sample(sampler)
        steps, refresh = self.cfg.steps, sampler.refresh
        macs = loop_macs(step_macs(sampler.dc, self.noise, 500, self._cond(1)), steps, refresh)
        bops = step_bops(sampler.dc, self.noise, 500, self._cond(1))
        full_b, shallow_b = bops["full"], bops["shallow"]
        loop_bops = len(refresh) * full_b + (steps - len(refresh)) * shallow_b
        mse = float((x - self.fp_samples).pow(2).mean())
        self.last_samples = x  # the bench's paired FD statistics read the samples behind the row
        method = point.method_config(self.cfg.calib_samples, self.cfg.preset)
        metrics = {
            "cache_dec": method.cache_dec,
            "quant_dec": method.quant_dec,
            "cpu_seconds": time.process_time() - cpu0,
            "model": self.model_name,
            "refresh": ",".join(map(str, refresh)),
            "n_refresh": len(refresh),
            "bop_speedup": steps * self.fp_bops / loop_bops,
            "loop_macs": macs["loop_macs"],
            "wall_seconds": seconds,
            **self.speedups(sampler),
            **{k: v for k, v in sampler.report.items() if isinstance(v, float | int)},
        }
        objectives = {"mac_speedup": macs["mac_speedup"], "mse": mse}
        if self.digits or self.scenes:
            name = "digit_fd" if self.digits else "scene_fd"
            est = self._fd(x)
            objectives[name] = est.value
            metrics.update({f"{name}_lo": est.lo, f"{name}_hi": est.hi})  # 95 % jackknife over samples
        return {"objectives": objectives, "metrics": metrics}

    def _fd(self, x: torch.Tensor):
        """Digit-FD (1x16x16 zoo digits) or scene-FD (3x32x32 zoo scenes) of samples against the real
        test split, with a 95 % delete-a-group jackknife CI over the samples (`fd_ci`)."""
        from methods.metrics.frechet import fd_ci, gaussian_stats

        if not hasattr(self, "_fd_net"):
            _, features, split = fd_feature_net(self.scenes)
            self._fd_net = (features, gaussian_stats(features(split("test"))))
        features, real_stats = self._fd_net
        feats = features(((x.cpu() + 1) / 2).clamp(0, 1))
        return fd_ci(feats, real_stats, groups=min(16, len(feats) // 2))
