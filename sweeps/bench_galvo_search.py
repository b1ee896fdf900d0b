"""Benchmark: wide-area galvo search strategies on the simulated search rig (no Ray).

Runs raster, uniform, PPM and PPM + probability search on the same seeded scenes at an equal
shot budget and prints recall, localisation error, time and fps, a recall-vs-time table, the
effect of the route planner at a slow galvo settle, and a last `summary:` line.

    python -m sweeps.bench_galvo_search --seeds 50 --budget 145
    python -m sweeps.bench_galvo_search --seeds 5 --budget 40      # a quick look
    python -m sweeps.bench_galvo_search --dry-run                  # print the config

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `GalvoSearchBenchConfig`. Writes run.json,
methods.csv/.md, recall_vs_time.csv/.md, route.csv/.md, claims.csv/.md and recall_vs_time.png into
results/bench_galvo_search/<run_id>/. A scene is the unit of replication: with ≥ 2 scenes the
summary carries, as value and 95% interval over scenes (paired: every method sees the same scenes;
t-interval below 20 scenes, percentile bootstrap from 20) with a verdict (`supported` only when
the CI excludes 0): `ppm_recall_gain` (PPM − uniform recall), `refine_gain_single_v` (best single
look − refined localisation error, same tracks), `refine_gain_ppm_v` (PPM − PPM-search error;
scenes where either localised nothing are left out and counted in `_n`) and `route_fps_gain`
(nn2opt − identity planner fps at a 4 ms settle, on the route scenes).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

if __package__ in (None, ""):  # `python sweeps/bench_galvo_search.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands  # noqa: E402
from methods.errors import ConfigError  # noqa: E402
from methods.metrics.stats import paired_difference  # noqa: E402
from methods.plotting import new_figure, save_figure  # noqa: E402
from methods.ppm_search import PPMConfig, PPMSearchConfig, RasterConfig, UniformConfig  # noqa: E402
from sims.rigs.search_rig import SearchRigConfig, evaluate_search  # noqa: E402

TIMES = (0.25, 0.5, 0.75, 1.0, 1.25)
BOOTSTRAP_FROM = 20  # scenes: below this a t-interval, from here a paired percentile bootstrap


@dataclass(frozen=True)
class GalvoSearchBenchConfig:
    seeds: int = 50  # number of scenes (seeds 0..N-1)
    budget: int = 145  # shots per search
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"GalvoSearchBenchConfig version must be 1; received {self.version}.")
        if self.seeds < 1 or self.budget < 1:
            raise ConfigError(f"seeds (scenes) and budget (shots) must be >= 1; received seeds="
                              f"{self.seeds}, budget={self.budget}. The documented run is 50 and 145.")


def variants(budget: int) -> list[tuple[str, str, object]]:
    return [
        ("raster (snake, full grid)", "raster", RasterConfig(budget=budget)),
        ("raster (spread grid)", "raster", RasterConfig(budget=budget, mode="spread")),
        ("uniform", "uniform", UniformConfig(budget=budget)),
        ("ppm", "ppm", PPMConfig(budget=budget)),
        ("ppm + inhibition", "ppm", PPMConfig(budget=budget, inhibit=True)),
        ("ppm_search", "ppm_search", PPMSearchConfig(budget=budget)),
        ("ppm_search, no fusion", "ppm_search", PPMSearchConfig(budget=budget, fuse=False)),
    ]


def recall_at(row: dict, t: float) -> float:
    times, rec = np.asarray(row["curve_time_s"]), np.asarray(row["curve_recall"])
    k = np.searchsorted(times, t, side="right")
    return float(rec[k - 1]) if k > 0 else 0.0


def mean(rows: list[dict], key: str) -> float:
    """Mean over scenes, ignoring NaN (a scene where nothing was localised has no error)."""
    vals = np.array([r[key] for r in rows], dtype=float)
    return float(vals[~np.isnan(vals)].mean()) if np.any(~np.isnan(vals)) else float("nan")


def paired(a: list[dict], key_a: str, b: list[dict], key_b: str):
    """Paired difference a[key_a] - b[key_b] over the scenes where both are finite (None if < 2)."""
    x = np.array([r[key_a] for r in a], dtype=float)
    y = np.array([r[key_b] for r in b], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return None
    method = "bootstrap" if keep.sum() >= BOOTSTRAP_FROM else "t"
    return paired_difference(x[keep], y[keep], method=method)


def body(run: BenchRun) -> dict[str, Any]:
    cfg: GalvoSearchBenchConfig = run.config
    rig = SearchRigConfig()
    seeds = range(cfg.seeds)
    print(f"search rig: {rig.field_v:g} V field, FOV {rig.fov_v} V, {rig.n_targets} targets/scene, "
          f"p_det {rig.p_detect}, {rig.fp_per_shot} FP/shot, camera {rig.camera_fps:g} fps, "
          f"settle {rig.settle_s * 1e3:g} ms; {cfg.seeds} scenes, {cfg.budget} shots", flush=True)
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for label, method, mcfg in variants(cfg.budget):
        results[label] = [evaluate_search(rig, method, mcfg, s) for s in seeds]
        if run.progress:
            print(f"  {label}: done", flush=True)
    wall = time.perf_counter() - t0

    run.table("methods", [
        {"method": label, "recall": mean(rows, "recall"), "loc_recall": mean(rows, "recall_localised"),
         "precision": mean(rows, "precision"), "err_v": mean(rows, "loc_err_v"),
         "err_px": mean(rows, "loc_err_px"), "one_look_v": mean(rows, "loc_err_single_v"),
         "time_s": mean(rows, "total_time_s"), "fps": mean(rows, "system_fps"),
         "move_v": mean(rows, "mean_move_v")}
        for label, rows in results.items()], f"mean over {cfg.seeds} scenes, {cfg.budget} shots")
    curves = {label: [float(np.mean([recall_at(r, t) for r in rows])) for t in TIMES]
              for label, rows in results.items()}
    run.table("recall_vs_time", [{"method": label, **{f"t={t:g}s": v for t, v in zip(TIMES, c, strict=True)}}
                                 for label, c in curves.items()], "recall vs time (s)")

    slow = SearchRigConfig(settle_s=4e-3)
    route_rows: dict[str, list[dict]] = {}
    for planner in ("identity", "nn", "nn2opt"):
        route_rows[planner] = [evaluate_search(slow, "ppm", PPMConfig(budget=cfg.budget, planner=planner), s)
                               for s in seeds[: max(5, cfg.seeds // 5)]]
    route_fps = {p: mean(rows, "system_fps") for p, rows in route_rows.items()}
    run.table("route", [{"planner": p, "fps": route_fps[p], "mean_move_v": mean(rows, "mean_move_v"),
                         "scenes": len(rows)} for p, rows in route_rows.items()],
              "route planner at a 4 ms galvo settle (ppm, same scenes)")
    _plot(curves, run.path("recall_vs_time.png"))

    uni, ppm, srch = (results[k] for k in ("uniform", "ppm", "ppm_search"))
    ratio = mean(ppm, "recall") / mean(uni, "recall")
    cut_single = 1 - mean(srch, "loc_err_v") / mean(srch, "loc_err_single_v")
    cut_vs_ppm = 1 - mean(srch, "loc_err_v") / mean(ppm, "loc_err_v")
    print(f"\nPPM recall / uniform recall = {ratio:.2f}  (systems.md target ≥ 1.5, prototype 2.1)")
    print(f"refinement cut: {cut_single:.0%} vs the best single look at the same tracks, "
          f"{cut_vs_ppm:.0%} vs PPM without search (target ≥ 30 %)")
    print(f"wall {wall:.1f} s")
    summary: dict[str, Any] = {
        "seeds": cfg.seeds, "budget": cfg.budget,
        "recall_uniform": f"{mean(uni, 'recall'):.3f}", "recall_ppm": f"{mean(ppm, 'recall'):.3f}",
        "recall_ppm_search": f"{mean(srch, 'recall'):.3f}", "ppm_over_uniform": f"{ratio:.2f}",
        "loc_err_ppm_v": f"{mean(ppm, 'loc_err_v'):.4f}",
        "loc_err_search_v": f"{mean(srch, 'loc_err_v'):.4f}",
        "refine_cut_vs_single": f"{cut_single:.2f}", "refine_cut_vs_ppm": f"{cut_vs_ppm:.2f}",
        "system_fps": f"{mean(ppm, 'system_fps'):.1f}",
        "fps_settle4ms_identity": f"{route_fps['identity']:.1f}",
        "fps_settle4ms_nn2opt": f"{route_fps['nn2opt']:.1f}",
    }
    claims = (
        ("ppm_recall_gain", (ppm, "recall", uni, "recall"), "PPM finds more targets than uniform"),
        ("refine_gain_single_v", (srch, "loc_err_single_v", srch, "loc_err_v"),
         "refinement beats the best single look"),
        ("refine_gain_ppm_v", (ppm, "loc_err_v", srch, "loc_err_v"), "PPM search localises better than PPM"),
        ("route_fps_gain", (route_rows["nn2opt"], "system_fps", route_rows["identity"], "system_fps"),
         "nn2opt routing raises fps at a 4 ms settle"),
    )
    for name, args, what in claims:
        est = paired(*args)
        if est is None:
            print(f"claim {name}: fewer than 2 scenes with a finite value, no interval")
            continue
        summary.update(run.claim(name, est, what=what))
        summary[f"{name}_n"] = est.n
    summary["wall_s"] = f"{wall:.1f}"
    return summary


def _plot(curves: dict[str, list[float]], path: Path) -> None:
    fig, ax = new_figure(figsize=(7, 4))
    for label, c in curves.items():
        ax.plot(TIMES, c, "o-", label=label)
    ax.set_xlabel("search time (s)")
    ax.set_ylabel("recall (mean over scenes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_galvo_search",
        description=__doc__.splitlines()[0],
        config_cls=GalvoSearchBenchConfig,
        body=body,
        **shorthands(Shorthand("--seeds", "seeds", int, "number of scenes (seeds 0..N-1)"),
                     Shorthand("--budget", "budget", int, "shots per search")),
    )


if __name__ == "__main__":
    raise SystemExit(main())
