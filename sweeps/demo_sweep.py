"""Demonstration sweep: logistic regression on digits over C × image size, through the farm.

    python sweeps/demo_sweep.py                      # 12-point grid on the embedded local cluster
    python sweeps/demo_sweep.py --sampler tpe --max-trials 30 --set study.pruner='"median"'
    python sweeps/demo_sweep.py --set objectives='["accuracy","fit_seconds"]' --sampler nsga2 --max-trials 20

Each trial is 3-fold cross-validation (one fold per chunk, so the median pruner can stop a poor
trial early); the trial row also records the held-out test accuracy. Writes an accuracy-vs-C plot.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/demo_sweep.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.demo_task import DemoTaskConfig
from actors.task import task_factory
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods.errors import ConfigError

OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "fit_seconds": "minimize"}


@dataclass(frozen=True)
class DemoSweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, n_chunks=3)
    task: DemoTaskConfig = DemoTaskConfig()
    C: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    sizes: tuple[int, ...] = (8, 16)
    objectives: tuple[str, ...] = ("accuracy",)
    version: int = 1

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVE_DIRECTIONS]
        if unknown or not self.objectives:
            raise ConfigError(
                f"objectives must be a non-empty subset of {list(OBJECTIVE_DIRECTIONS)}, "
                f"got {list(self.objectives)}."
            )
        if not self.C or min(self.C) <= 0:
            raise ConfigError(f"C values must be positive, got {list(self.C)}.")


def build_spec(cfg: DemoSweepConfig) -> StudySpec:
    if cfg.study.sampler == "grid":
        space: dict[str, tuple] = {
            "C": ("categorical", list(cfg.C)),
            "size": ("categorical", list(cfg.sizes)),
        }
    else:
        space = {"C": ("float", min(cfg.C), max(cfg.C), "log"), "size": ("categorical", list(cfg.sizes))}
    return StudySpec(
        sweep="demo_sweep",
        objectives=tuple(cfg.objectives),
        directions=tuple(OBJECTIVE_DIRECTIONS[o] for o in cfg.objectives),
        space=space,
        task_factory=task_factory("demo_logreg", cfg.task),
        study=cfg.study,
    )


def report(run_dir: Path, cfg: DemoSweepConfig, outcome: Any) -> dict[str, Any]:
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    print(
        format_table(
            [
                {
                    k: r.get(k)
                    for k in ("trial_number", "C", "size", "accuracy", "test_accuracy", "fit_seconds")
                }
                for r in trials
            ]
        )
    )
    if not trials:
        return {}
    from methods.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(5, 3.5))
    for size in sorted({r["size"] for r in trials}):
        pts = sorted((r["C"], r["accuracy"]) for r in trials if r["size"] == size)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{size}x{size} px")
    ax.set_xscale("log")
    ax.set_xlabel("C (inverse regularisation)")
    ax.set_ylabel("3-fold CV accuracy")
    ax.legend()
    ax.set_title("demo sweep: logistic regression on digits")
    fig.tight_layout()
    plot = save_figure(fig, run_dir / "accuracy_vs_C.png", dpi=120)
    print(f"plot: {plot}")
    return {"plot": str(plot)}


def main(argv: list[str] | None = None) -> int:
    return run_sweep(
        argv,
        sweep="demo_sweep",
        description=__doc__.splitlines()[0],
        config_cls=DemoSweepConfig,
        build_spec=build_spec,
        report=report,
    )


if __name__ == "__main__":
    sys.exit(main())
