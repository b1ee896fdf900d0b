"""Benchmark: the SAQ-SAM baseline table, its ablations, the cost of layer skipping and (on purpose)
the evaluation bug's inflated row, on sam-shapes (pure Python, no Ray).

    python sweeps/bench_saqsam.py                                   # W4A4 + W6A6, 3 seeds, ablations
    python sweeps/bench_saqsam.py --set eval.buggy_drop=true        # + the bug-inflated rows
    python sweeps/bench_saqsam.py --set seeds=5 --set 'bits=["w4a4"]' --set task.iters=100

Baselines under one config (same observers where the method does not define its own, same
iterations, same calibration images per seed; `methods.saqsam.PRESETS`): min-max, percentile, MSE,
QDrop, PTQ4SAM, SAQ-SAM* (PCC only) and SAQ-SAM, at each bit setting, `seeds` seeds (seed s: the
calibration draw `task.calib_seed + 1000 s`, method seed s, so every method sees the same images:
paired). Ablations of SAQ-SAM: PCC off, PAR off (plain stage-output MSE), layer skipping off
(stage output through the remaining FP blocks), with the block evaluations and seconds per
reconstruction step. Metric: held-out mask AP with box prompts (pycocotools), also point prompts.

Claims (methods.metrics.stats): paired differences in AP points (x100) with their 95 % t-interval
and the noise floor (`spread_floor` of the baseline arm's own seed-to-seed spread) beside each:
`<bits>.saqsam_vs_ptq4sam` (the paper's headline, +11.7 mAP for SAM-B W4A4 [paper]; the tiny
analogue), `saqsam_vs_qdrop`, `saqsam_star_vs_mse` (PCC against the MSE clip), the three
ablations, and with `eval.buggy_drop=true` `<method>_bug_inflation` (buggy minus clean).
An effect inside the noise is "not distinguishable". Last line: `summary: key=value ...`.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_saqsam.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from actors.sam_calibration import SAM_BITS, SamCalibrationTask, SamCalibrationTaskConfig
from cluster.bench_cli import BenchRun, run_bench
from methods.errors import ConfigError
from methods.metrics.stats import mean_ci, paired_difference, spread_floor
from methods.quant.bits import canonical_bits_list, parse_bits
from methods.saqsam import PRESETS

ABLATIONS = {"saqsam-pcc": {"pcc": False}, "saqsam-par": {"par": False}, "saqsam-skip": {"layer_skip": False}}
BUG_METHODS = ("qdrop", "ptq4sam", "saqsam")
CLAIMS = (("saqsam", "ptq4sam", "SAQ-SAM over PTQ4SAM (paper: +11.7 mAP, SAM-B W4A4)"),
          ("saqsam", "qdrop", "SAQ-SAM over QDrop"),
          ("saqsam_star", "mse", "PCC clipping over the MSE clip, no reconstruction"),
          ("saqsam", "saqsam-pcc", "ablation: PCC"),
          ("saqsam", "saqsam-par", "ablation: PAR (vs plain stage-output MSE)"),
          ("saqsam", "saqsam-skip", "ablation: layer skipping (accuracy cost of skipping)"))


@dataclass(frozen=True)
class EvalConfig:
    buggy_drop: bool = False  # add the bug-inflated rows (the official codes' drop probability left at 0.5)
    version: int = 1


@dataclass(frozen=True)
class SaqSamBenchConfig:
    task: SamCalibrationTaskConfig = field(
        default_factory=lambda: SamCalibrationTaskConfig(test_images=64, val_images=1, iters=40))
    methods: tuple[str, ...] = tuple(PRESETS)
    bits: tuple[str, ...] = ("w4a4", "w6a6")
    seeds: int = 3
    calib: int = 8
    ablations: bool = True
    eval: EvalConfig = field(default_factory=EvalConfig)
    plot: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in PRESETS]
        if unknown or not self.methods:
            raise ConfigError(f"methods must be a non-empty subset of {list(PRESETS)}, got "
                              f"{list(self.methods)}.")
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **SAM_BITS))
        if not self.bits or self.seeds < 1 or self.calib < 1:
            raise ConfigError(f"need bits, seeds >= 1 and calib >= 1; got {list(self.bits)}, {self.seeds}, "
                              f"{self.calib}.")


def arms(cfg: SaqSamBenchConfig) -> list[tuple[str, str, dict, bool]]:
    """(arm name, preset, config overrides, buggy) for every arm the bench runs."""
    out = [(m, m, {}, False) for m in cfg.methods]
    if cfg.ablations and "saqsam" in cfg.methods:
        out += [(name, "saqsam", over, False) for name, over in ABLATIONS.items()]
    if cfg.eval.buggy_drop:
        out += [(f"{m}+bug", m, {}, True) for m in BUG_METHODS if m in cfg.methods]
    return out


def bench(cfg: SaqSamBenchConfig) -> dict[str, Any]:
    task = SamCalibrationTask(cfg.task)
    print(f"sam-shapes FP: box AP {task.fp['box_ap']:.4f}, point AP {task.fp['point_ap']:.4f} "
          f"on {cfg.task.test_images} held-out images", flush=True)
    rows = []
    for bits in cfg.bits:
        w, a = parse_bits(bits).wa
        for name, preset, over, buggy in arms(cfg):
            per_seed = [task.trial(preset, w, a, cfg.calib, s, overrides=over, buggy=buggy)[0]
                        for s in range(cfg.seeds)]
            row = {"bits": bits, "method": name, "seeds": per_seed}
            rows.append(row)
            ap = [r["box_ap"] for r in per_seed]
            seeds = ", ".join(f"{x:.3f}" for x in ap)
            print(f"  {bits} {name:12s} box AP {statistics.mean(ap):.4f} (seeds {seeds})"
                  f"  calib {statistics.mean(r['calib_seconds'] for r in per_seed):.1f}s", flush=True)
    return {"rows": rows, "fp": task.fp}


def _ci(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    e = mean_ci(values)
    return f"{e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]"


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{"bits": "fp32", "method": "-", "n": None, "box_ap (95% CI)": f"{res['fp']['box_ap']:.4f}",
            "point_ap": round(res["fp"]["point_ap"], 4), "box_ap50": round(res["fp"]["box_ap50"], 4),
            "box_ap75": round(res["fp"]["box_ap75"], 4), "box_iou": round(res["fp"]["box_iou"], 4),
            "focus_iou": None, "calib_s": None, "block_evals": None, "block_evals_saved": None,
            "s_per_step": None}]
    for r in res["rows"]:
        s = r["seeds"]

        def mean(key: str, seeds=s) -> float:
            return round(statistics.mean(float(x[key]) for x in seeds), 4)

        out.append({"bits": r["bits"], "method": r["method"], "n": len(s),
                    "box_ap (95% CI)": _ci([x["box_ap"] for x in s]), "point_ap": mean("point_ap"),
                    "box_ap50": mean("box_ap50"), "box_ap75": mean("box_ap75"), "box_iou": mean("box_iou"),
                    "focus_iou": mean("mean_focus_iou"), "calib_s": mean("calib_seconds"),
                    "block_evals": mean("block_evals"), "block_evals_saved": mean("block_evals_saved"),
                    "s_per_step": mean("recon_seconds_per_step")})
    return out


def claims(run: BenchRun, res: dict[str, Any]) -> dict[str, Any]:
    by = {(r["bits"], r["method"]): [100.0 * x["box_ap"] for x in r["seeds"]] for r in res["rows"]}
    pairs = list(CLAIMS) + [(f"{m}+bug", m, f"evaluation bug inflation of {m}") for m in BUG_METHODS]
    out: dict[str, Any] = {}
    for bits in dict.fromkeys(b for b, _ in by):
        for arm, base, what in pairs:
            a, b = by.get((bits, arm)), by.get((bits, base))
            if a is None or b is None or len(a) < 2:
                continue
            key = f"{bits}.{arm.replace('+bug', '_bug_inflation').replace('-', '_minus_')}"
            if not arm.endswith("+bug"):
                key = f"{bits}.{arm.replace('-', '_minus_')}_vs_{base.replace('-', '_minus_')}"
            out.update(run.claim(key, paired_difference(a, b), spread_floor(b),
                                 what=f"{what}, {bits}, AP points"))
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    from methods.plotting import new_figure, save_figure

    bits = list(dict.fromkeys(r["bits"] for r in res["rows"]))
    fig, axes = new_figure(1, len(bits), figsize=(7 * len(bits), 4), squeeze=False)
    for ax, b in zip(axes[0], bits, strict=True):
        rows = [r for r in res["rows"] if r["bits"] == b]
        names = [r["method"] for r in rows]
        means = [statistics.mean(x["box_ap"] for x in r["seeds"]) for r in rows]
        err = [statistics.stdev([x["box_ap"] for x in r["seeds"]]) if len(r["seeds"]) > 1 else 0
               for r in rows]
        ax.bar(range(len(rows)), means, yerr=err, color="tab:blue", alpha=0.8)
        ax.axhline(res["fp"]["box_ap"], color="k", ls="--", lw=1, label="FP32")
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("held-out mask AP (box prompts)")
        ax.set_title(f"sam-shapes {b}: mean ± std over seeds", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def body(run: BenchRun) -> dict[str, Any]:
    cfg: SaqSamBenchConfig = run.config
    torch.set_num_threads(1)
    from methods.quant.api import _timm_attention_cls

    _timm_attention_cls()  # import timm once, outside the first method's timed calibration
    t0 = time.perf_counter()
    res = bench(cfg)
    res["wall_s"] = time.perf_counter() - t0
    run.path("bench.json").write_text(json.dumps(res, indent=2, default=str))
    if cfg.plot:
        plot(res, run.path("ap_by_method.png"))
    run.table("box_ap", table_rows(res), f"held-out mask AP over {cfg.seeds} seed(s), mean and 95% t-CI")
    summary: dict[str, Any] = {"wall_s": f"{res['wall_s']:.0f}", "fp_box_ap": f"{res['fp']['box_ap']:.4f}"}
    for r in res["rows"]:
        summary[f"{r['bits']}.{r['method']}"] = f"{statistics.mean(x['box_ap'] for x in r['seeds']):.4f}"
    if cfg.seeds < 2:
        print("one seed: no intervals, no claims (run --set seeds=3 or more)")
    summary.update(claims(run, res))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_bench(argv, bench="bench_saqsam", description=__doc__.splitlines()[0],
                     config_cls=SaqSamBenchConfig, body=body)


if __name__ == "__main__":
    sys.exit(main())
