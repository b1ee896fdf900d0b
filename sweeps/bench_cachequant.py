"""Benchmark: DeepCache x PTQ on ddpm-digits — speed-ups per cache interval, quality of FP / cache-only /
quant-only / naive combination / CacheQuant, and the paper's non-orthogonality claim. Pure (no Ray).

    python sweeps/bench_cachequant.py                 # ddpm-digits (untrained if no weights), 20 DDIM steps
    python sweeps/bench_cachequant.py --steps 50 --samples 128 --interval 5
    python sweeps/bench_cachequant.py --set speed_only=true --set 'intervals=[1,2,5]'
    python sweeps/bench_cachequant.py --set model=/path/to/diffusers/pipeline --dry-run

CacheQuant (Liu et al., arXiv 2503.01323) reports, on Stable Diffusion, 5.18x speed-up with 4x
compression (W8A8) at CLIP score -0.02; that speed-up is wall-clock with INT8 GPU kernels. Here the
speed-ups are per-sample MACs of the sampling loop (caching only), BOPs (caching x bit widths,
MACs x w_bits x a_bits, FP = 32 x 32) and CPU wall-clock (fake quantization makes quantized models
*slower* on a CPU, so only the FP cache rows' wall-clock speed-up means anything). Quality: MSE of
the final samples against FP samples from the same noise, and digit-FD against the real test digits.
"Matched quality" = digit-FD no worse than FP + `fd_tol` (default 5 % of FP's digit-FD).

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `CacheQuantBenchConfig` (`--set fd_tol=0.1`,
`--set speed_only=true`). Writes run.json, speed.csv/.md, quality.csv/.md, corrections.csv/.md,
non_orthogonality.csv/.md and quality_vs_speed.png into results/bench_cachequant/<run_id>/; the
last line is `summary: key=value ...`. One seed: every configuration samples the same fixed noise
(ShardConfig.noise_seed) once, so the table's comparisons (`naive_worse_*`, `cachequant_beats_*`)
are single measurements without a confidence interval, and no claim is marked supported.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from actors.model_shard import ModelShardTask, ShardConfig, ShardPoint
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.cachequant import CacheQuantSampler, StepClock
from methods.deepcache import DeepCacheUNet, step_bops
from methods.errors import ConfigError
from methods.plotting import new_figure, save_figure
from methods.qdiffusion import QDiffusionConfig, qdiffusion_quantize
from methods.quant.bits import parse_bits

PAPER_SPEEDUP = 5.18


@dataclass(frozen=True)
class CacheQuantBenchConfig:
    model: str = "auto"  # 'auto' (zoo ddpm-digits), 'untrained' or a local diffusers folder
    steps: int = 20  # DDIM steps
    samples: int = 64
    calib: int = 4  # calibration / DPS trajectories
    interval: int = 5  # cache interval of the quality table
    intervals: tuple[int, ...] = (1, 2, 3, 5, 10)  # cache intervals of the speed table
    speed_only: bool = False  # only the per-interval table (intervals from 1)
    fd_tol: float = 0.05  # matched quality: digit-FD <= FP * (1 + fd_tol)
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
        if self.fd_tol < 0:
            raise ConfigError(f"fd_tol must be >= 0 (a fraction of FP's digit-FD); received {self.fd_tol}.")


_ROWS: dict[ShardPoint, dict] = {}


def row(task: ModelShardTask, label: str, point: ShardPoint) -> dict:
    """One configuration's metrics (memoised by point: the speed and quality tables share rows)."""
    if point in _ROWS:
        return {**_ROWS[point], "config": label}
    t0 = time.perf_counter()
    res = task.evaluate(point.to_dict(), seed=0, trial=0, chunk=0, n_chunks=1)
    m = res["metrics"]
    _ROWS[point] = {
        "config": label,
        "point": point,
        "mac_x": res["objectives"]["mac_speedup"],
        "bop_x": m["bop_speedup"],
        "wall_x": m["wall_speedup"],
        "cpu_x": m["cpu_time_speedup"],
        "mse": res["objectives"]["mse"],
        "digit_fd": res["objectives"].get("digit_fd", float("nan")),
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
    return _ROWS[point]


def qdiffusion_row(task: ModelShardTask, bits: str) -> dict:
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
    return {
        "config": f"quant-only Q-Diffusion {bits}",
        "point": ShardPoint(1, "qdiff", bits, "none"),  # a key only: Q-Diffusion is not a shard point
        "mac_x": 1.0,
        "bop_x": task.fp_bops / full_b,
        **dict(zip(("wall_x", "cpu_x"), task.speedups(sampler).values(), strict=True)),
        "mse": float((x - task.fp_samples).pow(2).mean()),
        "digit_fd": task._digit_fd(x) if task.digits else float("nan"),
        "refresh": "all",
        "seconds": time.perf_counter() - t0,
    }


def _cols(rows: list[dict], cols: tuple[str, ...]) -> list[dict]:
    return [{c: r.get(c, "") for c in cols} for r in rows]


def _g(v: Any) -> Any:
    """Summary values as the bench always printed them: floats with 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else v


def body(run: BenchRun) -> dict[str, Any]:
    cfg: CacheQuantBenchConfig = run.config
    _ROWS.clear()  # memoised rows belong to one task
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = ModelShardTask(
        ShardConfig(model=cfg.model, steps=cfg.steps, samples=cfg.samples, calib_samples=cfg.calib)
    )
    print(
        f"model: {task.model_name}  steps={cfg.steps}  samples={cfg.samples}  calib={cfg.calib}  "
        f"FP loop {task.fp_seconds:.2f}s  FP MACs/sample/step {task.fp_macs / 1e6:.1f}M",
        flush=True,
    )

    speed = [
        row(task, f"cache-only uniform N={n}", ShardPoint(n, "uniform", "fp", "none"))
        for n in cfg.intervals
    ]
    run.table("speed", _cols(speed, ("config", "mac_x", "wall_x", "cpu_x", "mse", "digit_fd", "refresh")),
              "speed per cache interval (FP model, uniform schedule)")
    model = task.model_name.replace(" ", "_")
    if cfg.speed_only:
        _plot(speed, run.path("quality_vs_speed.png"))
        fp_fd = speed[0]["digit_fd"]
        ok = [r for r in speed if r["digit_fd"] <= fp_fd * (1 + cfg.fd_tol)]
        best = max(ok, key=lambda r: r["mac_x"])
        print(
            f"matched quality (digit-FD <= {1 + cfg.fd_tol:.2f} x FP {fp_fd:.4g}): best MAC speed-up "
            f"{best['mac_x']:.3g}x ({best['config']}); paper {PAPER_SPEEDUP}x"
        )
        return {"matched_mac_speedup": _g(best["mac_x"]), "fp_digit_fd": _g(fp_fd),
                "seconds": f"{time.perf_counter() - start:.1f}", "model": model}

    n = cfg.interval
    rows = [
        row(task, "FP", ShardPoint(1, "uniform", "fp", "none")),
        row(task, f"cache-only uniform N={n}", ShardPoint(n, "uniform", "fp", "none")),
        row(task, f"cache-only DPS N={n}", ShardPoint(n, "dps", "fp", "none")),
        row(task, f"cache-only DPS+cacheDEC N={n}", ShardPoint(n, "dps", "fp", "cache")),
    ]
    for bits in ("w8a8", "w4a8"):
        rows += [
            row(task, f"quant-only per-timestep {bits}", ShardPoint(1, "uniform", bits, "none")),
            qdiffusion_row(task, bits),
            row(task, f"naive uniform N={n} + {bits}", ShardPoint(n, "uniform", bits, "none")),
            row(task, f"naive DPS N={n} + {bits}", ShardPoint(n, "dps", bits, "none")),
            row(task, f"CacheQuant DPS+DEC N={n} {bits}", ShardPoint(n, "dps", bits, "both")),
            row(task, f"CacheQuant qDPS+DEC N={n} {bits}", ShardPoint(n, "qdps", bits, "both")),
        ]
        if run.progress:
            print(f"... {bits} done ({time.perf_counter() - start:.0f}s)", flush=True)
    run.table("quality", _cols(rows, ("config", "mac_x", "bop_x", "mse", "digit_fd", "refresh", "seconds")),
              "quality (MSE vs FP samples, digit-FD vs real test digits)")
    nan = float("nan")
    dec = ("cache_dec_mse_before", "cache_dec_mse_after", "quant_dec_mse_before", "quant_dec_mse_after")
    run.table("corrections", [
        {"config": r["config"], **{k.replace("_mse", ""): r.get(k, nan) for k in dec}}
        for r in rows if "cache_dec_mse_before" in r or "quant_dec_mse_before" in r
    ], "corrections (mean per-step MSE before -> after, calibration trajectories)")
    _plot(speed + rows, run.path("quality_vs_speed.png"))
    summary = verdicts(run, rows, speed, n, cfg.fd_tol)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["model"] = model
    return {k: _g(v) for k, v in summary.items()}


FAMILIES = ("FP", "cache-only", "quant-only", "naive", "CacheQuant")


def _plot(rows: list[dict], path: Path) -> None:
    """MSE vs FP and digit-FD against MAC speed-up, one point per configuration, coloured by family."""
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("mse", "digit_fd"), strict=True):
        for fam, marker in zip(FAMILIES, "osD^*", strict=True):
            sel = [r for r in rows if r["config"].split(" ")[0] == fam]
            if sel:
                ax.scatter([r["mac_x"] for r in sel], [r[metric] for r in sel], marker=marker, label=fam,
                           alpha=0.75)
        ax.set_xlabel("MAC speed-up (x)")
        ax.set_ylabel(metric + (" vs FP samples" if metric == "mse" else " vs real test digits"))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def verdicts(run: BenchRun, rows: list[dict], speed: list[dict], n: int, fd_tol: float) -> dict:
    by = {r["point"]: r for r in rows}
    out: dict = {}
    table = []
    for bits in ("w8a8", "w4a8"):
        cache, quant, naive = (
            by[ShardPoint(n, "uniform", "fp", "none")],
            by[ShardPoint(1, "uniform", bits, "none")],
            by[ShardPoint(n, "uniform", bits, "none")],
        )
        cq, qd = by[ShardPoint(n, "dps", bits, "both")], by[ShardPoint(n, "qdps", bits, "both")]
        for metric in ("mse", "digit_fd"):
            worse = naive[metric] > max(cache[metric], quant[metric])
            table.append({"bits": bits, "metric": metric, "cache_only": cache[metric],
                          "quant_only": quant[metric], "naive": naive[metric], "naive_worse_than_both": worse,
                          "cachequant": cq[metric], "cachequant_qdps": qd[metric],
                          "ci": "none (one seed)"})
            out[f"naive_worse_{bits}_{metric}"] = int(worse)
        out[f"cachequant_beats_naive_{bits}_mse"] = int(cq["mse"] < naive["mse"])
        same = qd["refresh"] == cq["refresh"]
        print(
            f"{bits} quantization-aware DPS: schedule {qd['refresh']} vs DPS {cq['refresh']}"
            f"{' (identical)' if same else ''}; MSE {qd['mse']:.4g} vs {cq['mse']:.4g}"
        )
        out[f"qdps_minus_dps_{bits}_mse"] = qd["mse"] - cq["mse"]
        out[f"qdps_same_schedule_{bits}"] = int(same)
    run.table("non_orthogonality", table, "non-orthogonality: is the naive combination worse than either "
              "alone? (one seed: single measurements, no CI, no verdict)")
    fp_fd = by[ShardPoint(1, "uniform", "fp", "none")]["digit_fd"]
    ok = [r for r in speed + rows if r["digit_fd"] <= fp_fd * (1 + fd_tol)]
    best_mac = max(ok, key=lambda r: r["mac_x"], default=None)
    best_bop = max(ok, key=lambda r: r["bop_x"], default=None)
    print(
        f"\n== matched quality (digit-FD <= {1 + fd_tol:.2f} x FP {fp_fd:.4g}) "
        f"vs the paper's {PAPER_SPEEDUP}x =="
    )
    if best_mac is not None:
        print(
            f"best MAC speed-up {best_mac['mac_x']:.3g}x ({best_mac['config']}); best BOP speed-up "
            f"{best_bop['bop_x']:.3g}x ({best_bop['config']})"
        )
        out.update(matched_mac_speedup=best_mac["mac_x"], matched_bop_speedup=best_bop["bop_x"])
    n_max = max(speed, key=lambda r: r["mac_x"])
    out.update(
        max_mac_speedup=n_max["mac_x"],
        fp_digit_fd=fp_fd,
        cachequant_w8a8_mac_speedup=by[ShardPoint(n, "dps", "w8a8", "both")]["mac_x"],
        cachequant_w8a8_mse=by[ShardPoint(n, "dps", "w8a8", "both")]["mse"],
        naive_w8a8_mse=by[ShardPoint(n, "uniform", "w8a8", "none")]["mse"],
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
