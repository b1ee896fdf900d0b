"""DilateQuant sweep: bits x method x dilation x calibration size of a diffusion U-Net on
calibration-worker actors, or an Optuna TPE study over DilateQuant's dilation cap and learning rates.

    python sweeps/dilatequant_sweep.py                                    # the grid, ~10 min on 2 cores
    python sweeps/dilatequant_sweep.py --set 'bits=["w4a4"]' --set 'calib_sizes=[64,256]' --set reps=3
    python sweeps/dilatequant_sweep.py --set mode='"tpe"' --set study.n_trials=16   # max_scale + lrs
    python sweeps/dilatequant_sweep.py --model /path/to/ddpm-pipeline --set task.steps=20

Every trial quantizes the U-Net (`actors.diffusion_quant_task.DiffusionQuantTask`, which loads the
U-Net, records the FP calibration trajectories and the FP reference samples once per actor) with one
of: `qdiffusion` (training-free PTQ on the same calibration set), `dilatequant` (WD + TPQ + BKD,
arXiv 2409.14307; `dilation` on/off), `efficientdm` (QALoRA + temporal LSQ, arXiv 2310.03270),
`diffusion_qat` (LSQ on everything, the cost ceiling), all under one budget: DilateQuant's `iters`
per unit, the end-to-end methods `iters` x units in total. Rows (streamed into Parquet by the
farm's sink): digit-FD with a jackknife CI (zoo ddpm-digits; MSE vs FP for any other model), MSE
vs FP on the same noise with a bootstrap CI, quantize wall time, peak memory (RSS delta on a CPU),
the method's config, seeds and versions. `dilation` exists only for DilateQuant: the grid gives the
other methods dilation=false only.

`mode="tpe"`: DilateQuant at `tpe_bits`, `tpe_calib` with Optuna's TPE over `max_scale` (WD's cap
on s, log-uniform in `max_scale_range`), `weight_lr` and `quant_lr` (log-uniform); a
`study.sampler` left at 'grid' becomes 'tpe' in this mode.

Defaults (sized for a shared 2-core machine, a check of direction, not of the paper's magnitudes):
zoo ddpm-digits, 10 DDIM steps, 256 evaluated samples, 32 FP calibration trajectories,
bits w8a8 / w6a6 / w4a8 / w4a4, calibration sizes 64 and 256, 20 BKD iterations per unit (9 units),
one replicate: 4 bits x 5 (method, dilation) x 2 sizes = 40 trials. The paper's settings (5 120
samples, 5 000 iterations, lr 1e-2 for weights) are reachable with --set. Writes `table.md`,
`fd_vs_bits.png` (grid) or `tpe_study.png` into the run directory; the last line is
`summary: key=value ...`.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/dilatequant_sweep.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.diffusion_quant_task import METHODS, DiffusionQuantTaskConfig, DQPoint
from actors.task import task_factory
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import add_model_device_arguments, format_table, model_device_overrides, run_sweep
from methods.dilatequant import UNET_QAT_BITS
from methods.errors import ConfigError
from methods.metrics.stats import mean_ci
from methods.quant.bits import canonical_bits_list, parse_bits

MODES = ("grid", "tpe")
GRID_FIELDS = ("method", "bits", "dilation", "calib", "iters", "rep")
TABLE_COLUMNS = (
    "bits",
    "calib",
    "method",
    "dilation",
    "n",
    "fd",
    "fd_lo",
    "fd_hi",
    "mse",
    "mse_lo",
    "mse_hi",
    "quantize_s",
    "peak_mb",
)


def label(method: str, dilation: bool) -> str:
    """How a (method, dilation) pair is named in tables and plots."""
    if method == "dilatequant":
        return "dilatequant" if dilation else "dilatequant-noWD"
    return method


@dataclass(frozen=True)
class DilateQuantSweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="evaluator_cpu1")
    task: DiffusionQuantTaskConfig = field(default_factory=lambda: DiffusionQuantTaskConfig(samples=256))
    mode: str = "grid"
    methods: tuple[str, ...] = METHODS
    bits: tuple[str, ...] = ("w8a8", "w6a6", "w4a8", "w4a4")
    dilation: tuple[bool, ...] = (True, False)
    calib_sizes: tuple[int, ...] = (64, 256)
    iters: int = 20
    reps: int = 1
    tpe_bits: str = "w4a4"
    tpe_calib: int = 256
    max_scale_range: tuple[float, float] = (1.0, 64.0)
    weight_lr_range: tuple[float, float] = (1e-5, 1e-2)
    quant_lr_range: tuple[float, float] = (1e-5, 1e-2)
    version: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}.")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(
                f"methods must be a non-empty subset of {list(METHODS)}, got {list(self.methods)}."
            )
        object.__setattr__(
            self, "bits", canonical_bits_list(self.bits, **UNET_QAT_BITS, who="dilatequant_sweep")
        )
        object.__setattr__(
            self,
            "tpe_bits",
            canonical_bits_list([self.tpe_bits], **UNET_QAT_BITS, who="dilatequant_sweep")[0],
        )
        if not self.bits:
            raise ConfigError("bits must be a non-empty list like ['w4a4', 'w8a8'], got [].")
        if not self.dilation or any(not isinstance(d, bool) for d in self.dilation):
            raise ConfigError(f"dilation must be a non-empty list of booleans, got {list(self.dilation)}.")
        available = self.task.trajectories * self.task.steps
        sizes = (*self.calib_sizes, self.tpe_calib)
        if not self.calib_sizes or any(not isinstance(c, int) or not 1 <= c <= available for c in sizes):
            raise ConfigError(
                f"calib_sizes and tpe_calib must be integers in 1..{available} (task.trajectories x "
                f"task.steps), got {list(self.calib_sizes)}, {self.tpe_calib}. Raise task.trajectories "
                "or choose smaller sizes."
            )
        trained = set(self.methods) - {"qdiffusion"}
        small = [c for c in sizes if c < self.task.batch_size]
        if small and (trained or self.mode == "tpe"):
            raise ConfigError(
                f"calibration sizes {small} are smaller than the batch (task.batch_size="
                f"{self.task.batch_size}) of the distillation methods {sorted(trained) or ['dilatequant']}; "
                "set calib_sizes >= task.batch_size or a smaller task.batch_size."
            )
        if self.iters < 0 or self.reps < 1:
            raise ConfigError(f"need iters >= 0 and reps >= 1, got {self.iters}, {self.reps}.")
        for name in ("max_scale_range", "weight_lr_range", "quant_lr_range"):
            lo, hi = getattr(self, name)
            floor = 1.0 if name == "max_scale_range" else 0.0
            if not (lo >= floor and hi > lo and (floor or lo > 0)):
                raise ConfigError(
                    f"{name} must be (low, high) with {floor or 0} < low < high "
                    f"(max_scale low >= 1), got ({lo}, {hi})."
                )
        if self.mode == "tpe" and self.study.sampler == "grid":
            object.__setattr__(
                self, "study", replace(self.study, sampler="tpe", n_trials=self.study.n_trials or 12)
            )

    def quality_objective(self) -> str:
        return "fd" if self.task.model in ("auto", "untrained") else "mse"


def grid(cfg: DilateQuantSweepConfig) -> list[dict[str, Any]]:
    """Every valid (method, bits, dilation, calibration size, replicate): dilation only for DilateQuant."""
    points = []
    for bits in cfg.bits:
        for method in cfg.methods:
            for dil in cfg.dilation if method == "dilatequant" else (False,):
                for calib in cfg.calib_sizes:
                    for rep in range(cfg.reps):
                        iters = 0 if method == "qdiffusion" else cfg.iters
                        point = DQPoint(
                            method=method, bits=bits, dilation=dil, calib=calib, iters=iters, rep=rep
                        )
                        points.append({k: getattr(point, k) for k in GRID_FIELDS})
    return list({tuple(p.items()): p for p in points}.values())


def build_spec(cfg: DilateQuantSweepConfig) -> StudySpec:
    if cfg.mode == "grid":
        points = grid(cfg)
        space = {f: ("categorical", list(dict.fromkeys(p[f] for p in points))) for f in GRID_FIELDS}
        extra = {"grid": tuple(points)}
    else:
        space = {
            "method": ("categorical", ["dilatequant"]),
            "bits": ("categorical", [cfg.tpe_bits]),
            "dilation": ("categorical", [True]),
            "calib": ("categorical", [cfg.tpe_calib]),
            "iters": ("categorical", [cfg.iters]),
            "rep": ("categorical", [0]),
            "max_scale": ("float", *cfg.max_scale_range, "log"),
            "weight_lr": ("float", *cfg.weight_lr_range, "log"),
            "quant_lr": ("float", *cfg.quant_lr_range, "log"),
        }
        extra = {}
    return StudySpec(
        sweep="dilatequant_sweep",
        objectives=(cfg.quality_objective(),),
        directions=("minimize",),
        space=space,
        task_factory=task_factory("diffusion_quant", cfg.task),
        study=cfg.study,
        **extra,
    )


def aggregate(trials: list[dict[str, Any]], quality: str) -> list[dict[str, Any]]:
    """One row per (bits, calib, method, dilation): the mean over replicates with a t-interval over
    them (>= 2 replicates), else the single trial's own CI."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in trials:
        groups.setdefault((r["bits"], r["calib"], r["method"], r["dilation"]), []).append(r)
    out = []
    for (bits, calib, method, dil), rs in groups.items():
        row: dict[str, Any] = {
            "bits": bits,
            "calib": calib,
            "method": label(method, dil),
            "dilation": dil,
            "n": len(rs),
        }
        for key in ("fd", "mse"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if not vals:
                row.update({key: None, f"{key}_lo": None, f"{key}_hi": None})
            elif len(vals) > 1:
                est = mean_ci(vals)
                row.update({key: est.value, f"{key}_lo": est.lo, f"{key}_hi": est.hi})
            else:
                row.update(
                    {key: vals[0], f"{key}_lo": rs[0].get(f"{key}_lo"), f"{key}_hi": rs[0].get(f"{key}_hi")}
                )
        row["quantize_s"] = statistics.mean(r["quantize_seconds"] for r in rs)
        row["peak_mb"] = statistics.mean(r["peak_mem_mb"] for r in rs)
        row["w_bits"], row["a_bits"] = parse_bits(bits).wa
        row["fp_fd"] = rs[0].get("fp_fd")
        out.append(row)
    order = [label(m, d) for m in METHODS for d in (True, False)]
    return sorted(
        out, key=lambda r: (-r["w_bits"] * r["a_bits"], -r["w_bits"], r["calib"], order.index(r["method"]))
    )


def report(run_dir: Path, cfg: DilateQuantSweepConfig, outcome: Any) -> dict[str, Any]:
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    if not trials:
        print("(no completed trials)")
        return {}
    quality = cfg.quality_objective()
    return (
        _report_grid(run_dir, trials, quality)
        if cfg.mode == "grid"
        else _report_tpe(run_dir, trials, quality)
    )


def _report_grid(run_dir: Path, trials: list[dict[str, Any]], quality: str) -> dict[str, Any]:
    rows = aggregate(trials, quality)
    table = [{k: r[k] for k in TABLE_COLUMNS} for r in rows]
    print(format_table(table))
    (run_dir / "table.md").write_text(_markdown(table))
    plot = _plot_grid(run_dir, rows, quality)
    print(f"plot: {plot}")
    out: dict[str, Any] = {
        "plot": str(plot),
        "table": str(run_dir / "table.md"),
        "quality_objective": quality,
        "quantize_seconds": f"{sum(r['quantize_seconds'] for r in trials):.1f}",
    }
    if rows[0].get("fp_fd") is not None:
        out["fp_fd"] = f"{rows[0]['fp_fd']:.4g}"
    top = max(r["calib"] for r in rows)
    for bits in dict.fromkeys(r["bits"] for r in rows):
        at = [r for r in rows if r["bits"] == bits and r["calib"] == top and r[quality] is not None]
        if at:
            best = min(at, key=lambda r: r[quality])
            out[f"{bits}.best"] = f"{best['method']}:{best[quality]:.4g}"
        for r in at:
            out[f"{bits}.{r['method']}"] = f"{r[quality]:.4g}"
    return out


def _report_tpe(run_dir: Path, trials: list[dict[str, Any]], quality: str) -> dict[str, Any]:
    best = min(trials, key=lambda r: r[quality])
    cols = (
        "trial_number",
        "max_scale",
        "weight_lr",
        "quant_lr",
        quality,
        f"{quality}_lo",
        f"{quality}_hi",
        "mse",
        "quantize_seconds",
    )
    rows = [{c: r.get(c) for c in cols} for r in sorted(trials, key=lambda r: r[quality])]
    print(format_table(rows))
    (run_dir / "table.md").write_text(_markdown(rows))
    plot = _plot_tpe(run_dir, trials, quality)
    return {
        "plot": str(plot),
        "trials": len(trials),
        f"best_{quality}": f"{best[quality]:.4g}",
        "best_max_scale": f"{best['max_scale']:.3g}",
        "best_weight_lr": f"{best['weight_lr']:.3g}",
        "best_quant_lr": f"{best['quant_lr']:.3g}",
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot_grid(run_dir: Path, rows: list[dict[str, Any]], quality: str) -> Path:
    """Quality vs bits, one line per method (with its CI), one panel per calibration size."""
    from methods.plotting import colormap, new_figure, save_figure

    calibs = sorted({r["calib"] for r in rows})
    fig, axes = new_figure(1, len(calibs), figsize=(5.5 * len(calibs), 4), squeeze=False, sharey=True)
    colours = colormap("tab10")
    bit_order = list(dict.fromkeys(r["bits"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, calib in zip(axes[0], calibs, strict=True):
        for k, method in enumerate(methods):
            pts = [
                r for r in rows if r["calib"] == calib and r["method"] == method and r[quality] is not None
            ]
            pts.sort(key=lambda r: bit_order.index(r["bits"]))
            xs = [bit_order.index(r["bits"]) for r in pts]
            ys = [r[quality] for r in pts]
            lo = [
                r[quality] - (r[f"{quality}_lo"] if r[f"{quality}_lo"] is not None else r[quality])
                for r in pts
            ]
            hi = [
                (r[f"{quality}_hi"] if r[f"{quality}_hi"] is not None else r[quality]) - r[quality]
                for r in pts
            ]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], marker="o", ms=4, lw=1, capsize=2, label=method, color=colours(k % 10)
            )
        fp = next((r["fp_fd"] for r in rows if r.get("fp_fd") is not None), None)
        if quality == "fd" and fp is not None:
            ax.axhline(fp, color="k", ls="--", lw=0.8, label="FP")
        ax.set_xticks(range(len(bit_order)), bit_order)
        ax.set_xlabel("bits")
        ax.set_ylabel("digit-FD vs real test digits" if quality == "fd" else "MSE vs FP samples")
        ax.set_title(f"{calib} calibration samples", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("DilateQuant sweep: quality vs bits per method (95 % CI)")
    fig.tight_layout()
    return save_figure(fig, run_dir / "fd_vs_bits.png", dpi=110)


def _plot_tpe(run_dir: Path, trials: list[dict[str, Any]], quality: str) -> Path:
    from methods.plotting import new_figure, save_figure

    fig, axes = new_figure(1, 3, figsize=(12, 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], ("max_scale", "weight_lr", "quant_lr"), strict=True):
        ax.scatter([r[key] for r in trials], [r[quality] for r in trials], s=16)
        ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(quality)
    fig.suptitle("DilateQuant TPE study (WD cap and learning rates)")
    fig.tight_layout()
    return save_figure(fig, run_dir / "tpe_study.png", dpi=110)


def _add_arguments(p) -> None:
    add_model_device_arguments(p, "the workers")


def _config_from_args(args) -> list[str]:
    return model_device_overrides(args)


def main(argv: list[str] | None = None) -> int:
    return run_sweep(
        argv,
        sweep="dilatequant_sweep",
        description=__doc__.splitlines()[0],
        config_cls=DilateQuantSweepConfig,
        build_spec=build_spec,
        report=report,
        add_arguments=_add_arguments,
        config_from_args=_config_from_args,
    )


if __name__ == "__main__":
    sys.exit(main())
