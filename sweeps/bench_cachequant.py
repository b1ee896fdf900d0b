"""Benchmark: DeepCache x PTQ on ddpm-digits — speed-ups per cache interval, quality of FP / cache-only /
quant-only / naive combination / CacheQuant, and the paper's non-orthogonality claim. Pure (no Ray).

    python sweeps/bench_cachequant.py                 # ddpm-digits (untrained if no weights), 20 DDIM steps
    python sweeps/bench_cachequant.py --steps 50 --samples 128 --interval 5

CacheQuant (Liu et al., arXiv 2503.01323) reports, on Stable Diffusion, 5.18x speed-up with 4x
compression (W8A8) at CLIP score -0.02; that speed-up is wall-clock with INT8 GPU kernels. Here the
speed-ups are per-sample MACs of the sampling loop (caching only), BOPs (caching x bit widths,
MACs x w_bits x a_bits, FP = 32 x 32) and CPU wall-clock (fake quantization makes quantized models
*slower* on a CPU, so only the FP cache rows' wall-clock speed-up means anything). Quality: MSE of
the final samples against FP samples from the same noise, and digit-FD against the real test digits.
"Matched quality" = digit-FD no worse than FP + `--fd-tol` (default 5 % of FP's digit-FD).
The last line is `summary: key=value ...`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from actors.model_shard import ModelShardTask, ShardConfig, ShardPoint
from methods.cachequant import CacheQuantSampler, StepClock
from methods.deepcache import DeepCacheUNet, step_bops
from methods.qdiffusion import QDiffusionConfig, qdiffusion_quantize

PAPER_SPEEDUP = 5.18


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
    w, a = (8, 8) if bits == "w8a8" else (4, 8)
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


def fmt(rows: list[dict], cols: tuple[str, ...]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="auto", help="'auto' (zoo ddpm-digits), 'untrained' or a diffusers folder"
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--calib", type=int, default=4, help="calibration / DPS trajectories")
    p.add_argument("--interval", type=int, default=5, help="cache interval of the quality table")
    p.add_argument("--intervals", default="1,2,3,5,10", help="cache intervals of the speed table")
    p.add_argument("--speed-only", action="store_true", help="only the per-interval table (intervals from 1)")
    p.add_argument("--fd-tol", type=float, default=0.05, help="matched quality: digit-FD <= FP * (1 + tol)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = ModelShardTask(
        ShardConfig(model=args.model, steps=args.steps, samples=args.samples, calib_samples=args.calib)
    )
    print(
        f"model: {task.model_name}  steps={args.steps}  samples={args.samples}  calib={args.calib}  "
        f"FP loop {task.fp_seconds:.2f}s  FP MACs/sample/step {task.fp_macs / 1e6:.1f}M",
        flush=True,
    )

    speed = [
        row(task, f"cache-only uniform N={n}", ShardPoint(n, "uniform", "fp", "none"))
        for n in map(int, args.intervals.split(","))
    ]
    print("\n== speed per cache interval (FP model, uniform schedule) ==")
    print(fmt(speed, ("config", "mac_x", "wall_x", "cpu_x", "mse", "digit_fd", "refresh")), flush=True)
    if args.speed_only:
        fp_fd = speed[0]["digit_fd"]
        ok = [r for r in speed if r["digit_fd"] <= fp_fd * (1 + args.fd_tol)]
        best = max(ok, key=lambda r: r["mac_x"])
        print(
            f"matched quality (digit-FD <= {1 + args.fd_tol:.2f} x FP {fp_fd:.4g}): best MAC speed-up "
            f"{best['mac_x']:.3g}x ({best['config']}); paper {PAPER_SPEEDUP}x"
        )
        print(
            f"summary: matched_mac_speedup={best['mac_x']:.4g} fp_digit_fd={fp_fd:.4g} "
            f"seconds={time.perf_counter() - start:.1f} model={task.model_name.replace(' ', '_')}"
        )
        return 0

    n = args.interval
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
        print(f"... {bits} done ({time.perf_counter() - start:.0f}s)", flush=True)
    print("\n== quality (MSE vs FP samples, digit-FD vs real test digits) ==")
    print(fmt(rows, ("config", "mac_x", "bop_x", "mse", "digit_fd", "refresh", "seconds")))
    print("\n== corrections (mean per-step MSE before -> after, calibration trajectories) ==")
    for r in rows:
        if "cache_dec_mse_before" in r or "quant_dec_mse_before" in r:
            print(
                f"{r['config']:<36} cache DEC {r.get('cache_dec_mse_before', float('nan')):.3g} -> "
                f"{r.get('cache_dec_mse_after', float('nan')):.3g}   quant DEC "
                f"{r.get('quant_dec_mse_before', float('nan')):.3g} -> "
                f"{r.get('quant_dec_mse_after', float('nan')):.3g}"
            )
    summary = verdicts(rows, speed, n, args.fd_tol)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["model"] = task.model_name.replace(" ", "_")
    print(
        "summary: "
        + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())
    )
    return 0


def verdicts(rows: list[dict], speed: list[dict], n: int, fd_tol: float) -> dict:
    by = {r["point"]: r for r in rows}
    out: dict = {}
    print("\n== non-orthogonality: is the naive combination worse than either alone? ==")
    for bits in ("w8a8", "w4a8"):
        cache, quant, naive = (
            by[ShardPoint(n, "uniform", "fp", "none")],
            by[ShardPoint(1, "uniform", bits, "none")],
            by[ShardPoint(n, "uniform", bits, "none")],
        )
        cq, qd = by[ShardPoint(n, "dps", bits, "both")], by[ShardPoint(n, "qdps", bits, "both")]
        for metric in ("mse", "digit_fd"):
            worse = naive[metric] > max(cache[metric], quant[metric])
            print(
                f"{bits} {metric}: cache-only {cache[metric]:.4g}, quant-only {quant[metric]:.4g}, naive "
                f"{naive[metric]:.4g} -> naive worse than both: {worse}; CacheQuant {cq[metric]:.4g} "
                f"(qDPS {qd[metric]:.4g})"
            )
            out[f"naive_worse_{bits}_{metric}"] = int(worse)
        out[f"cachequant_beats_naive_{bits}_mse"] = int(cq["mse"] < naive["mse"])
        same = qd["refresh"] == cq["refresh"]
        print(
            f"{bits} quantization-aware DPS: schedule {qd['refresh']} vs DPS {cq['refresh']}"
            f"{' (identical)' if same else ''}; MSE {qd['mse']:.4g} vs {cq['mse']:.4g}"
        )
        out[f"qdps_minus_dps_{bits}_mse"] = qd["mse"] - cq["mse"]
        out[f"qdps_same_schedule_{bits}"] = int(same)
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


if __name__ == "__main__":
    sys.exit(main())
