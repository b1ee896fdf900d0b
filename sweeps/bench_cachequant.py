"""Benchmark: DeepCache x PTQ on ddpm-digits or ddpm-scenes — speed-ups per cache interval and cache point,
FD with CIs of FP / cache-only / quant-only / naive combination / CacheQuant, the paper's claims. No Ray.

    python sweeps/bench_cachequant.py                 # ddpm-digits, 20 DDIM steps, 1,000 samples
    python sweeps/bench_cachequant.py --set model=ddpm-scenes --set 'intervals=[1,3]' --interval 3 \
        --set 'bits=["w8a8"]' --set 'cache_points=["up.3.res.1"]'   # the 4-level 32x32 colour bed
    python sweeps/bench_cachequant.py --steps 50 --samples 128 --interval 5
    python sweeps/bench_cachequant.py --set speed_only=true --set 'intervals=[1,2,5]'
    python sweeps/bench_cachequant.py --set model=/path/to/diffusers/pipeline --dry-run

CacheQuant (Liu et al., arXiv 2503.01323) reports, on Stable Diffusion, 5.18x speed-up with 4x
compression (W8A8) at CLIP score -0.02; that speed-up is wall-clock with INT8 GPU kernels. Here the
speed-ups are per-sample MACs of the sampling loop (caching only), BOPs (caching x bit widths,
MACs x w_bits x a_bits, FP = 32 x 32) and CPU wall-clock (fake quantization makes quantized models
*slower* on a CPU, so only the FP cache rows' wall-clock speed-up means anything). Quality: MSE of
the final samples against FP samples from the same noise, and FD (digit-FD, or scene-FD on
ddpm-scenes) against the real test split, each with a 95 % delete-a-group jackknife CI over the
samples (`grouped_jackknife_ci`, 20 groups). Every FD *difference* between two configurations is
paired: both sample the same noise, so the jackknife deletes the same samples from both arms
[ours]. The noise floor is measured, not assumed: FD of disjoint draws of real training images
(as many as the split allows at the bench's sample size, at least three; the draw size is printed)
against the same test split; the floor is the t upper bound of mean |FD_i - FD_j| over pairs
(`methods.metrics.stats.noise_floor`). A claim is "supported" only when its paired CI excludes 0
and the effect exceeds that floor; "matched quality" = the paired FD difference to FP has its upper
CI bound below the floor. `cache_points` adds cache-only and CacheQuant rows caching at single
ResBlocks (`methods.unet_blocks` addresses) next to DeepCache's branch 0, and the per-cache-point
MAC table (`cache_point_macs`) is written for every bed. `official` (on by default) adds FP and
CacheQuant rows under preset 'official' (`methods.cachequant.PRESETS`: the official DDPM-CIFAR
path — quadratic spacing, 128 DPS / 512 DEC trajectories, DEC on an always-refresh FP run, MSE
p = 2.4 chunked ranges, quantized attention products, the cached-half shortcut correction) on the
same evaluation noise, and the paired comparison `official_beats_ours_<bits>` (not a paper claim).
[ours] `fd_tol` (old rule, FP + 5 %) is kept only as a printed reference.

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `CacheQuantBenchConfig` (`--set fd_tol=0.1`,
`--set speed_only=true`). Writes run.json, speed.csv/.md, quality.csv/.md, corrections.csv/.md,
non_orthogonality.csv/.md and quality_vs_speed.png into results/bench_cachequant/<run_id>/; the
last line is `summary: key=value ...` (each claim's effect, its CI and verdict among them). Also
cache_points.csv/.md, claims.csv/.md. The tables' rows are one noise seed (ShardConfig.noise_seed)
and calibration draw 0: their CIs measure the sampling noise of FD only. The claims and the
matched-quality test are over `calib_seeds` calibration draws (ShardConfig.calib_seed 0..n-1, the
same evaluation noise): each configuration that calibrates (quantization, DPS, DEC) is re-run per
draw, and the CI of the mean paired difference adds the between-draw spread to the jackknife
(`paired_fd_difference_over_draws`) [ours]. The ablation table is calibration draw 0 only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from actors.model_shard import ModelShardTask, ShardConfig, ShardPoint, fd_feature_net
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.cachequant import CacheQuantSampler, StepClock, prepare_cachequant
from methods.deepcache import DeepCacheUNet, cache_point_macs, step_bops
from methods.errors import ConfigError
from methods.metrics.frechet import (
    fd_ci,
    gaussian_stats,
    paired_fd_difference,
    paired_fd_difference_over_draws,
)
from methods.metrics.stats import Verdict, claim_line, compare, noise_floor
from methods.plotting import new_figure, save_figure
from methods.qdiffusion import QDiffusionConfig, qdiffusion_quantize
from methods.quant.bits import parse_bits

PAPER_SPEEDUP = 5.18
# DeepCache alone, as its README reports (reference/quant.md §3): (model, speed-up, quality change)
DEEPCACHE_PUBLISHED = (("SD v1.5, 50 PLMS", 2.3, "CLIP -0.05"),
                       ("LDM-4-G ImageNet, 250 DDIM", 4.1, "FID +0.22"))
INT8_KINDS = ("linear", "conv1x1")  # the layers bench_int8's kernel factor was measured on


@dataclass(frozen=True)
class CacheQuantBenchConfig:
    model: str = "auto"  # 'auto' (zoo ddpm-digits), 'untrained', 'ddpm-scenes' or a diffusers folder
    steps: int = 20  # DDIM steps
    samples: int = 1000  # FD needs ~1,000 samples to resolve differences above its noise floor
    calib: int = 4  # calibration / DPS trajectories
    # calibration draws (ShardConfig.calib_seed 0..n-1) behind every claim and matched-quality test:
    # the CI then covers calibration-to-calibration variation as well as sampling (>= 3 for a claim)
    calib_seeds: int = 3
    interval: int = 5  # cache interval of the quality table
    intervals: tuple[int, ...] = (1, 2, 3, 5, 10)  # cache intervals of the speed table
    speed_only: bool = False  # only the per-interval table (intervals from 1)
    fd_tol: float = 0.05  # the old matched-quality rule (FD <= FP * (1 + fd_tol)), printed for reference
    bits: tuple[str, ...] = ("w8a8", "w4a8")
    cache_points: tuple[str, ...] = ()  # extra single-ResBlock cache points ("up.3.res.1")
    qdiffusion: bool = True  # the Q-Diffusion quant-only baseline row
    official: bool = True  # FP and CacheQuant rows under preset 'official' (methods.cachequant.PRESETS)
    ablate: bool = False  # CacheQuant (ours) with one official switch at a time (the ablation table)
    fd_groups: int = 20  # jackknife groups of every FD CI
    # a kernel factor t_fp32 / t_int8 measured by sweeps/bench_int8.py on Linear/1x1-conv GEMMs (its
    # summary's factor); 0 = do not combine. Applied by Amdahl's law to those layers' MAC share only.
    int8_kernel_factor: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"CacheQuantBenchConfig version must be 1; received {self.version}.")
        if self.interval < 1 or not self.intervals or min(self.intervals) < 1:
            raise ConfigError(f"cache intervals must be >= 1 and intervals non-empty; received interval="
                              f"{self.interval}, intervals={list(self.intervals)}. Example: --set "
                              "'intervals=[1,2,5]'.")
        if self.speed_only and self.intervals[0] != 1:
            raise ConfigError(f"speed_only compares against the first interval as FP, so intervals must "
                              f"start at 1; received {list(self.intervals)}.")
        if self.int8_kernel_factor < 0:
            raise ConfigError(f"int8_kernel_factor must be a measured factor > 0 (bench_int8's summary), "
                              f"or 0 to skip the combination; received {self.int8_kernel_factor}.")
        if self.calib_seeds < 1:
            raise ConfigError(f"calib_seeds must be >= 1 calibration draws (3 or more for a claim); received "
                              f"{self.calib_seeds}.")
        if self.fd_groups < 2:
            raise ConfigError(f"fd_groups must be >= 2 jackknife groups; received {self.fd_groups}.")
        if not self.bits:
            raise ConfigError("bits must name at least one quantized setting, e.g. --set 'bits=[\"w8a8\"]'.")
        if self.fd_tol < 0:
            raise ConfigError(f"fd_tol must be >= 0 (a fraction of FP's digit-FD); received {self.fd_tol}.")


_ROWS: dict[ShardPoint, dict] = {}
_FEATS: dict[Any, np.ndarray] = {}
_TASKS: dict[tuple[str, int], ModelShardTask] = {}  # (preset, calibration seed) -> task


class Quality:
    """The bed's FD features, real test statistics and measured noise floor (the maths is in
    methods.metrics: `fd_ci`, `paired_fd_difference`, `noise_floor`)."""

    def __init__(self, task: ModelShardTask, groups: int) -> None:
        self.groups = groups
        if not (task.scenes or task.digits):
            self.name = ""  # no feature network for this model: MSE vs FP only
            return
        self.name, self._feats, split = fd_feature_net(task.scenes)
        test, pool = split("test"), split("train")
        self.real = gaussian_stats(self._feats(test))
        # disjoint real draws at the bench's size where the pool allows three, else smaller
        self.floor_size = min(task.cfg.samples, len(pool) // 3)
        k = min(6, len(pool) // self.floor_size)
        perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
        self.real_fds = [fd_ci(self._feats(pool[perm[i * self.floor_size:(i + 1) * self.floor_size]]),
                               self.real, groups).value for i in range(k)]
        i, j = np.triu_indices(k, 1)
        self.floor = noise_floor(np.array(self.real_fds)[i] - np.array(self.real_fds)[j])

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self._feats(((x.cpu() + 1) / 2).clamp(0, 1))


def _quality_fields(quality: Quality, point: ShardPoint, x: torch.Tensor) -> dict:
    """FD with its CI, and `spread`: tr Cov of the samples' features / tr Cov of the real test
    features (below 1: samples less varied than real images; the diagnosis of a correction that lowers
    per-sample MSE but narrows the distribution)."""
    if not quality.name:
        return {"fd": float("nan"), "fd_lo": float("nan"), "fd_hi": float("nan"), "spread": float("nan")}
    _FEATS[point] = quality.features(x)
    est = fd_ci(_FEATS[point], quality.real, quality.groups)
    spread = float(np.trace(np.cov(_FEATS[point], rowvar=False)) / np.trace(quality.real[1]))
    return {"fd": est.value, "fd_lo": est.lo, "fd_hi": est.hi, "spread": spread}


def row(task: ModelShardTask, quality: Quality, label: str, point: ShardPoint) -> dict:
    """One configuration's metrics (memoised by point, and by preset when not 'ours': the speed and
    quality tables share rows)."""
    key = point if task.cfg.preset == "ours" else (task.cfg.preset, point)
    if key in _ROWS:
        return {**_ROWS[key], "config": label}
    t0 = time.perf_counter()
    res = task.evaluate(point.to_dict(), seed=0, trial=0, chunk=0, n_chunks=1)
    m = res["metrics"]
    _ROWS[key] = {
        "config": label,
        "point": key,
        "mac_x": res["objectives"]["mac_speedup"],
        "bop_x": m["bop_speedup"],
        "wall_x": m["wall_speedup"],
        "cpu_x": m["cpu_time_speedup"],
        "mse": res["objectives"]["mse"],
        **_quality_fields(quality, key, task.last_samples),
        "refresh": m["refresh"],
        "seconds": time.perf_counter() - t0,
        **{
            k: m[k]
            for k in (
                "dps_objective",
                "uniform_objective",
                "cache_dec_mse_before",
                "cache_dec_mse_after",
                "quant_dec_mse_before",
                "quant_dec_mse_after",
            )
            if k in m
        },
    }
    return _ROWS[key]


def official_rows(cfg: CacheQuantBenchConfig, quality: Quality, n: int) -> list[dict]:
    """FP and CacheQuant (DPS + both corrections) under preset 'official': its own sampler (quadratic
    spacing), sizes and switches, on the same evaluation noise as every other row (paired FDs)."""
    task = ModelShardTask(ShardConfig(model=cfg.model, steps=cfg.steps, samples=cfg.samples,
                                      calib_samples=cfg.calib, quality="mse", preset="official"))
    _TASKS[("official", 0)] = task
    rows = [row(task, quality, "FP official (quad spacing)", ShardPoint(1, "uniform", "fp", "none"))]
    rows += [row(task, quality, f"CacheQuant official N={n} {bits}", ShardPoint(n, "dps", bits, "both"))
             for bits in cfg.bits]
    return rows


#: One official-code switch at a time on top of ours (methods.cachequant.PRESETS["official"]), and
#: our variance-keeping cache DEC slope (`dec_estimator`; not an official switch) [ours].
ABLATIONS: dict[str, dict[str, Any]] = {
    "dec_estimator=moments [ours]": {"dec_estimator": "moments"},
    "dec_fit=refresh": {"dec_fit": "refresh"},
    "act mse p=2.4 chunk 32": {"act_observer": "mse", "act_p": 2.4, "act_chunk": 32},
    "attn_quant": {"attn_quant": True},
    "quant_dec_on=shortcut_half": {"quant_dec_on": "shortcut_half"},
    "official sizes (128/512/64)": {"dps_samples": 128, "dec_samples": 512, "calib_samples": 64},
    "spacing=quad": {"spacing": "quad"},
}


def ablation_rows(task: ModelShardTask, quality: Quality, cfg: CacheQuantBenchConfig, n: int) -> list[dict]:
    """CacheQuant DPS + both corrections (ours) with each official switch alone, on the same evaluation
    noise, calibration noise (the first `calib` samples are the ours rows') and FD features; each row's
    paired FD difference to ours says whether that switch alone moves quality beyond the floor."""
    bits = cfg.bits[0]
    base = ShardPoint(n, "dps", bits, "both")
    extra = torch.randn((512, *task.calib_noise.shape[1:]), generator=torch.Generator().manual_seed(99))
    calib = torch.cat([task.calib_noise, extra.to(task.calib_noise.device)])
    rows = []
    for name, switch in ABLATIONS.items():
        t0 = time.perf_counter()
        method = replace(base.method_config(cfg.calib), **switch)
        sampler = prepare_cachequant(task.unet, task.scheduler, cfg.steps, method,
                                     calib[: method.noise_needed], memo=task.memo)
        x, _ = task._sample(sampler)
        key = ("ablation", name)
        row = {"switch": name, "mse": float((x - task.fp_samples).pow(2).mean()),
               **_quality_fields(quality, key, x), "seconds": time.perf_counter() - t0}
        if quality.name and base in _FEATS:
            est, _ = _paired(quality, key, base)
            status = compare(est, quality.floor).value
            row.update(fd_minus_ours=est.value, lo=est.lo, hi=est.hi, verdict=status)
        rows.append(row)
    return rows


def qdiffusion_row(task: ModelShardTask, quality: Quality, bits: str) -> dict:
    t0 = time.perf_counter()
    w, a = parse_bits(bits).wa
    steps = task.cfg.steps
    qm = qdiffusion_quantize(
        task.unet,
        task.scheduler,
        steps,
        QDiffusionConfig(w_bits=w, a_bits=a, cali_st=min(10, steps), cali_n=task.cfg.calib_samples),
        task.calib_noise,
    )
    sampler = CacheQuantSampler(DeepCacheUNet(qm, 0), task.scheduler, steps, list(range(steps)), StepClock())
    x, secs = task._sample(sampler)
    full_b = step_bops(sampler.dc, task.noise, 500)["full"]
    point = ShardPoint(1, "qdiff", bits, "none")  # a key only: Q-Diffusion is not a shard point
    return {
        "config": f"quant-only Q-Diffusion {bits}",
        "point": point,
        "mac_x": 1.0,
        "bop_x": task.fp_bops / full_b,
        **dict(zip(("wall_x", "cpu_x"), task.speedups(sampler).values(), strict=True)),
        "mse": float((x - task.fp_samples).pow(2).mean()),
        **_quality_fields(quality, point, x),
        "refresh": "all",
        "seconds": time.perf_counter() - t0,
    }


def _cols(rows: list[dict], cols: tuple[str, ...]) -> list[dict]:
    return [{c: r.get(c, "") for c in cols} for r in rows]


def _g(v: Any) -> Any:
    """Summary values as the bench always printed them: floats with 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else v


def _at(label: str, cache_point: str) -> str:
    return f"{label} @{cache_point}" if cache_point else label


def body(run: BenchRun) -> dict[str, Any]:
    cfg: CacheQuantBenchConfig = run.config
    _ROWS.clear()  # memoised rows belong to one task
    _FEATS.clear()
    _TASKS.clear()
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = ModelShardTask(
        ShardConfig(model=cfg.model, steps=cfg.steps, samples=cfg.samples, calib_samples=cfg.calib,
                    quality="mse")
    )
    _TASKS[("ours", 0)] = task
    quality = Quality(task, cfg.fd_groups)
    print(
        f"model: {task.model_name}  steps={cfg.steps}  samples={cfg.samples}  calib={cfg.calib}  "
        f"FP loop {task.fp_seconds:.2f}s  FP MACs/sample/step {task.fp_macs / 1e6:.1f}M",
        flush=True,
    )
    if quality.name:
        fds = quality.real_fds
        print(f"noise floor ({quality.name}): {len(fds)} disjoint draws of {quality.floor_size} real "
              f"training images vs the test split: FD {min(fds):.4g}..{max(fds):.4g}; "
              f"floor (t upper bound of mean |FD_i - FD_j|) {quality.floor.hi:.4g}", flush=True)
    example = task.noise[:1]
    macs = cache_point_macs(task.unet, example, 500, task._cond(1) or None)
    run.table("cache_points", macs, "MACs of a cached step per cache point (fraction of a full step; "
              "ceiling = 1 / fraction, the speed-up if every step were cached)")

    speed = [
        row(task, quality, f"cache-only uniform N={n}", ShardPoint(n, "uniform", "fp", "none"))
        for n in cfg.intervals
    ]
    run.table("speed", _cols(speed, ("config", "mac_x", "wall_x", "cpu_x", "mse", "fd", "fd_lo", "fd_hi",
                                     "refresh")),
              "speed per cache interval (FP model, uniform schedule)")
    model = task.model_name.replace(" ", "_")
    if cfg.speed_only:
        _plot(speed, run.path("quality_vs_speed.png"), quality.name)
        fp_fd = speed[0]["fd"]
        ok = [r for r in speed if r["fd"] <= fp_fd * (1 + cfg.fd_tol)]
        best = max(ok, key=lambda r: r["mac_x"], default=speed[0])
        print(
            f"old rule (FD <= {1 + cfg.fd_tol:.2f} x FP {fp_fd:.4g}): best MAC speed-up "
            f"{best['mac_x']:.3g}x ({best['config']}); paper {PAPER_SPEEDUP}x"
        )
        return {"matched_mac_speedup": _g(best["mac_x"]), "fp_fd": _g(fp_fd),
                "seconds": f"{time.perf_counter() - start:.1f}", "model": model}

    n = cfg.interval
    rows = [
        row(task, quality, "FP", ShardPoint(1, "uniform", "fp", "none")),
        row(task, quality, f"cache-only uniform N={n}", ShardPoint(n, "uniform", "fp", "none")),
        row(task, quality, f"cache-only DPS N={n}", ShardPoint(n, "dps", "fp", "none")),
        row(task, quality, f"cache-only DPS+cacheDEC N={n}", ShardPoint(n, "dps", "fp", "cache")),
    ]
    for at in cfg.cache_points:
        rows.append(row(task, quality, _at(f"cache-only uniform N={n}", at),
                        ShardPoint(n, "uniform", "fp", "none", cache_point=at)))
    for bits in cfg.bits:
        rows.append(row(task, quality, f"quant-only per-timestep {bits}",
                        ShardPoint(1, "uniform", bits, "none")))
        if cfg.qdiffusion:
            rows.append(qdiffusion_row(task, quality, bits))
        rows += [
            row(task, quality, f"naive uniform N={n} + {bits}", ShardPoint(n, "uniform", bits, "none")),
            row(task, quality, f"naive DPS N={n} + {bits}", ShardPoint(n, "dps", bits, "none")),
            row(task, quality, f"CacheQuant DPS+DEC N={n} {bits}", ShardPoint(n, "dps", bits, "both")),
            row(task, quality, f"CacheQuant qDPS+DEC N={n} {bits}", ShardPoint(n, "qdps", bits, "both")),
        ]
        for at in cfg.cache_points:
            rows.append(row(task, quality, _at(f"CacheQuant DPS+DEC N={n} {bits}", at),
                            ShardPoint(n, "dps", bits, "both", cache_point=at)))
        if run.progress:
            print(f"... {bits} done ({time.perf_counter() - start:.0f}s)", flush=True)
    if cfg.official:
        rows += official_rows(cfg, quality, n)
    if cfg.ablate:
        run.table("ablation", ablation_rows(task, quality, cfg, n),
                  f"CacheQuant DPS+DEC N={n} {cfg.bits[0]} (ours) with one official switch at a time: "
                  f"{quality.name or 'FD'} and its paired difference to ours (95% jackknife CI, floor "
                  f"{quality.floor.hi if quality.name else float('nan'):.4g}); spacing=quad's MSE is against "
                  "the uniform-spacing FP samples")
    run.table("quality", _cols(rows, ("config", "mac_x", "bop_x", "wall_x", "mse", "fd", "fd_lo", "fd_hi",
                                      "spread", "refresh", "seconds")),
              f"quality (MSE vs FP samples; {quality.name or 'FD'} vs the real test split, 95% jackknife CI)")
    nan = float("nan")
    dec = ("cache_dec_mse_before", "cache_dec_mse_after", "quant_dec_mse_before", "quant_dec_mse_after")
    run.table("corrections", [
        {"config": r["config"], **{k.replace("_mse", ""): r.get(k, nan) for k in dec}}
        for r in rows if "cache_dec_mse_before" in r or "quant_dec_mse_before" in r
    ], "corrections (mean per-step MSE before -> after, calibration trajectories)")
    _plot(speed + rows, run.path("quality_vs_speed.png"), quality.name)
    summary = verdicts(run, quality, rows, speed, n, cfg)
    summary.update(speed_accounting(run, task, rows, cfg))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["model"] = model
    return {k: _g(v) for k, v in summary.items()}


FAMILIES = ("FP", "cache-only", "quant-only", "naive", "CacheQuant")


def _plot(rows: list[dict], path: Path, fd_name: str) -> None:
    """MSE vs FP and FD (with CI bars) against MAC speed-up, one point per configuration, by family."""
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("mse", "fd"), strict=True):
        for fam, marker in zip(FAMILIES, "osD^*", strict=True):
            sel = [r for r in rows if r["config"].split(" ")[0] == fam]
            if not sel:
                continue
            xs, ys = [r["mac_x"] for r in sel], [r[metric] for r in sel]
            if metric == "fd":
                err = [[r["fd"] - r["fd_lo"] for r in sel], [r["fd_hi"] - r["fd"] for r in sel]]
                ax.errorbar(xs, ys, yerr=err, fmt=marker, label=fam, alpha=0.75, capsize=2)
            else:
                ax.scatter(xs, ys, marker=marker, label=fam, alpha=0.75)
        ax.set_xlabel("MAC speed-up (x)")
        ax.set_ylabel("MSE vs FP samples" if metric == "mse" else f"{fd_name or 'FD'} vs real test split")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def int8_mac_share(unet: torch.nn.Module, example: torch.Tensor) -> float:
    """Share of one U-Net step's layer MACs in Linear and 1x1-conv GEMMs (those an INT8 kernel ran on
    in bench_int8; 3x3 convs and attention matmuls stay fp32) [ours]."""
    from sweeps.bench_int8 import gemm_layers

    layers = gemm_layers(unet, example, 500)
    total = sum(r["M"] * r["K"] * r["N"] for r in layers)
    return sum(r["M"] * r["K"] * r["N"] for r in layers if r["kind"] in INT8_KINDS) / total


