"""Benchmark: multi-galvanometer light-section scanner calibration and accuracy (no Ray).

For each seed: the as-built rig (design + manufacturing deviations) is calibrated in three
tiers (camera, laser, joint) from the design values; reconstruction error is measured on fresh
points over the volume, next to the static-camera baseline (focal f/5, same volume). Then the
calibrated RMSE as a function of stripe noise and laser baseline (seed 0 only: one measurement per
cell, no interval).

    python -m sweeps.bench_galvo3d --seeds 3
    python -m sweeps.bench_galvo3d --seeds 2 --set sensitivity=false   # per-seed table only
    python -m sweeps.bench_galvo3d --dry-run                           # print the config

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `Galvo3DBenchConfig`. Writes run.json,
seeds.csv/.md, sensitivity.csv/.md, claims.csv/.md and galvo3d.png into
results/bench_galvo3d/<run_id>/. The last line is `summary:`; with ≥ 2 seeds it carries, as value
and 95% t-interval over seeds with a verdict (`supported` only when the CI excludes 0), the paired
effects `calib_gain_mm` (design − calibrated RMSE), `static_gain_mm` (static − galvo RMSE),
`joint_gain_mm` (staged − joint RMSE) and `floor_gap_mm` (calibrated − true-parameter RMSE).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

if __package__ in (None, ""):  # `python sweeps/bench_galvo3d.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands  # noqa: E402
from methods.errors import ConfigError  # noqa: E402
from methods.metrics.stats import paired_difference  # noqa: E402
from methods.plotting import new_figure, save_figure  # noqa: E402
from sims.rigs.scanner_rig import CalibConfig, ScannerRigConfig, evaluate_scanner  # noqa: E402

SENS_NOISE_PX = (0.05, 0.1, 0.2)
SENS_BASELINE_MM = (300.0, 600.0)


@dataclass(frozen=True)
class Galvo3DBenchConfig:
    seeds: int = 3  # seeds 0..seeds-1, one as-built rig each
    sensitivity: bool = True  # the stripe-noise x laser-baseline table (seed 0)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"Galvo3DBenchConfig version must be 1; received {self.version}.")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1 (one as-built rig per seed); received {self.seeds}. "
                              "Use --seeds 3 for the documented run.")


def body(run: BenchRun) -> dict[str, Any]:
    cfg: Galvo3DBenchConfig = run.config
    rig, calib = ScannerRigConfig(), CalibConfig()
    print(f"scanner: f {rig.f_px:g} px, {rig.sensor_px}² px, laser baseline {rig.laser_baseline_mm:g} mm, "
          f"stripe noise {rig.stripe_noise_px} px, drive noise {rig.drive_noise_v:g} V; calibration "
          f"{calib.n_camera_points}/{calib.n_laser_points}/{calib.n_joint_points} points "
          f"(camera/laser/joint), {calib.n_test_points} test points", flush=True)
    t0 = time.perf_counter()
    rows = []
    for s in range(cfg.seeds):
        rows.append(evaluate_scanner(rig, calib, s))
        if run.progress:
            print(f"  seed {s}: joint RMSE {rows[-1]['rmse_mm']:.3f} mm", flush=True)
    run.table("seeds", [_seed_row(r) for r in rows],
              "RMSE in mm per seed (floor: true parameters, same noise)")

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], dtype=float)

    def avg(key: str) -> float:
        return float(col(key).mean())

    sens = []
    if cfg.sensitivity:
        quick = replace(calib, static_baseline=False)
        for noise in SENS_NOISE_PX:
            for base in SENS_BASELINE_MM:
                r = evaluate_scanner(replace(rig, stripe_noise_px=noise, laser_baseline_mm=base), quick, 0)
                sens.append({"noise_px": noise, "baseline_mm": base,
                             "rmse_floor_mm": r["rmse_true_params_mm"], "rmse_mm": r["rmse_mm"]})
        run.table("sensitivity", sens, "calibrated RMSE (mm) vs stripe noise and laser baseline "
                  "(seed 0, galvo rig)")
    _plot(rows, sens, run.path("galvo3d.png"))
    at_600 = [s["rmse_mm"] for s in sens if s["noise_px"] == 0.1 and s["baseline_mm"] == 600.0]
    summary: dict[str, Any] = {
        "seeds": cfg.seeds,
        "rmse_mm": f"{avg('rmse_mm'):.3f}",
        "max_err_mm": f"{avg('max_err_mm'):.2f}",
        "rmse_floor_mm": f"{avg('rmse_true_params_mm'):.3f}",
        "rmse_design_mm": f"{avg('rmse_design_mm'):.1f}",
        "static_rmse_mm": f"{avg('static_rmse_mm'):.3f}",
        "static_ratio": f"{avg('static_rmse_ratio'):.2f}",
        "joint_wall_s": f"{avg('joint_wall_s'):.2f}",
        "span_mm": f"{avg('span_x_mm'):.0f}x{avg('span_y_mm'):.0f}x{avg('span_z_mm'):.0f}",
        "rmse_600mm_baseline": f"{at_600[0] if at_600 else float('nan'):.3f}",
    }
    if cfg.seeds >= 2:  # paired over seeds: both numbers of a pair come from the same as-built rig
        claims = (  # name, minuend, subtrahend, what a positive value says
            ("calib_gain_mm", "rmse_design_mm", "rmse_mm", "calibration beats the design values"),
            ("static_gain_mm", "static_rmse_mm", "rmse_mm", "galvo rig beats the static camera"),
            ("joint_gain_mm", "rmse_staged_mm", "rmse_mm", "joint tier beats staged calibration"),
            ("floor_gap_mm", "rmse_mm", "rmse_true_params_mm", "calibrated RMSE is above the floor"),
        )
        for name, a, b, what in claims:
            summary.update(run.claim(name, paired_difference(col(a), col(b)), what=what))
    else:
        print("one seed: no intervals, no claims (run --seeds 2 or more)")
    summary["wall_s"] = f"{time.perf_counter() - t0:.1f}"
    return summary


def _seed_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"seed": r["seed"], "design": r["rmse_design_mm"], "floor": r["rmse_true_params_mm"],
            "staged": r["rmse_staged_mm"], "joint": r["rmse_mm"], "max": r["max_err_mm"],
            "joint_s": r["joint_wall_s"], "static": r["static_rmse_mm"], "static_max": r["static_max_err_mm"],
            "ratio": r["static_rmse_ratio"],
            "span_mm": f"{r['span_x_mm']:.0f}x{r['span_y_mm']:.0f}x{r['span_z_mm']:.0f}"}


def _plot(rows: list[dict[str, Any]], sens: list[dict[str, Any]], path: Path) -> None:
    fig, axes = new_figure(1, 2 if sens else 1, figsize=(11 if sens else 6, 4), squeeze=False)
    ax = axes[0][0]
    seeds = [r["seed"] for r in rows]
    width = 0.2
    for i, (key, label) in enumerate((("rmse_true_params_mm", "floor (true parameters)"),
                                      ("rmse_staged_mm", "staged"), ("rmse_mm", "joint"),
                                      ("static_rmse_mm", "static camera"))):
        ax.bar(np.arange(len(seeds)) + (i - 1.5) * width, [r[key] for r in rows], width, label=label)
    ax.set_xticks(np.arange(len(seeds)), [str(s) for s in seeds])
    ax.set_xlabel("seed (as-built rig)")
    ax.set_ylabel("RMSE (mm)")
    ax.legend(fontsize=7)
    if sens:
        ax = axes[0][1]
        for base in SENS_BASELINE_MM:
            sel = [s for s in sens if s["baseline_mm"] == base]
            noise = [s["noise_px"] for s in sel]
            ax.plot(noise, [s["rmse_mm"] for s in sel], "o-", label=f"joint, {base:.0f} mm")
            ax.plot(noise, [s["rmse_floor_mm"] for s in sel], "x--", label=f"floor, {base:.0f} mm")
        ax.set_xlabel("stripe noise (px)")
        ax.set_ylabel("RMSE (mm), seed 0")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_galvo3d",
        description=__doc__.splitlines()[0],
        config_cls=Galvo3DBenchConfig,
        body=body,
        **shorthands(Shorthand("--seeds", "seeds", int, "number of seeds (as-built rigs)")),
    )


if __name__ == "__main__":
    raise SystemExit(main())
