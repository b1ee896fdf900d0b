"""Benchmark: multi-galvanometer light-section scanner calibration and accuracy (no Ray).

For each seed: the as-built rig (design + manufacturing deviations) is calibrated in three
tiers (camera, laser, joint) from the design values; reconstruction error is measured on fresh
points over the volume, next to the static-camera baseline (focal f/5, same volume). Then the
calibrated RMSE as a function of stripe noise and laser baseline. Last line: `summary:`.

    python -m sweeps.bench_galvo3d --seeds 3
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from sims.rigs.scanner_rig import CalibConfig, ScannerRigConfig, evaluate_scanner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the noise/baseline table")
    args = ap.parse_args(argv)
    rig, calib = ScannerRigConfig(), CalibConfig()
    print(f"scanner: f {rig.f_px:g} px, {rig.sensor_px}² px, laser baseline {rig.laser_baseline_mm:g} mm, "
          f"stripe noise {rig.stripe_noise_px} px, drive noise {rig.drive_noise_v:g} V; calibration "
          f"{calib.n_camera_points}/{calib.n_laser_points}/{calib.n_joint_points} points "
          f"(camera/laser/joint), {calib.n_test_points} test points")
    t0 = time.perf_counter()
    rows = [evaluate_scanner(rig, calib, s) for s in range(args.seeds)]
    head = (f"{'seed':>4s} {'design':>8s} {'floor':>7s} {'staged':>7s} {'joint':>7s} {'max':>6s} "
            f"{'joint s':>7s} {'static':>7s} {'st.max':>7s} {'ratio':>6s} {'span x×y×z mm':>18s}")
    print("RMSE in mm (floor: true parameters, same noise)\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['seed']:4d} {r['rmse_design_mm']:8.1f} {r['rmse_true_params_mm']:7.3f} "
              f"{r['rmse_staged_mm']:7.3f} {r['rmse_mm']:7.3f} {r['max_err_mm']:6.2f} "
              f"{r['joint_wall_s']:7.2f} "
              f"{r['static_rmse_mm']:7.3f} {r['static_max_err_mm']:7.2f} {r['static_rmse_ratio']:6.2f} "
              f"{r['span_x_mm']:6.0f}×{r['span_y_mm']:4.0f}×{r['span_z_mm']:4.0f}")

    def avg(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    sens = []
    if not args.no_sensitivity:
        print("\ncalibrated RMSE (mm) vs stripe noise and laser baseline (seed 0, galvo rig)")
        print(f"{'noise px':>8s} {'baseline mm':>11s} {'floor':>7s} {'joint':>7s}")
        quick = replace(calib, static_baseline=False)
        for noise in (0.05, 0.1, 0.2):
            for base in (300.0, 600.0):
                r = evaluate_scanner(replace(rig, stripe_noise_px=noise, laser_baseline_mm=base), quick, 0)
                sens.append((noise, base, r["rmse_mm"]))
                print(f"{noise:8.2f} {base:11.0f} {r['rmse_true_params_mm']:7.3f} {r['rmse_mm']:7.3f}")
    wall = time.perf_counter() - t0
    at_600 = [s[2] for s in sens if s[0] == 0.1 and s[1] == 600.0]
    print(f"wall {wall:.1f} s")
    print(f"summary: seeds={args.seeds} rmse_mm={avg('rmse_mm'):.3f} max_err_mm={avg('max_err_mm'):.2f} "
          f"rmse_floor_mm={avg('rmse_true_params_mm'):.3f} rmse_design_mm={avg('rmse_design_mm'):.1f} "
          f"static_rmse_mm={avg('static_rmse_mm'):.3f} static_ratio={avg('static_rmse_ratio'):.2f} "
          f"joint_wall_s={avg('joint_wall_s'):.2f} span_mm={avg('span_x_mm'):.0f}x{avg('span_y_mm'):.0f}"
          f"x{avg('span_z_mm'):.0f} rmse_600mm_baseline={at_600[0] if at_600 else float('nan'):.3f} "
          f"wall_s={wall:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
