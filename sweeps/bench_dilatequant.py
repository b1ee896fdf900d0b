"""Benchmark: DilateQuant vs PTQ, EfficientDM and QAT on ddpm-digits at W8A8 / W6A6 / W4A8 / W4A4 under one
config — FD with CIs beside the real-vs-real noise floor, MSE vs FP, and the cost of quantizing.

    python sweeps/bench_dilatequant.py                    # the default size (see below)
    python sweeps/bench_dilatequant.py --quick            # tiny sizes, for tests (seconds)
    python sweeps/bench_dilatequant.py --seeds 5 --set samples=1000 --set iters=50
    python sweeps/bench_dilatequant.py --set model=/path/to/ddpm-pipeline --set 'bits=["w4a4"]'

DilateQuant (Liu et al., arXiv 2409.14307) reports on DDPM CIFAR-10 W4A4 FID 9.13 vs EfficientDM
81.27 and full QAT 7.30, at 1.08 GPU-hours and 3.4 GB vs QAT's 13.9 h and 10 GB. Here every method
runs on one `actors.diffusion_quant_task.DiffusionQuantTask` (the same U-Net, the same FP
calibration trajectories, the same evaluation noise): at seed s every method draws the same
`calib` calibration samples and runs with seed s; DilateQuant trains `iters` iterations per unit
(9 units on ddpm-digits), EfficientDM and QAT `iters` x units in total (one iteration class), PTQ
none. Quality: digit-FD of `samples` generated digits against the real test digits (as the
CacheQuant grid computes it; MSE vs FP for a non-zoo model) and MSE against FP samples from the
same noise. Per (bits, method): mean over seeds with a Student t 95 % CI. The noise floor is the
FD between `samples` real *training* digits and the test digits over `floor_draws` draws: its mean
(what a perfect generator scores at this sample size) and the noise floor of FD differences between
such same-distribution draws (`methods.metrics.stats.noise_floor`), printed beside every FD.
Cost: quantize wall time and CPU time (calibration draw + the method's prepare) and peak memory
(RSS delta on a CPU, `actors.diffusion_quant_task.PeakMemory`), side by side with ratios to
DilateQuant.

The paper's claims, each marked supported / not distinguishable / not supported (paired over seeds,
the real-vs-real floor as the threshold):
  1. W4A4 DilateQuant << EfficientDM: FD(EfficientDM) - FD(DilateQuant) > floor.
  2. W4A4 DilateQuant close to QAT: FD(DilateQuant) - FD(QAT) with its whole CI below the floor
     (not supported when its lower bound is above the floor).
  3. at far less cost: QAT's wall time and peak memory above DilateQuant's (paired over seeds).
  plus the WD ablation at W4A4 (DilateQuant without dilation minus with, `ablate_wd`).

Common flags as for every bench (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); `--seeds N`, `--quick`. Writes quality.csv/.md, cost.csv/.md, claims.csv/.md,
paper_claims.csv/.md, trials.csv and fd_vs_bits.png into results/bench_dilatequant/<run_id>/; the
last line is `summary: key=value ...`.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from actors.diffusion_quant_task import DiffusionQuantTask, DiffusionQuantTaskConfig
from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.dilatequant import UNET_QAT_BITS
from methods.errors import ConfigError
from methods.metrics.stats import Estimate, mean_ci, noise_floor, paired_difference
from methods.quant.bits import canonical_bits_list

METHODS = ("qdiffusion", "dilatequant", "efficientdm", "diffusion_qat")
PAPER = {"dilatequant": 9.13, "efficientdm": 81.27, "diffusion_qat": 7.30}  # CIFAR-10 W4A4 FID
QUICK = {
    "steps": 2,
    "samples": 8,
    "trajectories": 4,
    "calib": 4,
    "batch_size": 4,
    "iters": 1,
    "seeds": 3,
    "bits": ("w4a4",),
    "floor_draws": 3,
    "fd_groups": 4,
    "ablate_wd": False,
}


@dataclass(frozen=True)
class DilateQuantBenchConfig:
    model: str = "auto"  # 'auto' (zoo ddpm-digits), 'untrained' or a local diffusers folder
    steps: int = 10  # DDIM steps
    samples: int = 256  # evaluated samples (FD, MSE)
    trajectories: int = 32  # FP calibration trajectories
    calib: int = 256  # calibration samples, the same for every method at one seed
    batch_size: int = 32
    iters: int = 8  # DilateQuant iterations per unit; EfficientDM / QAT get iters x units in total
    seeds: int = 3
    bits: tuple[str, ...] = ("w8a8", "w6a6", "w4a8", "w4a4")
    floor_draws: int = 8  # real-vs-real FD draws for the noise floor
    fd_groups: int = 16
    ablate_wd: bool = True  # also DilateQuant without weight dilation at W4A4
    quick: bool = False  # tiny sizes (QUICK) for tests
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"DilateQuantBenchConfig version must be 1; received {self.version}.")
        if self.quick:
            for k, v in QUICK.items():
                object.__setattr__(self, k, v)
        object.__setattr__(
            self, "bits", canonical_bits_list(self.bits, **UNET_QAT_BITS, who="bench_dilatequant")
        )
        if not self.bits:
            raise ConfigError("bits must be a non-empty list like ['w4a4'], got [].")
        if self.seeds < 3:
            raise ConfigError(f"seeds must be >= 3 (claims need a CI over seeds); received {self.seeds}.")
        if self.floor_draws < 3:
            raise ConfigError(f"floor_draws must be >= 3; received {self.floor_draws}.")
        if self.calib < self.batch_size:
            raise ConfigError(
                f"calib ({self.calib}) is smaller than the batch ({self.batch_size}) of the distillation "
                "methods; set calib >= batch_size (the paper: 5120 and 32)."
            )
        if not 1 <= self.calib <= self.trajectories * self.steps:
            raise ConfigError(
                f"calib must lie in 1..{self.trajectories * self.steps} (trajectories x steps); received "
                f"{self.calib}. Raise trajectories or lower calib."
            )
        self.task_config()  # validates steps, samples, groups

    def task_config(self) -> DiffusionQuantTaskConfig:
        return DiffusionQuantTaskConfig(
            model=self.model,
            steps=self.steps,
            samples=self.samples,
            trajectories=self.trajectories,
            batch_size=self.batch_size,
            fd_groups=self.fd_groups,
        )


def arms(cfg: DilateQuantBenchConfig) -> list[tuple[str, str, bool]]:
    """(bits, method, dilation) of every arm, in table order."""
    out = [(b, m, m == "dilatequant") for b in cfg.bits for m in METHODS]
    if cfg.ablate_wd and "w4a4" in cfg.bits:
        out.insert(out.index(("w4a4", "dilatequant", True)) + 1, ("w4a4", "dilatequant", False))
    return out


def arm_name(method: str, dilation: bool) -> str:
    return method if method != "dilatequant" or dilation else "dilatequant-noWD"


def real_floor(task: DiffusionQuantTask, n: int, draws: int) -> tuple[Estimate, Estimate]:
    """FD of `n` real training digits against the test digits over `draws` draws: the FD a perfect
    generator scores at this sample size (t-interval) and the noise floor of differences between
    such draws (pairs of independent draws)."""
    from sims.data.digits import load_digits_split

    train = load_digits_split("train", 16)[0]
    if n > len(train):
        raise ConfigError(f"the real-vs-real floor draws {n} of {len(train)} training digits; lower samples.")
    gen = torch.Generator().manual_seed(0)
    fds = []
    for _ in range(draws):
        x = train[torch.randperm(len(train), generator=gen)[:n]] * 2 - 1  # the samples' [-1, 1] range
        fds.append(task.fd_of_features(task.features(x)))
    i, j = np.triu_indices(draws, k=1)
    return mean_ci(fds), noise_floor(np.asarray(fds)[i] - np.asarray(fds)[j])


def paper_verdict(effect: Estimate, floor: float, closeness: bool = False) -> str:
    """supported / not distinguishable / not supported for a claim oriented so that positive = the
    paper's direction; `closeness`: the paper claims the difference is small (the whole CI of
    `effect` below the floor)."""
    if closeness:
        if effect.hi < floor:
            return "supported"
        return "not supported" if effect.lo > floor else "not distinguishable"
    if effect.lo > 0 and effect.value > floor:
        return "supported"
    if effect.hi < 0 and -effect.value > floor:
        return "not supported"
    return "not distinguishable"


def _ci(values: list[float]) -> tuple[float, float, float]:
    est = mean_ci(values) if len(values) > 1 and statistics.pstdev(values) > 0 else None
    return (est.value, est.lo, est.hi) if est else (values[0], values[0], values[0])


def body(run: BenchRun) -> dict[str, Any]:
    cfg: DilateQuantBenchConfig = run.config
    torch.set_num_threads(1)
    start = time.perf_counter()
    task = DiffusionQuantTask(cfg.task_config())
    quality = task.quality
    print(
        f"model: {task.model_name}  steps={cfg.steps}  samples={cfg.samples}  calib={cfg.calib}  "
        f"iters/unit={cfg.iters} ({task.n_units} units)  seeds={cfg.seeds}  quality={quality}",
        flush=True,
    )
    floor_fd = floor = None
    if quality == "fd":
        floor_fd, floor = real_floor(task, cfg.samples, cfg.floor_draws)
        print(
            f"real-vs-real digit-FD at {cfg.samples} samples: {floor_fd}; noise floor of FD differences "
            f"{floor.hi:.4g}; FP model FD {task.fp_fd:.4g}",
            flush=True,
        )
    trials: list[dict[str, Any]] = []
    for seed in range(cfg.seeds):
        for bits, method, dil in arms(cfg):
            iters = 0 if method == "qdiffusion" else cfg.iters
            point = {
                "method": method,
                "bits": bits,
                "dilation": dil,
                "calib": cfg.calib,
                "iters": iters,
                "rep": seed,
            }
            res = task.evaluate(point, seed=seed, trial=len(trials), chunk=0, n_chunks=1)
            m = res["metrics"]
            trials.append(
                {
                    "seed": seed,
                    "bits": bits,
                    "arm": arm_name(method, dil),
                    "fd": res["objectives"].get("fd"),
                    "fd_lo": m.get("fd_lo"),
                    "fd_hi": m.get("fd_hi"),
                    "mse": res["objectives"]["mse"],
                    "quantize_s": m["quantize_seconds"],
                    "cpu_s": m["quantize_cpu_seconds"],
                    "peak_mb": m["peak_mem_mb"],
                    "optimizer_steps": m["optimizer_steps"],
                    "calib_seed": m["calib_seed"],
                }
            )
        if run.progress:
            print(f"... seed {seed} done ({time.perf_counter() - start:.0f}s)", flush=True)
    run.table("trials", trials, "every trial (jackknife CI over the generated samples)")
    rows = _quality_rows(cfg, trials, floor_fd, floor)
    run.table(
        "quality", rows, f"quality per arm (mean over {cfg.seeds} seeds, t 95 % CI); real-vs-real beside"
    )
    cost = _cost_rows(trials)
    run.table(
        "cost", cost, "cost of quantizing (mean over seeds, t 95 % CI; ratio to DilateQuant at the same bits)"
    )
    summary = _claims(run, cfg, trials, quality, floor)
    _plot(rows, quality, run.path("fd_vs_bits.png"))
    summary.update(seconds=round(time.perf_counter() - start, 1), model=task.model_name.replace(" ", "_"))
    if floor_fd is not None:
        summary.update(
            real_fd=round(floor_fd.value, 3), fd_noise_floor=round(floor.hi, 3), fp_fd=round(task.fp_fd, 3)
        )
    for r in rows:
        if r["bits"] == "w4a4" and r.get(quality) is not None:
            summary[f"w4a4_{r['arm']}_{quality}"] = round(r[quality], 4)
    return summary


def _by(trials, bits, arm, key):
    return [t[key] for t in sorted(trials, key=lambda t: t["seed"]) if t["bits"] == bits and t["arm"] == arm]


def _quality_rows(cfg, trials, floor_fd, floor) -> list[dict[str, Any]]:
    rows = []
    for bits, method, dil in arms(cfg):
        arm = arm_name(method, dil)
        row: dict[str, Any] = {"bits": bits, "arm": arm, "n": len(_by(trials, bits, arm, "mse"))}
        if floor_fd is not None:
            fd, lo, hi = _ci(_by(trials, bits, arm, "fd"))
            row.update(fd=fd, fd_lo=lo, fd_hi=hi, real_fd=floor_fd.value, fd_floor=floor.hi)
        mse, lo, hi = _ci(_by(trials, bits, arm, "mse"))
        row.update(mse=mse, mse_lo=lo, mse_hi=hi, paper_w4a4_fid=PAPER.get(arm, "") if bits == "w4a4" else "")
        rows.append(row)
    return rows


def _cost_rows(trials) -> list[dict[str, Any]]:
    rows = []
    for bits in dict.fromkeys(t["bits"] for t in trials):
        ref_s = (
            statistics.mean(_by(trials, bits, "dilatequant", "quantize_s"))
            if _by(trials, bits, "dilatequant", "quantize_s")
            else math.nan
        )
        ref_c = statistics.mean(_by(trials, bits, "dilatequant", "cpu_s") or [math.nan])
        ref_m = (
            statistics.mean(_by(trials, bits, "dilatequant", "peak_mb"))
            if _by(trials, bits, "dilatequant", "peak_mb")
            else math.nan
        )
        for arm in dict.fromkeys(t["arm"] for t in trials if t["bits"] == bits):
            s, s_lo, s_hi = _ci(_by(trials, bits, arm, "quantize_s"))
            mb, mb_lo, mb_hi = _ci(_by(trials, bits, arm, "peak_mb"))
            cpu = statistics.mean(_by(trials, bits, arm, "cpu_s"))
            rows.append(
                {
                    "bits": bits,
                    "arm": arm,
                    "optimizer_steps": _by(trials, bits, arm, "optimizer_steps")[0],
                    "quantize_s": s,
                    "s_lo": s_lo,
                    "s_hi": s_hi,
                    "time_x_dq": s / ref_s,
                    "cpu_s": cpu,
                    "cpu_x_dq": cpu / ref_c,
                    "peak_mb": mb,
                    "mb_lo": mb_lo,
                    "mb_hi": mb_hi,
                    "mem_x_dq": mb / ref_m if ref_m else math.nan,
                }
            )
    return rows


def _claims(run: BenchRun, cfg, trials, quality, floor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "w4a4" not in cfg.bits:
        print("(no W4A4 arm: the paper's claims are not tested)")
        return out
    fl = floor.hi if floor is not None else 0.0
    q = lambda arm: _by(trials, "w4a4", arm, quality)  # noqa: E731
    table = []

    def claim(
        name: str, effect: Estimate, what: str, closeness: bool = False, floor_value: float = fl
    ) -> None:
        out.update(run.claim(name, effect, floor_value if not closeness else None, what))
        verdict = paper_verdict(effect, floor_value, closeness)
        table.append(
            {
                "claim": name,
                "what": what,
                "effect": effect.value,
                "lo": effect.lo,
                "hi": effect.hi,
                "n": effect.n,
                "floor": floor_value,
                "paper_verdict": verdict,
            }
        )
        out[f"{name}_paper"] = verdict.replace(" ", "_")

    claim(
        "dq_beats_efficientdm",
        paired_difference(q("efficientdm"), q("dilatequant")),
        f"W4A4 {quality}(EfficientDM) - {quality}(DilateQuant) > floor (paper: 81.27 - 9.13 FID)",
    )
    claim(
        "dq_close_to_qat",
        paired_difference(q("dilatequant"), q("diffusion_qat")),
        f"W4A4 {quality}(DilateQuant) - {quality}(QAT): whole CI below the floor (paper: 9.13 - 7.30 FID)",
        closeness=True,
    )
    t = lambda arm, key: _by(trials, "w4a4", arm, key)  # noqa: E731
    claim(
        "qat_time_over_dq",
        paired_difference(np.log(t("diffusion_qat", "quantize_s")), np.log(t("dilatequant", "quantize_s"))),
        "log(QAT wall time / DilateQuant wall time) > 0 (paper: log(13.89 h / 1.08 h) = 2.55)",
        floor_value=0.0,
    )
    claim(
        "qat_cpu_over_dq",
        paired_difference(np.log(t("diffusion_qat", "cpu_s")), np.log(t("dilatequant", "cpu_s"))),
        "log(QAT CPU time / DilateQuant CPU time) > 0 (the same claim, less sensitive to machine load)",
        floor_value=0.0,
    )
    claim(
        "qat_mem_over_dq",
        paired_difference(t("diffusion_qat", "peak_mb"), t("dilatequant", "peak_mb")),
        "QAT peak memory - DilateQuant peak memory (MB) > 0 (paper: 9974 - 3439 MB)",
        floor_value=0.0,
    )
    if cfg.ablate_wd:
        claim(
            "wd_helps",
            paired_difference(q("dilatequant-noWD"), q("dilatequant")),
            f"W4A4 {quality}(no WD) - {quality}(WD) > floor (the paper's ablation: WD lowers FID)",
        )
    run.table("paper_claims", table, "the paper's claims (supported / not distinguishable / not supported)")
    return out


def _plot(rows: list[dict], quality: str, path: Path) -> None:
    from methods.plotting import colormap, new_figure, save_figure

    fig, axes = new_figure(1, 1, figsize=(6.5, 4), squeeze=False)
    ax, colours = axes[0][0], colormap("tab10")
    bits = list(dict.fromkeys(r["bits"] for r in rows))
    for k, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
        pts = [r for r in rows if r["arm"] == arm]
        xs = [bits.index(r["bits"]) + 0.05 * k for r in pts]
        ys = [r[quality] for r in pts]
        err = [[r[quality] - r[f"{quality}_lo"] for r in pts], [r[f"{quality}_hi"] - r[quality] for r in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, lw=1, capsize=2, label=arm, color=colours(k % 10))
    if quality == "fd" and rows and "real_fd" in rows[0]:
        ax.axhline(rows[0]["real_fd"], color="k", ls="--", lw=0.8, label="real vs real (same n)")
    ax.set_xticks(range(len(bits)), bits)
    ax.set_ylabel("digit-FD vs real test digits" if quality == "fd" else "MSE vs FP samples")
    ax.set_title("DilateQuant bench: mean over seeds, 95 % t CI", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_dilatequant",
        description=__doc__.splitlines()[0],
        config_cls=DilateQuantBenchConfig,
        body=body,
        **shorthands(
            Shorthand("--seeds", "seeds", int, "seeds (>= 3)"),
            Shorthand("--quick", "quick", const=True, help="tiny sizes for tests"),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
