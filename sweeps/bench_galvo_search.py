"""Benchmark: wide-area galvo search strategies on the simulated search rig (no Ray).

Runs raster, uniform, PPM and PPM + probability search on the same seeded scenes at an equal
shot budget and prints recall, localisation error, time and fps, a recall-vs-time table, the
effect of the route planner at a slow galvo settle, and a last `summary:` line.

    python -m sweeps.bench_galvo_search --seeds 50 --budget 145
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from methods.ppm_search import PPMConfig, PPMSearchConfig, RasterConfig, UniformConfig  # noqa: E402
from sims.rigs.search_rig import SearchRigConfig, evaluate_search  # noqa: E402

TIMES = (0.25, 0.5, 0.75, 1.0, 1.25)


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50, help="number of scenes (seeds 0..N-1)")
    ap.add_argument("--budget", type=int, default=145, help="shots per search")
    args = ap.parse_args(argv)
    rig = SearchRigConfig()
    seeds = range(args.seeds)
    print(f"search rig: {rig.field_v:g} V field, FOV {rig.fov_v} V, {rig.n_targets} targets/scene, "
          f"p_det {rig.p_detect}, {rig.fp_per_shot} FP/shot, camera {rig.camera_fps:g} fps, "
          f"settle {rig.settle_s * 1e3:g} ms; {args.seeds} scenes, {args.budget} shots")
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for label, method, cfg in variants(args.budget):
        results[label] = [evaluate_search(rig, method, cfg, s) for s in seeds]
    wall = time.perf_counter() - t0

    head = (f"{'method':28s} {'recall':>7s} {'loc.rec':>7s} {'prec':>6s} {'err V':>8s} {'err px':>7s} "
            f"{'1-look V':>8s} {'time s':>7s} {'fps':>6s} {'move V':>7s}")
    print(head + "\n" + "-" * len(head))
    for label, rows in results.items():
        print(f"{label:28s} {mean(rows, 'recall'):7.3f} {mean(rows, 'recall_localised'):7.3f} "
              f"{mean(rows, 'precision'):6.3f} {mean(rows, 'loc_err_v'):8.4f} "
              f"{mean(rows, 'loc_err_px'):7.2f} "
              f"{mean(rows, 'loc_err_single_v'):8.4f} {mean(rows, 'total_time_s'):7.3f} "
              f"{mean(rows, 'system_fps'):6.1f} {mean(rows, 'mean_move_v'):7.3f}")

    print("\nrecall vs time (s)")
    print(f"{'method':28s} " + " ".join(f"{t:>6.2f}" for t in TIMES))
    for label, rows in results.items():
        print(f"{label:28s} " + " ".join(f"{np.mean([recall_at(r, t) for r in rows]):6.3f}" for t in TIMES))

    print("\nroute planner at a 4 ms galvo settle (ppm, same scenes)")
    slow = SearchRigConfig(settle_s=4e-3)
    route_fps = {}
    for planner in ("identity", "nn", "nn2opt"):
        rows = [evaluate_search(slow, "ppm", PPMConfig(budget=args.budget, planner=planner), s)
                for s in seeds[: max(5, args.seeds // 5)]]
        route_fps[planner] = mean(rows, "system_fps")
        print(f"  {planner:9s} fps {route_fps[planner]:6.1f}  mean move {mean(rows, 'mean_move_v'):.3f} V")

    uni, ppm, srch = (results[k] for k in ("uniform", "ppm", "ppm_search"))
    ratio = mean(ppm, "recall") / mean(uni, "recall")
    cut_single = 1 - mean(srch, "loc_err_v") / mean(srch, "loc_err_single_v")
    cut_vs_ppm = 1 - mean(srch, "loc_err_v") / mean(ppm, "loc_err_v")
    print(f"\nPPM recall / uniform recall = {ratio:.2f}  (systems.md target ≥ 1.5, prototype 2.1)")
    print(f"refinement cut: {cut_single:.0%} vs the best single look at the same tracks, "
          f"{cut_vs_ppm:.0%} vs PPM without search (target ≥ 30 %)")
    print(f"wall {wall:.1f} s")
    print(f"summary: seeds={args.seeds} budget={args.budget} recall_uniform={mean(uni, 'recall'):.3f} "
          f"recall_ppm={mean(ppm, 'recall'):.3f} recall_ppm_search={mean(srch, 'recall'):.3f} "
          f"ppm_over_uniform={ratio:.2f} loc_err_ppm_v={mean(ppm, 'loc_err_v'):.4f} "
          f"loc_err_search_v={mean(srch, 'loc_err_v'):.4f} refine_cut_vs_single={cut_single:.2f} "
          f"refine_cut_vs_ppm={cut_vs_ppm:.2f} system_fps={mean(ppm, 'system_fps'):.1f} "
          f"fps_settle4ms_identity={route_fps['identity']:.1f} "
          f"fps_settle4ms_nn2opt={route_fps['nn2opt']:.1f} "
          f"wall_s={wall:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