def speed_accounting(run: BenchRun, task: ModelShardTask, rows: list[dict],
                     cfg: CacheQuantBenchConfig) -> dict:
    """(a) MAC speed-up of caching, (b) BOPs of the bit widths, (c) measured CPU wall clock, each on its
    own; combined only as mac_x / ((1 - q) + q / k) with k the *measured* INT8 kernel factor and q the
    MAC share of the layers it applies to (Amdahl's law, the full-step share used for every step
    [inferred]); next to DeepCache's published speed-ups, not against 5.18x alone."""
    q = int8_mac_share(task.unet, task.noise[:1])
    k = cfg.int8_kernel_factor
    table = []
    for r in rows:
        point = _point_of(r["point"])
        quantized = point.bits != "fp"
        combined = r["mac_x"] / ((1 - q) + q / k) if (k > 0 and quantized) else float("nan")
        table.append({"config": r["config"], "mac_x": r["mac_x"], "bop_x": r["bop_x"],
                      "cpu_wall_x": r["wall_x"], "int8_mac_share": q,
                      "kernel_factor": k or float("nan"),
                      "predicted_int8_wall_x": combined})
    run.table("speed_accounting", table, "speed-ups kept apart: (a) MACs from caching, (b) BOPs, (c) CPU "
              "wall clock, fake quantization; predicted INT8 wall = mac_x / ((1 - q) + q / k) (k measured)")
    published = "; ".join(f"{m} {x}x ({d})" for m, x, d in DEEPCACHE_PUBLISHED)
    print(f"\npublished DeepCache speed-ups (its README): {published}; CacheQuant {PAPER_SPEEDUP}x on SD "
          "(W8A8, GPU)")
    out = {"int8_mac_share": q}
    if k > 0:
        best = max((t for t in table if t["predicted_int8_wall_x"] == t["predicted_int8_wall_x"]),
                   key=lambda t: t["predicted_int8_wall_x"], default=None)
        if best is not None:
            out["predicted_int8_wall_speedup_best"] = best["predicted_int8_wall_x"]
    return out


