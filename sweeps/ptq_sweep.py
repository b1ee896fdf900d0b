"""PTQ sweep: model x method x bit width x calibration size on calibration-worker actors.

    python sweeps/ptq_sweep.py                                   # default grid, ~3-4 min on 2 cores
    python sweeps/ptq_sweep.py --set 'methods=["minmax","qdrop","mgrq"]' --set 'bits=["w4a4","w2a2"]'
    python sweeps/ptq_sweep.py --set task.iters=200 --set reps=3 --set study.profile='"calibrator_cpu2"'

Every trial quantizes a zoo digit classifier (`cnn-bn-digits`, `vit-digits`) with one method of
`methods.ptq.PTQ_METHODS` on `calib` training images and measures test top-1 (objective), on a
`actors.calibration_worker.CalibrationTask` that loads the models and the digits splits once per
actor. Rows also carry calibration wall / CPU seconds, mean weight and activation bits from the
bits report, MACs, BOPs and the BOP-equivalent bit width. `reps` replicates draw other calibration
subsets; at one replicate every method sees the same images (paired comparison).

Defaults (sized to finish in about 3-4 minutes on a 2-core machine, Ray start included): both
models, all 8 methods, w4a4 / w3a3 / w2a4, calibration sizes 32 and 128, one replicate (96 trials);
reconstruction methods run `task.iters=40` iterations per unit at batch 32 and AdaRound lr 1e-2 (the
papers use 20 000 iterations on ImageNet; this is a check of direction, not of magnitude); first
and last layer at 8 bits. Profile: `evaluator_cpu1` with 2 actors by default, because the
`calibrator_cpu2` profile (2 CPUs, 2 torch threads per actor) fits only one actor on a 2-core
laptop, and on these tiny models intra-op threads do not pay: measured on a shared 2-core machine,
the default grid took 2 min 9 s wall (110 calibration CPU-seconds) with two `evaluator_cpu1` actors
and 6 min 9 s (317 CPU-seconds) with one `calibrator_cpu2` actor, with identical results. On a
bigger machine or a cluster use `--set study.profile='"calibrator_cpu2"'`.
Writes `accuracy_vs_bits.png` and `table.md` into the run directory; the last line is
`summary: key=value ...`.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/ptq_sweep.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.calibration_worker import MODELS, PTQ_BITS, CalibrationTaskConfig
from actors.task import task_factory
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError
from methods.ptq import PTQ_METHODS
from methods.quant.bits import canonical_bits_list

OBJECTIVE_DIRECTIONS = {"top1": "maximize", "bops": "minimize", "calib_seconds": "minimize"}
METHODS = ("minmax", "percentile", "mse", "repq_vit", "adaround", "brecq", "qdrop", "mgrq")
SHORT = {"cnn-bn-digits": "cnn", "vit-digits": "vit"}
TABLE_COLUMNS = ("model", "bits", "calib", "method", "n", "top1", "top1_std", "fp_top1", "calib_s",
                 "mean_w_bits", "mean_a_bits", "bop_bits", "mbops")


@dataclass(frozen=True)
class PTQSweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="evaluator_cpu1")
    task: CalibrationTaskConfig = field(default_factory=CalibrationTaskConfig)
    models: tuple[str, ...] = MODELS
    methods: tuple[str, ...] = METHODS
    bits: tuple[str, ...] = ("w4a4", "w3a3", "w2a4")
    calib_sizes: tuple[int, ...] = (32, 128)
    reps: int = 1
    objectives: tuple[str, ...] = ("top1",)
    version: int = 1

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVE_DIRECTIONS]
        if unknown or not self.objectives:
            raise ConfigError(f"objectives must be a non-empty subset of {list(OBJECTIVE_DIRECTIONS)}, "
                              f"got {list(self.objectives)}.")
        bad_models = [m for m in self.models if m not in MODELS]
        if bad_models or not self.models:
            raise ConfigError(
                f"models must be a non-empty subset of {list(MODELS)}, got {list(self.models)}."
            )
        if not self.methods:
            raise ConfigError(f"methods must not be empty; choose from {PTQ_METHODS.names()}.")
        for m in self.methods:
            PTQ_METHODS.get(m)  # raises UnknownNameError listing the known methods
        # canonical spelling, so rows say 'w4a4'; 'fp' is refused (the FP top-1 is on every row)
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **PTQ_BITS))
        if not self.bits:
            raise ConfigError("bits must be a non-empty list like ['w4a4', 'w2a4'], got [].")
        if not self.calib_sizes or any(not isinstance(c, int) or c < 1 for c in self.calib_sizes):
            raise ConfigError(f"calib_sizes must be positive integers, got {list(self.calib_sizes)}.")
        if self.reps < 1:
            raise ConfigError(f"reps must be >= 1, got {self.reps}.")


def build_spec(cfg: PTQSweepConfig) -> StudySpec:
    space = {
        "model": ("categorical", list(cfg.models)),
        "bits": ("categorical", list(cfg.bits)),
        "calib": ("categorical", list(cfg.calib_sizes)),
        "method": ("categorical", list(cfg.methods)),
        "rep": ("categorical", list(range(cfg.reps))),
    }
    return StudySpec(
        sweep="ptq_sweep",
        objectives=tuple(cfg.objectives),
        directions=tuple(OBJECTIVE_DIRECTIONS[o] for o in cfg.objectives),
        space=space,
        task_factory=task_factory("calibration", replace(cfg.task, models=tuple(cfg.models))),
        study=cfg.study,
    )


def aggregate(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, bits, calib, method): mean (and std) over replicates."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in trials:
        groups.setdefault((r["model"], r["bits"], r["calib"], r["method"]), []).append(r)
    out = []
    for (model, bits, calib, method), rs in groups.items():
        acc = [r["top1"] for r in rs]
        out.append({
            "model": model, "bits": bits, "calib": calib, "method": method, "n": len(rs),
            "top1": statistics.mean(acc), "top1_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "fp_top1": rs[0]["fp_top1"], "calib_s": statistics.mean(r["calib_seconds"] for r in rs),
            "mean_w_bits": rs[0]["mean_w_bits"], "mean_a_bits": rs[0]["mean_a_bits"],
            "bop_bits": rs[0]["bop_bits"], "mbops": rs[0]["bops"] / 1e6,
            "w_bits": rs[0]["w_bits"], "a_bits": rs[0]["a_bits"],
        })
    return sorted(out, key=lambda r: (r["model"], -r["w_bits"] * r["a_bits"], r["bits"], r["calib"],
                                      _method_rank(r["method"])))


def _method_rank(name: str) -> int:
    return METHODS.index(name) if name in METHODS else len(METHODS)


def report(run_dir: Path, cfg: PTQSweepConfig, outcome: Any) -> dict[str, Any]:
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    if not trials:
        print("(no completed trials)")
        return {}
    rows = aggregate(trials)
    table = [{k: r[k] for k in TABLE_COLUMNS} for r in rows]
    print(format_table(table))
    (run_dir / "table.md").write_text(_markdown(table))
    plot = _plot(run_dir, rows)
    print(f"plot: {plot}")
    out: dict[str, Any] = {"plot": str(plot), "table": str(run_dir / "table.md"),
                           "calib_cpu_seconds": f"{sum(r['calib_cpu_seconds'] for r in trials):.1f}"}
    for model in dict.fromkeys(r["model"] for r in rows):
        short = SHORT.get(model, model)
        out[f"{short}.fp"] = f"{rows[[r['model'] for r in rows].index(model)]['fp_top1']:.4f}"
        top_calib = max(r["calib"] for r in rows if r["model"] == model)
        for bits in dict.fromkeys(r["bits"] for r in rows if r["model"] == model):
            at = [r for r in rows if r["model"] == model and r["bits"] == bits and r["calib"] == top_calib]
            best = max(at, key=lambda r: r["top1"])
            out[f"{short}.{bits}.best"] = f"{best['method']}:{best['top1']:.4f}"
            minmax = next((r for r in at if r["method"] == "minmax"), None)
            if minmax is not None:
                out[f"{short}.{bits}.minmax"] = f"{minmax['top1']:.4f}"
    return out


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Top-1 vs bit setting (ordered by BOPs), one panel per model x calibration size."""
    from methods.plotting import colormap, new_figure, save_figure

    models = list(dict.fromkeys(r["model"] for r in rows))
    calibs = sorted({r["calib"] for r in rows})
    fig, axes = new_figure(len(calibs), len(models), figsize=(5 * len(models), 3.4 * len(calibs)),
                           squeeze=False, sharey=True)
    methods = sorted({r["method"] for r in rows}, key=_method_rank)
    colors = colormap("tab10")  # explicit: a style's shorter colour cycle would repeat colours
    for i, calib in enumerate(calibs):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sub = [r for r in rows if r["model"] == model and r["calib"] == calib]
            order = sorted({(r["bits"], r["mbops"]) for r in sub}, key=lambda t: -t[1])
            xs = {b: k for k, (b, _) in enumerate(order)}
            for k, m in enumerate(methods):
                pts = sorted((xs[r["bits"]], r["top1"], r["top1_std"]) for r in sub if r["method"] == m)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                                marker="o", ms=4, lw=1, capsize=2, label=m, color=colors(k % 10))
            if sub:
                ax.axhline(sub[0]["fp_top1"], color="k", ls="--", lw=0.8, label="FP32")
            ax.set_xticks(range(len(order)), [f"{b}\n{mb:.1f} MBOPs" for b, mb in order], fontsize=8)
            ax.set_title(f"{model}, {calib} calibration images", fontsize=9)
            ax.set_ylabel("test top-1")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.suptitle("PTQ sweep: top-1 vs bit width (first/last layer 8 bit)")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return save_figure(fig, run_dir / "accuracy_vs_bits.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_sweep(argv, sweep="ptq_sweep", description=__doc__.splitlines()[0],
                     config_cls=PTQSweepConfig, build_spec=build_spec, report=report)


if __name__ == "__main__":
    sys.exit(main())
