"""SAQ-SAM sweep: method x bits x calibration images on SAM calibration workers, or the Optuna TPE
study over the per-block clip ratios, side by side with PCC's analytic choice.

    python sweeps/saqsam_sweep.py                                     # the method x bits grid
    python sweeps/saqsam_sweep.py --set 'methods=["ptq4sam","saqsam"]' --set 'bits=["w4a4"]' --set reps=3
    python sweeps/saqsam_sweep.py --set mode='"clips"' --set study.n_trials=24   # the clip-ratio study

Every trial quantizes the tiny `sam-shapes` model (`actors.sam_calibration.SamCalibrationTask`,
which loads the model, the calibration pool and the held-out images once per actor) with one
method of the baseline table (`methods.saqsam.PRESETS`: minmax, percentile, mse, qdrop, ptq4sam,
saqsam_star = PCC only, saqsam) under one config, and scores mask AP with box and point prompts
(pycocotools), AP50, AP75, mean IoU, focus IoU per decoder block, the chosen clips and the
calibration wall time.

`mode="clips"`: the search space is one clip ratio per decoder attention (`clip_0` .. `clip_6`,
each one of the 29 official values, applied to the block's four q/k-path quantizers, no
reconstruction = SAQ-SAM* with the clips chosen by Optuna instead of by PCC). The objective is box
mask AP on a validation split (seeds disjoint from calibration and test), calibration on the
training split only; every row also carries PCC's clips and validation AP on the same calibration
images. The sampler is TPE (a `study.sampler` left at 'grid' is replaced by 'tpe' in this mode).

Defaults are sized for a 2-core machine (grid: 7 methods x 3 bits x 1 calibration size = 21 trials,
`task.iters=20` reconstruction iterations per unit; the papers use 2 000-20 000 on COCO).
Writes `table.md` and `ap_vs_bits.png` (grid) or `clip_study.png` into the run directory; the
last line is `summary: key=value ...`.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/saqsam_sweep.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.sam_calibration import SAM_BITS, SamCalibrationTaskConfig
from actors.task import task_factory
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError
from methods.quant.bits import canonical_bits_list
from methods.saqsam import OFFICIAL_CLIPS, PRESETS

MODES = ("grid", "clips")
N_DECODER_ATTENTIONS = 7  # sam-shapes: two two-way blocks x 3 attentions + the final token->image one
TABLE_COLUMNS = ("bits", "calib", "method", "n", "box_ap", "box_ap_std", "box_ap50", "box_ap75", "point_ap",
                 "box_iou", "point_iou", "focus_iou", "calib_s")


@dataclass(frozen=True)
class SaqSamSweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="evaluator_cpu1")
    task: SamCalibrationTaskConfig = field(default_factory=SamCalibrationTaskConfig)
    mode: str = "grid"
    methods: tuple[str, ...] = tuple(PRESETS)
    bits: tuple[str, ...] = ("w4a4", "w5a5", "w6a6")
    calib_sizes: tuple[int, ...] = (8,)
    reps: int = 1
    clip_bits: str = "w4a4"
    clip_calib: int = 8
    clip_values: tuple[float, ...] = OFFICIAL_CLIPS
    version: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}.")
        unknown = [m for m in self.methods if m not in PRESETS]
        if unknown or not self.methods:
            raise ConfigError(f"methods must be a non-empty subset of {list(PRESETS)}, got "
                              f"{list(self.methods)}.")
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **SAM_BITS))
        object.__setattr__(self, "clip_bits", canonical_bits_list([self.clip_bits], **SAM_BITS)[0])
        if not self.bits:
            raise ConfigError("bits must be a non-empty list like ['w4a4', 'w6a6'], got [].")
        sizes = (*self.calib_sizes, self.clip_calib)
        if not self.calib_sizes or any(not isinstance(c, int) or c < 1 for c in sizes):
            raise ConfigError(f"calib_sizes and clip_calib must be positive integers, got "
                              f"{list(self.calib_sizes)}, {self.clip_calib}.")
        if self.reps < 1:
            raise ConfigError(f"reps must be >= 1, got {self.reps}.")
        clips = tuple(self.clip_values)
        object.__setattr__(self, "clip_values", clips)
        if not clips or any(not isinstance(c, (int, float)) or not 0.5 < c <= 1.0 for c in clips):
            raise ConfigError(f"clip_values must be percentiles in (0.5, 1] (inside (0, 1]; the official "
                              f"list is 0.85 .. 0.99999), got {list(clips)}.")
        if self.mode == "clips" and self.study.sampler == "grid":
            study = replace(self.study, sampler="tpe", n_trials=self.study.n_trials or 12)
            object.__setattr__(self, "study", study)


def build_spec(cfg: SaqSamSweepConfig) -> StudySpec:
    if cfg.mode == "grid":
        space: dict[str, tuple] = {
            "bits": ("categorical", list(cfg.bits)),
            "calib": ("categorical", list(cfg.calib_sizes)),
            "method": ("categorical", list(cfg.methods)),
            "rep": ("categorical", list(range(cfg.reps))),
        }
        objectives = ("box_ap",)
    else:
        space = {"method": ("categorical", ["clip_study"]), "bits": ("categorical", [cfg.clip_bits]),
                 "calib": ("categorical", [cfg.clip_calib]), "rep": ("categorical", [0]),
                 **{f"clip_{i}": ("categorical", list(cfg.clip_values)) for i in range(N_DECODER_ATTENTIONS)}}
        objectives = ("val_box_ap",)
    return StudySpec(sweep="saqsam_sweep", objectives=objectives, directions=("maximize",), space=space,
                     task_factory=task_factory("sam_calibration", cfg.task), study=cfg.study)


def aggregate(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (bits, calib, method): mean (and std of box AP) over replicates."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in trials:
        groups.setdefault((r["bits"], r["calib"], r["method"]), []).append(r)
    out = []
    for (bits, calib, method), rs in groups.items():
        def mean(key: str, rows=rs) -> float:
            return statistics.mean(float(r[key]) for r in rows)

        ap = [float(r["box_ap"]) for r in rs]
        out.append({"bits": bits, "calib": calib, "method": method, "n": len(rs), "box_ap": mean("box_ap"),
                    "box_ap_std": statistics.stdev(ap) if len(ap) > 1 else 0.0,
                    "box_ap50": mean("box_ap50"), "box_ap75": mean("box_ap75"), "point_ap": mean("point_ap"),
                    "box_iou": mean("box_iou"), "point_iou": mean("point_iou"),
                    "focus_iou": mean("mean_focus_iou"), "calib_s": mean("calib_seconds"),
                    "w_bits": rs[0]["w_bits"], "fp_box_ap": rs[0]["fp_box_ap"]})
    order = list(PRESETS)
    return sorted(out, key=lambda r: (-r["w_bits"], r["calib"], order.index(r["method"])))


def report(run_dir: Path, cfg: SaqSamSweepConfig, outcome: Any) -> dict[str, Any]:
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    if not trials:
        print("(no completed trials)")
        return {}
    return _report_grid(run_dir, trials) if cfg.mode == "grid" else _report_clips(run_dir, trials)


def _report_grid(run_dir: Path, trials: list[dict[str, Any]]) -> dict[str, Any]:
    rows = aggregate(trials)
    table = [{k: r[k] for k in TABLE_COLUMNS} for r in rows]
    print(format_table(table))
    (run_dir / "table.md").write_text(_markdown(table))
    plot = _plot_grid(run_dir, rows)
    out: dict[str, Any] = {"plot": str(plot), "fp_box_ap": f"{rows[0]['fp_box_ap']:.4f}"}
    for bits in dict.fromkeys(r["bits"] for r in rows):
        at = [r for r in rows if r["bits"] == bits]
        best = max(at, key=lambda r: r["box_ap"])
        out[f"{bits}.best"] = f"{best['method']}:{best['box_ap']:.4f}"
        for name in ("ptq4sam", "saqsam"):
            hit = next((r for r in at if r["method"] == name), None)
            if hit is not None:
                out[f"{bits}.{name}"] = f"{hit['box_ap']:.4f}"
    return out


def _report_clips(run_dir: Path, trials: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(trials, key=lambda r: r["val_box_ap"])
    clips = [best[f"clip_{i}"] for i in range(N_DECODER_ATTENTIONS)]
    lines = ["| | val box AP | test box AP | clips (per decoder attention) |", "|---|---|---|---|",
             f"| Optuna TPE best of {len(trials)} | {best['val_box_ap']:.4f} | {best['box_ap']:.4f} | "
             f"{', '.join(f'{c:g}' for c in clips)} |",
             f"| PCC (analytic) | {best['pcc_val_box_ap']:.4f} | | {best['pcc_clips']} |"]
    print("\n".join(lines))
    (run_dir / "table.md").write_text("\n".join(lines) + "\n")
    plot = _plot_clips(run_dir, trials)
    return {"plot": str(plot), "trials": len(trials), "tpe_val_box_ap": f"{best['val_box_ap']:.4f}",
            "tpe_test_box_ap": f"{best['box_ap']:.4f}", "pcc_val_box_ap": f"{best['pcc_val_box_ap']:.4f}",
            "tpe_clips": "/".join(f"{c:g}" for c in clips)}


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot_grid(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Box mask AP vs bits, one line per method (first calibration size)."""
    from methods.plotting import colormap, new_figure, save_figure

    calib = min(r["calib"] for r in rows)
    sub = [r for r in rows if r["calib"] == calib]
    bits = sorted({(r["w_bits"], r["bits"]) for r in sub})
    fig, axes = new_figure(1, 1, figsize=(6, 4), squeeze=False)
    ax, colours = axes[0][0], colormap("tab10")
    for k, method in enumerate(m for m in PRESETS if any(r["method"] == m for r in sub)):
        pts = sorted((r["w_bits"], r["box_ap"], r["box_ap_std"]) for r in sub if r["method"] == method)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=4,
                    lw=1, capsize=2, label=method, color=colours(k % 10))
    ax.axhline(sub[0]["fp_box_ap"], color="k", ls="--", lw=0.8, label="FP32")
    ax.set_xticks([b[0] for b in bits], [b[1] for b in bits])
    ax.set_xlabel("bits")
    ax.set_ylabel("mask AP (box prompts)")
    ax.set_title(f"sam-shapes, {calib} calibration images", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, run_dir / "ap_vs_bits.png", dpi=110)


def _plot_clips(run_dir: Path, trials: list[dict[str, Any]]) -> Path:
    from methods.plotting import new_figure, save_figure

    fig, axes = new_figure(1, 1, figsize=(6, 3.6), squeeze=False)
    ax = axes[0][0]
    order = sorted(trials, key=lambda r: r["trial_number"])
    ax.plot([r["trial_number"] for r in order], [r["val_box_ap"] for r in order], "o-", ms=3,
            label="TPE trial")
    ax.axhline(order[0]["pcc_val_box_ap"], color="tab:red", ls="--", label="PCC's clips")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation mask AP (box prompts)")
    ax.set_title("clip-ratio study (W/A bits as configured, no reconstruction)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, run_dir / "clip_study.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_sweep(argv, sweep="saqsam_sweep", description=__doc__.splitlines()[0],
                     config_cls=SaqSamSweepConfig, build_spec=build_spec, report=report)


if __name__ == "__main__":
    sys.exit(main())