def draw_features(quality: Quality, key: Any, seed: int) -> np.ndarray:
    """FD features of configuration `key` (a point, or (preset, point)) under calibration seed `seed`,
    on the same evaluation noise as every other arm; seed 0 is the tables' row. A configuration that
    uses no calibration has the same samples under every seed."""
    preset, point = key[0] if isinstance(key, tuple) else "ours", _point_of(key)
    if seed == 0 or not point.uses_calibration:
        return _FEATS[key]
    fkey = ("calib", seed, key)
    if fkey not in _FEATS:
        if (preset, seed) not in _TASKS:
            _TASKS[(preset, seed)] = _TASKS[(preset, 0)].with_calibration(seed)
        task = _TASKS[(preset, seed)]
        task.evaluate(point.to_dict(), seed=0, trial=0, chunk=0, n_chunks=1)
        _FEATS[fkey] = quality.features(task.last_samples)
    return _FEATS[fkey]


def _paired(quality: Quality, a: Any, b: Any, seeds: int = 1):
    """FD(a) - FD(b), paired on the evaluation noise; over `seeds` calibration draws when > 1
    (`paired_fd_difference_over_draws`: the CI adds the draw-to-draw spread). Returns (Estimate,
    per-draw differences)."""
    if seeds > 1 and (_point_of(a).uses_calibration or _point_of(b).uses_calibration):
        pairs = [(draw_features(quality, a, s), draw_features(quality, b, s)) for s in range(seeds)]
        return paired_fd_difference_over_draws(pairs, quality.real, quality.groups)
    est = paired_fd_difference(_FEATS[a], _FEATS[b], quality.real, quality.groups)
    return est, np.array([est.value])


