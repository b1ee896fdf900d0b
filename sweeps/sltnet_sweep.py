"""SLTNet sweep: mIoU up, energy down, over T, LIF threshold and decay, event noise and model kind.

    python sweeps/sltnet_sweep.py                       # NSGA-II, 12 trials on 2 actors
    python sweeps/sltnet_sweep.py --stream              # one window per chunk: rows land as windows are made
    python sweeps/sltnet_sweep.py --sampler grid --set 'kinds=["sltnet","sltnet-ann"]' --set 'time_steps=[1]'
    python sweeps/sltnet_sweep.py --set 'widths=[8,16]' --set 'bins=[3,5]' --set train_steps=200

Every trial is one `event_segmentation` task call (`actors/segmentation_task.py`): the actor holds
the committed zoo weights (sltnet-events, sltnet-ann-events, snn-baseline-events; trained by
`sims/zoo/sltnet_events.py`), opens a simulated event stream with the trial's noise settings and
evaluates `task.windows_per_trial` successive 50 ms windows as they are generated. Objectives:
`miou` (maximised, one confusion matrix over the trial's windows) and `energy_uj` (minimised, µJ
per window from measured firing rates: methods/metrics/energy.py). Optuna's multi-objective
sampler (NSGA-II by default; `--sampler grid` enumerates every combination) proposes the trials;
the farm writes `pareto_front.png`, this report a table and `miou_vs_energy.png`. Rows stream into
Parquet while it runs; with `--stream` every window is its own chunk and row.

Width and voxel-bin counts need other weights: `widths` / `bins` (empty by default) train a fresh
network inside each trial for `train_steps` steps on a small simulated set (minutes per trial).
SLTNet: Zhu et al., arXiv 2412.12843.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/sltnet_sweep.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.segmentation_task import KINDS, EventSegmentationTask, SegmentationTaskConfig
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError

SWEEP = "sltnet_sweep"
COLUMNS = ("trial_number", "kind", "time_steps", "v_threshold", "decay", "shot_noise_hz", "miou", "energy_uj",
           "firing_rate")


@dataclass(frozen=True)
class SLTNetSweepConfig:
    study: StudyConfig = StudyConfig(sampler="nsga2", n_trials=12, actors=2, profile="evaluator_cpu1")
    task: SegmentationTaskConfig = field(default_factory=SegmentationTaskConfig)
    kinds: tuple[str, ...] = KINDS
    time_steps: tuple[int, ...] = (1, 2, 4)
    v_threshold: tuple[float, ...] = (0.75, 1.0, 1.5)
    decay: tuple[float, ...] = (0.25, 0.5)
    shot_noise_hz: tuple[float, ...] = (0.5, 5.0, 20.0)
    stream_seeds: tuple[int, ...] = (1000,)
    widths: tuple[int, ...] = ()
    bins: tuple[int, ...] = ()
    train_steps: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("kinds", "time_steps", "v_threshold", "decay", "shot_noise_hz", "stream_seeds"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must list at least one value.")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ConfigError(f"kinds must be drawn from {KINDS}; received {bad}.")
        if min(self.time_steps) < 1 or min(self.v_threshold) <= 0 or min(self.shot_noise_hz) < 0:
            raise ConfigError("time_steps must be >= 1, v_threshold > 0 and shot_noise_hz >= 0; received "
                              f"{self.time_steps}, {self.v_threshold}, {self.shot_noise_hz}.")
        if not all(0 <= d <= 1 for d in self.decay):
            raise ConfigError(f"decay values must lie in [0, 1]; received {self.decay}.")
        if (self.widths or self.bins) and self.train_steps < 1:
            raise ConfigError("widths / bins need train_steps >= 1 (the zoo weights fix base 16 and 5 bins); "
                              f"received train_steps={self.train_steps}.")


def search_space(cfg: SLTNetSweepConfig) -> dict[str, tuple]:
    space = {"kind": ("categorical", list(cfg.kinds)), "time_steps": ("categorical", list(cfg.time_steps)),
             "v_threshold": ("categorical", list(cfg.v_threshold)), "decay": ("categorical", list(cfg.decay)),
             "shot_noise_hz": ("categorical", list(cfg.shot_noise_hz)),
             "stream_seed": ("categorical", list(cfg.stream_seeds))}
    if cfg.widths:
        space["base"] = ("categorical", list(cfg.widths))
    if cfg.bins:
        space["bins"] = ("categorical", list(cfg.bins))
    if cfg.widths or cfg.bins:
        space["train_steps"] = ("categorical", [cfg.train_steps])
    return space


def build_spec(cfg: SLTNetSweepConfig) -> StudySpec:
    return StudySpec(sweep=SWEEP, objectives=("miou", "energy_uj"), directions=("maximize", "minimize"),
                     space=search_space(cfg), task_factory=partial(EventSegmentationTask, cfg.task),
                     study=dataclasses.replace(cfg.study, n_chunks=cfg.task.n_chunks))


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not dominated in (higher miou, lower energy_uj)."""
    return [r for r in rows if not any(o["miou"] >= r["miou"] and o["energy_uj"] <= r["energy_uj"]
                                       and (o["miou"] > r["miou"] or o["energy_uj"] < r["energy_uj"])
                                       for o in rows)]


def report(run_dir: Path, cfg: SLTNetSweepConfig, outcome: Any) -> dict[str, Any]:
    table = read_table(run_dir)
    trials = [r for r in summarise_trials(table) if r["state"] == "COMPLETE" and r.get("miou") is not None]
    stream_rows = [r for r in table.to_pylist() if r.get("row_kind") == "stream"]
    print(format_table([{k: r.get(k) for k in COLUMNS} for r in trials]))
    out: dict[str, Any] = {"stream_rows": len(stream_rows)}
    if not trials:
        return out
    front = pareto(trials)
    out.update(pareto_points=len(front), best_miou=max(r["miou"] for r in trials),
               plot=str(_plot(run_dir, trials, front)))
    return out


def _plot(run_dir: Path, trials: list[dict[str, Any]], front: list[dict[str, Any]]) -> Path:
    from methods.plotting import new_figure, save_figure

    fig, ax = new_figure(1, 1, figsize=(6, 4))
    colors = {"sltnet": "tab:red", "sltnet-ann": "tab:blue", "snn-baseline": "tab:green"}
    for kind, color in colors.items():
        rows = [r for r in trials if r["kind"] == kind]
        ax.scatter([r["energy_uj"] for r in rows], [r["miou"] for r in rows], c=color, s=25, label=kind)
    line = sorted(front, key=lambda r: r["energy_uj"])
    ax.plot([r["energy_uj"] for r in line], [r["miou"] for r in line], "k--", lw=0.8, label="Pareto front")
    ax.set_xlabel("energy per window (µJ)")
    ax.set_ylabel("mIoU")
    ax.legend(fontsize=7)
    fig.suptitle("SLTNet sweep: mIoU vs energy")
    fig.tight_layout()
    return save_figure(fig, run_dir / "miou_vs_energy.png", dpi=110)


def _add_arguments(p) -> None:
    p.add_argument("--stream", action="store_true",
                   help="evaluate each window as it is generated: one chunk and one row per window")


def _config_from_args(args) -> list[str]:
    return ["task.windows_per_chunk=1"] if args.stream else []


def main(argv: list[str] | None = None) -> int:
    return run_sweep(argv, sweep=SWEEP, description=__doc__.splitlines()[0], config_cls=SLTNetSweepConfig,
                     build_spec=build_spec, report=report, add_arguments=_add_arguments,
                     config_from_args=_config_from_args)


if __name__ == "__main__":
    sys.exit(main())
