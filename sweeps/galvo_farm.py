"""Virtual hardware farm: N virtual galvo rigs as Ray actors, rig + method parameters swept by Optuna.

    python sweeps/galvo_farm.py                              # search rig, TPE, recall ↑ vs time ↓
    python sweeps/galvo_farm.py --sampler grid               # every search method × shot budget
    python sweeps/galvo_farm.py --rig scanner                # scanner, TPE, RMSE ↓ vs calibration time ↓
    python sweeps/galvo_farm.py --rig scanner --sampler grid # calibration tiers × stripe noise
    python sweeps/galvo_farm.py --rigs 4 --max-trials 80     # a farm of 4 rigs

Rigs: "search" — hybrid wide-area search ("A Novel Wide-Area Multiobject Detection System with
High-Probability Region Searching", arXiv 2405.04589); "scanner" — multi-galvanometer light-section
3D scanner ("A Novel Dynamic Light-Section 3D Reconstruction Method for Wide-Range Sensing",
arXiv 2403.01374). The physics and the methods are in sims/rigs and methods (ppm_search, galvo3d);
this file only decides what to try. All of it is our design [inferred]:

- one actor = one virtual rig (actors/galvo_rig.py, profile `rig_virtual`: 1 CPU + 1 `galvo_rig`);
  an embedded local cluster is started with `galvo_rig` = N (N = --rigs = study.actors) and, when
  N exceeds the cores, N logical CPUs (a rig is a single-threaded simulation, so rigs time-share);
- Optuna mode (default TPE; nsga2/random too): the rig's design knobs from its `search_space()`
  plus the method's (search) or calibration's (scanner) `search_space()`, multi-objective:
  search recall ↑ vs simulated search time ↓ (shots per round is a knob, so the front is the
  recall a rig buys per second); scanner RMSE ↓ vs calibration wall time ↓. By default only design
  knobs are tuned (search: galvo settle time and settle model, camera rate, detector latency; the
  PPM-search budget split, sampling range and the segmenter-confidence threshold); detector or
  noise quality (det_min_snr, conf_threshold, speckle_contrast) would just be driven to their best
  value; add them with --set search.rig_params=[...] to see their weight. The search rig works
  from rendered pixels (issue 19): planning and segmentation are charged to its clock;
- grid mode (reproducible): search methods × budgets on the default rig; scanner calibration
  tiers × laser-speckle contrast of the rendered stripe images (with the static-camera baseline);
  the scanner calibrates from stripe centres extracted from rendered pixels (issue 19), and its
  stripe-extraction parameters (extractor, sigma, centroid window/threshold) are tuned by default;
- each search trial averages `scenes` scenes; with `paired` (default) every trial meets the same
  scenes (seeded from study.seed), so methods and knobs are compared on common random numbers;
- rows: one trial row per trial (all scene means, the rig resource the actor held) and, for the
  search rig, `curve` rows (mean recall and time at evenly spaced shot counts).
Plots: recall vs time per method (or per Pareto trial), objective vs each swept parameter,
scanner RMSE vs stripe noise per tier; a table; the last line is `summary: ...`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # `python sweeps/galvo_farm.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from actors.galvo_rig import RIG_PREFIX, GalvoRigTask, GalvoRigTaskConfig, with_overrides
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError, did_you_mean
from methods.ppm_search import SEARCH_METHODS
from sims.rigs.scanner_rig import CalibConfig, ScannerRigConfig
from sims.rigs.search_rig import SearchRigConfig

SWEEP = "galvo_farm"
DIRECTIONS = {
    "search": {"recall": "maximize", "total_time_s": "minimize", "recall_localised": "maximize",
               "loc_err_v": "minimize", "system_fps": "maximize"},
    "scanner": {"rmse_mm": "minimize", "calib_wall_s": "minimize", "max_err_mm": "minimize",
                "calib_nfev": "minimize"},
}


def _pick(space: dict[str, tuple], names: tuple[str, ...], what: str) -> dict[str, tuple]:
    bad = [n for n in names if n not in space]
    if bad:
        raise ConfigError(f"{what} {bad[0]!r} is not in its search_space(). {did_you_mean(bad[0], space)}")
    return {n: space[n] for n in names}


@dataclass(frozen=True)
class SearchFarmConfig:
    """Search rig. Grid: methods × budgets. Optuna: `method`, rig_params, method_params, budget range."""

    methods: tuple[str, ...] = ("raster", "uniform", "ppm", "ppm_search")
    budgets: tuple[int, ...] = (60, 145)
    method: str = "ppm_search"
    rig_params: tuple[str, ...] = ("settle_s", "settle_model", "camera_fps", "detect_s")
    method_params: tuple[str, ...] = ("round1_frac", "n_rounds", "focus_frac", "k_sigma", "gamma",
                                      "seg_threshold")
    budget_range: tuple[int, ...] = (40, 290)  # (low, high); `tuple[int, int]` trips cluster.config
    scenes: int = 4
    paired: bool = True
    curve_points: int = 20
    rig: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    objectives: tuple[str, ...] = ("recall", "total_time_s")
    trials: int = 40  # Optuna trials when study.n_trials is unset
    version: int = 1

    def __post_init__(self) -> None:
        for name in (*self.methods, self.method, *self.method_overrides):
            SEARCH_METHODS.get(name)  # unknown names list the known ones
        if not self.methods or not self.budgets or min(self.budgets) < 1:
            raise ConfigError(f"Need non-empty methods and budgets ≥ 1; received {self.methods}, "
                              f"{self.budgets}.")
        if len(self.budget_range) != 2 or not 1 <= self.budget_range[0] <= self.budget_range[1]:
            raise ConfigError(f"budget_range must be (low, high) with 1 ≤ low ≤ high; received "
                              f"{self.budget_range}.")
        _pick(SearchRigConfig.search_space(), self.rig_params, "search.rig_params entry")
        _pick(SEARCH_METHODS.get(self.method).config_cls.search_space(), self.method_params,
              f"search.method_params entry (method {self.method})")
        with_overrides(SearchRigConfig, SearchRigConfig(), self.rig, "rig")
        for name, over in self.method_overrides.items():
            cls = SEARCH_METHODS.get(name).config_cls
            with_overrides(cls, cls(), dict(over), f"{name} method")
        _check_common(self, "search")


@dataclass(frozen=True)
class ScannerFarmConfig:
    """Scanner rig. Grid: tiers × speckle_contrasts. Optuna: rig_params, calib_params."""

    tiers: tuple[str, ...] = ("staged", "joint", "all")
    speckle_contrasts: tuple[float, ...] = (0.05, 0.2, 0.5)  # of the rendered stripe images
    rig_params: tuple[str, ...] = ("laser_baseline_mm",)
    calib_params: tuple[str, ...] = ("n_joint_points", "n_camera_points", "tiers", "joint_mode", "extractor",
                                     "extractor_sigma_px", "centroid_half_window", "centroid_threshold")
    seeds: int = 1
    paired: bool = True
    static_baseline: bool = True
    rig: dict[str, Any] = field(default_factory=dict)
    calib: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[str, ...] = ("rmse_mm", "calib_wall_s")
    trials: int = 12
    version: int = 1

    def __post_init__(self) -> None:
        for t in self.tiers:
            CalibConfig(tiers=t)
        bad = not self.speckle_contrasts or min(self.speckle_contrasts) < 0
        if not self.tiers or bad or self.seeds < 1:
            raise ConfigError(f"Need non-empty tiers, speckle_contrasts ≥ 0 and seeds ≥ 1; received "
                              f"{self.tiers}, {self.speckle_contrasts}, {self.seeds}.")
        _pick(ScannerRigConfig.search_space(), self.rig_params, "scanner.rig_params entry")
        _pick(CalibConfig.search_space(), self.calib_params, "scanner.calib_params entry")
        with_overrides(ScannerRigConfig, ScannerRigConfig(), self.rig, "rig")
        with_overrides(CalibConfig, CalibConfig(), self.calib, "calibration")
        _check_common(self, "scanner")


def _check_common(cfg: Any, rig: str) -> None:
    bad = [o for o in cfg.objectives if o not in DIRECTIONS[rig]]
    if bad or not cfg.objectives:
        raise ConfigError(f"{rig}.objectives must be a non-empty subset of {list(DIRECTIONS[rig])}; "
                          f"received {list(cfg.objectives)}.")
    if cfg.trials < 1:
        raise ConfigError(f"{rig}.trials must be ≥ 1; received {cfg.trials}.")


@dataclass(frozen=True)
class GalvoFarmConfig:
    study: StudyConfig = StudyConfig(sampler="tpe", actors=2, profile="rig_virtual")
    rig: Literal["search", "scanner"] = "search"
    search: SearchFarmConfig = SearchFarmConfig()
    scanner: ScannerFarmConfig = ScannerFarmConfig()
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"{SWEEP} config version 1 expected; received {self.version}.")
        if self.rig not in DIRECTIONS:
            raise ConfigError(f"rig must be one of {list(DIRECTIONS)}; received {self.rig!r}.")


# -- spec ------------------------------------------------------------------------------------
def _prefixed(space: dict[str, tuple]) -> dict[str, tuple]:
    return {RIG_PREFIX + k: v for k, v in space.items()}


def search_space(cfg: GalvoFarmConfig) -> dict[str, tuple]:
    grid = cfg.study.sampler == "grid"
    if cfg.rig == "search":
        s = cfg.search
        if grid:
            return {"method": ("categorical", list(s.methods)), "budget": ("categorical", list(s.budgets))}
        method_space = SEARCH_METHODS.get(s.method).config_cls.search_space()
        return {**_prefixed(_pick(SearchRigConfig.search_space(), s.rig_params, "rig param")),
                "budget": ("int", *s.budget_range), **_pick(method_space, s.method_params, "method param")}
    s = cfg.scanner
    if grid:
        return {"tiers": ("categorical", list(s.tiers)),
                RIG_PREFIX + "speckle_contrast": ("categorical", list(s.speckle_contrasts))}
    return {**_prefixed(_pick(ScannerRigConfig.search_space(), s.rig_params, "rig param")),
            **_pick(CalibConfig.search_space(), s.calib_params, "calib param")}


def task_config(cfg: GalvoFarmConfig) -> GalvoRigTaskConfig:
    if cfg.rig == "search":
        s = cfg.search
        return GalvoRigTaskConfig(rig="search", rig_overrides=dict(s.rig), method=s.method,
                                  method_overrides={k: dict(v) for k, v in s.method_overrides.items()},
                                  scenes=s.scenes, scene_seed=cfg.study.seed if s.paired else None,
                                  curve_points=s.curve_points)
    s = cfg.scanner
    calib = {"static_baseline": s.static_baseline, **s.calib}
    return GalvoRigTaskConfig(rig="scanner", rig_overrides=dict(s.rig), method_overrides={"calib": calib},
                              scenes=s.seeds, scene_seed=cfg.study.seed if s.paired else None)


def build_spec(cfg: GalvoFarmConfig) -> StudySpec:
    sub = cfg.search if cfg.rig == "search" else cfg.scanner
    study = cfg.study
    if study.sampler != "grid" and study.n_trials is None:
        study = replace(study, n_trials=sub.trials)
    return StudySpec(sweep=SWEEP, objectives=tuple(sub.objectives),
                     directions=tuple(DIRECTIONS[cfg.rig][o] for o in sub.objectives),
                     space=search_space(cfg), task_factory=partial(GalvoRigTask, task_config(cfg)),
                     study=study)


# -- report ----------------------------------------------------------------------------------
def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def plot_recall_vs_time(run_dir: Path, trials: list[dict], curves: dict[int, list[dict]], grid: bool,
                        front: set[int]) -> Path | None:
    from methods.plotting import colormap, new_figure, save_figure

    fig, ax = new_figure(figsize=(6, 4))
    colours = [colormap("tab10")(i) for i in range(10)]
    groups = sorted({t["method"] for t in trials}) if grid else ["pareto", "other"]
    drawn = False
    for t in trials:
        pts = sorted(curves.get(t["trial_number"], []), key=lambda r: r["curve_shot"])
        if not pts:
            continue
        key = t["method"] if grid else ("pareto" if t["trial_number"] in front else "other")
        colour = colours[groups.index(key) % len(colours)] if key != "other" else "0.75"
        label = key if key not in {line.get_label() for line in ax.lines} else None
        ax.plot([0.0] + [p["curve_time_s"] for p in pts], [0.0] + [p["curve_recall"] for p in pts],
                "-", color=colour, lw=1.5 if key != "other" else 0.8, label=label)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel("simulated search time (s)")
    ax.set_ylabel("recall (targets seen ÷ targets)")
    ax.set_title("search rig: recall vs time" + (" per method" if grid else " (Pareto trials in colour)"))
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, run_dir / "recall_vs_time.png", dpi=120)


def plot_objective_vs_params(run_dir: Path, trials: list[dict], objective: str,
                             params: list[str]) -> Path | None:
    """One scatter per numeric swept parameter (error vs parameter for the scanner)."""
    numeric = [p for p in params if all(isinstance(t.get(p), (int, float)) and not isinstance(t.get(p), bool)
                                        for t in trials)]
    if not numeric or not trials:
        return None
    from methods.plotting import new_figure, save_figure

    cols = min(4, len(numeric))
    nrows = -(-len(numeric) // cols)
    fig, axes = new_figure(nrows, cols, figsize=(3.2 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(numeric):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, numeric, strict=False):  # surplus axes were hidden above
        ax.plot([t[p] for t in trials], [_num(t.get(objective)) for t in trials], "o", ms=4)
        ax.set_xlabel(p)
        ax.set_ylabel(objective)
    fig.tight_layout()
    return save_figure(fig, run_dir / f"{objective}_vs_params.png", dpi=110)


def plot_rmse_vs_noise(run_dir: Path, trials: list[dict]) -> Path | None:
    noise = RIG_PREFIX + "speckle_contrast"
    from methods.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(5.5, 3.8))
    for tier in sorted({t["tiers"] for t in trials}):
        pts = sorted((t[noise], t["rmse_mm"]) for t in trials if t["tiers"] == tier)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"galvo, tiers={tier}")
    floor = sorted({(t[noise], t["rmse_true_params_mm"]) for t in trials if t.get("rmse_true_params_mm")})
    if floor:  # the same noise with the true parameters: what no calibration can beat
        ax.plot([p[0] for p in floor], [p[1] for p in floor], ":", color="k", label="true parameters (floor)")
    static = sorted((t[noise], t["static_rmse_mm"]) for t in trials
                    if t["tiers"] == "all" and t.get("static_rmse_mm") is not None)
    if static:
        ax.plot([p[0] for p in static], [p[1] for p in static], "s--", color="0.4",
                label="static camera (tiers=all)")
    ax.set_xlabel("laser speckle contrast of the stripe images")
    ax.set_ylabel("reconstruction RMSE (mm)")
    ax.set_yscale("log")
    ax.set_title("scanner rig: error vs stripe speckle")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, run_dir / "rmse_vs_speckle.png", dpi=120)


def _mean(rows: list[dict], key: str) -> float:
    vals = [_num(r.get(key)) for r in rows]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def report(run_dir: Path, cfg: GalvoFarmConfig, outcome: Any) -> dict[str, Any]:
    table = read_table(run_dir)
    rows = table.to_pylist()
    trials = [r for r in summarise_trials(table) if r["state"] == "COMPLETE"]
    spec = build_spec(cfg)
    params = list(spec.space)
    grid = cfg.study.sampler == "grid"
    shown = ["trial_number", *params, *spec.objectives]
    more = ("method", "system_fps", "loc_err_v") if cfg.rig == "search" else (
        "max_err_mm", "rmse_true_params_mm", "static_rmse_mm", "calib_nfev")
    shown += [k for k in (*more, "galvo_rig") if k not in shown]
    print(format_table([{k: t.get(k) for k in shown} for t in trials]))
    on_rigs = {t["actor_id"] for t in trials if (t.get("galvo_rig") or 0) >= 1}
    extras: dict[str, Any] = {"rig": cfg.rig, "rigs": cfg.study.actors, "actors_on_rigs": len(on_rigs),
                              "actors_used": len({t["actor_id"] for t in trials})}
    if not trials:
        return extras
    front = {b["trial"] for b in outcome.best}
    plots = []
    if cfg.rig == "search":
        curves: dict[int, list[dict]] = {}
        for r in rows:
            if r.get("row_kind") == "curve":
                curves.setdefault(r["trial_number"], []).append(r)
        plots.append(plot_recall_vs_time(run_dir, trials, curves, grid, front))
        if grid:
            for m in cfg.search.methods:
                extras[f"recall_{m}"] = _mean([t for t in trials if t["method"] == m], "recall")
            if extras.get("recall_uniform", 0) > 0 and not math.isnan(extras.get("recall_ppm", math.nan)):
                # equal shots: both methods ran the same budgets on the same scenes
                extras["ppm_over_uniform"] = extras["recall_ppm"] / extras["recall_uniform"]
        else:
            extras["best_recall"] = max(_num(t["recall"]) for t in trials)
        extras["system_fps"] = _mean(trials, "system_fps")
    else:
        if grid:
            plots.append(plot_rmse_vs_noise(run_dir, trials))
        extras["best_rmse_mm"] = min(_num(t["rmse_mm"]) for t in trials)
        extras["static_rmse_ratio"] = _mean(trials, "static_rmse_ratio")
        extras["calib_wall_s"] = _mean(trials, "calib_wall_s")
    plots.append(plot_objective_vs_params(run_dir, trials, spec.objectives[0], params))
    for p in plots:
        if p is not None:
            print(f"plot: {p}")
    extras["pareto"] = len(front)
    return extras


# -- command line ----------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rig", choices=sorted(DIRECTIONS),
                   help="which virtual rig the farm runs (default search)")
    p.add_argument("--rigs", type=int, help="N virtual rigs = N actors (shorthand for --set study.actors=N)")


def _config_from_args(args: argparse.Namespace) -> list[str]:
    out = [f'rig="{args.rig}"'] if args.rig else []
    return out + ([f"study.actors={args.rigs}"] if args.rigs is not None else [])


def embedded_resources(cfg: GalvoFarmConfig) -> dict[str, float]:
    """What an embedded cluster needs for this farm: one `galvo_rig` per rig actor, and at least as
    many logical CPUs as rigs (rigs are single-threaded sims and time-share the cores)."""
    n = cfg.study.actors
    return {"galvo_rig": float(n), **({"CPU": n} if n > (os.cpu_count() or 1) else {})}


def check_rig_resources(available: dict[str, float], n: int) -> None:
    """A cluster that cannot place N rig actors would leave the farm waiting forever."""
    have = float(available.get("galvo_rig", 0.0))
    if have < n:
        raise ConfigError(f"The farm needs {n} `galvo_rig` resources (one per rig actor) but the "
                          f"connected Ray cluster has {have:g}. Start its nodes with "
                          f"--resources '{{\"galvo_rig\": {n}}}', or ask for fewer rigs with --rigs.")


def main(argv: list[str] | None = None) -> int:
    return run_sweep(
        argv,
        sweep=SWEEP,
        description=__doc__.splitlines()[0],
        config_cls=GalvoFarmConfig,
        build_spec=build_spec,
        report=report,
        cluster_resources=embedded_resources,
        check_cluster=lambda cfg, available: check_rig_resources(available, cfg.study.actors),
        add_arguments=_add_arguments,
        config_from_args=_config_from_args,
    )


if __name__ == "__main__":
    sys.exit(main())