def _point_of(key: Any) -> ShardPoint:
    """The point of a row key: a ShardPoint, or (preset, point) for preset rows."""
    return key[1] if isinstance(key, tuple) else key


def verdicts(run: BenchRun, quality: Quality, rows: list[dict], speed: list[dict], n: int,
             cfg: CacheQuantBenchConfig) -> dict:
    """The paper's claims as paired FD differences against the measured floor, and matched quality."""
    by = {r["point"]: r for r in rows}
    out: dict = {}
    fp_point = ShardPoint(1, "uniform", "fp", "none")
    cache_u, cache_d = ShardPoint(n, "uniform", "fp", "none"), ShardPoint(n, "dps", "fp", "none")
    if not quality.name:
        print("no FD feature network for this model: claims are not judged (MSE vs FP only in the tables)")
        out["fp_mse_floor"] = 0.0
        return out
    floor = quality.floor
    claims = []

    def claim(name: str, a: Any, b: Any, sign: int) -> None:
        """Claim: FD(a) - FD(b) has sign `sign` (+1: a worse, -1: a better), over the calibration draws."""
        est, draws = _paired(quality, a, b, cfg.calib_seeds)
        verdict = compare(est, floor)
        held = verdict == Verdict.SUPPORTED and est.value * sign > 0
        status = "supported" if held else ("opposite" if verdict == Verdict.SUPPORTED else verdict.value)
        claims.append({"claim": name, "a": by[a]["config"], "b": by[b]["config"], "fd_a_minus_b": est.value,
                       "lo": est.lo, "hi": est.hi, "calib_draws": len(draws),
                       "per_draw": " ".join(f"{d:.3g}" for d in draws), "noise_floor": floor.hi,
                       "verdict": status})
        print(f"{claim_line(name, est, floor)}  per draw {claims[-1]['per_draw']}  [{status}]")
        out.update({f"{name}_verdict": status.replace(" ", "_"), name: est.value, f"{name}_lo": est.lo,
                    f"{name}_hi": est.hi})

    print(f"\n== the paper's claims: paired {quality.name} differences over {cfg.calib_seeds} calibration "
          f"draw(s), noise floor {floor.hi:.4g} ({len(quality.real_fds)} real draws of "
          f"{quality.floor_size}) ==")
    if cfg.calib_seeds < 3:
        print(f"  [warning] {cfg.calib_seeds} calibration draw(s): the CIs do not cover calibration-to-"
              "calibration variation well; use calib_seeds >= 3 for a claim")
    claim("dps_beats_uniform_fp", cache_d, cache_u, -1)
    for bits in cfg.bits:
        quant, naive = ShardPoint(1, "uniform", bits, "none"), ShardPoint(n, "uniform", bits, "none")
        claim(f"naive_worse_than_cache_only_{bits}", naive, cache_u, +1)
        claim(f"naive_worse_than_quant_only_{bits}", naive, quant, +1)
        cq_point = ShardPoint(n, "dps", bits, "both")
        claim(f"dec_recovers_{bits}", cq_point, ShardPoint(n, "dps", bits, "none"), -1)
        claim(f"cachequant_beats_naive_{bits}", cq_point, naive, -1)
        qd, cq = by[ShardPoint(n, "qdps", bits, "both")], by[cq_point]
        out[f"qdps_same_schedule_{bits}"] = int(qd["refresh"] == cq["refresh"])
        if ("official", cq_point) in by:  # not paper claims: which variant is better, if either, and
            # what each costs over its *own* FP sampler (the official one samples on quad spacing)
            claim(f"official_beats_ours_{bits}", ("official", cq_point), cq_point, -1)
            claim(f"ours_costs_over_fp_{bits}", cq_point, fp_point, +1)
            claim(f"official_costs_over_its_fp_{bits}", ("official", cq_point), ("official", fp_point), +1)
    run.table("claims", claims, f"paper claims: paired FD(a) - FD(b), mean over {cfg.calib_seeds} "
              "calibration draw(s), 95% CI (jackknife over samples + between-draw t); supported only when "
              f"the CI excludes 0, |effect| > noise floor {floor.hi:.4g} and the sign is the claimed one")
    matched = []
    for r in speed + rows:
        if r["point"] == fp_point or r["point"] not in _FEATS:
            continue
        est, _ = _paired(quality, r["point"], fp_point, cfg.calib_seeds)
        if est.hi <= floor.hi:  # no worse than FP by more than the floor, at 95 %
            matched.append(r)
    best_mac = max(matched, key=lambda r: r["mac_x"], default=None)
    best_bop = max(matched, key=lambda r: r["bop_x"], default=None)
    fp_fd = by[fp_point]["fd"]
    print(f"\n== matched quality (paired FD - FP upper 95% bound <= floor {floor.hi:.4g}; FP {quality.name} "
          f"{fp_fd:.4g} [{by[fp_point]['fd_lo']:.4g}, {by[fp_point]['fd_hi']:.4g}]) vs the paper's "
          f"{PAPER_SPEEDUP}x (wall-clock, INT8 GPU kernels) ==")
    if best_mac is not None:
        print(f"best MAC speed-up {best_mac['mac_x']:.3g}x ({best_mac['config']}); best BOP speed-up "
              f"{best_bop['bop_x']:.3g}x ({best_bop['config']})")
        out.update(matched_mac_speedup=best_mac["mac_x"], matched_bop_speedup=best_bop["bop_x"])
    else:
        print("no configuration matched FP within the floor")
    cq = by[ShardPoint(n, "dps", cfg.bits[0], "both")]
    out.update(
        max_mac_speedup=max(r["mac_x"] for r in speed),
        fp_fd=fp_fd, fp_fd_lo=by[fp_point]["fd_lo"], fp_fd_hi=by[fp_point]["fd_hi"],
        noise_floor=floor.hi, floor_size=quality.floor_size,
        **{f"cachequant_{cfg.bits[0]}_mac_speedup": cq["mac_x"], f"cachequant_{cfg.bits[0]}_fd": cq["fd"],
           f"cachequant_{cfg.bits[0]}_fd_lo": cq["fd_lo"], f"cachequant_{cfg.bits[0]}_fd_hi": cq["fd_hi"]},
    )
    return out


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_cachequant",
        description=__doc__.splitlines()[0],
        config_cls=CacheQuantBenchConfig,
        body=body,
        **shorthands(Shorthand("--steps", "steps", int, "DDIM steps"),
                     Shorthand("--samples", "samples", int, "evaluated samples"),
                     Shorthand("--interval", "interval", int, "cache interval of the quality table")),
    )


if __name__ == "__main__":
    sys.exit(main())
