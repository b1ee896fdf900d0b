"""A toy study spec and a tiny sweep that exercise the farm (used by tests and benchmarks).

The task is `actors.toy_task.ToyTask`; tests inject failures by wrapping its factory
(`tests/task_hooks.py`). The sweep lives in the package because `python -m cluster.testing` runs it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from actors.task import task_factory
from actors.toy_task import ToyTaskConfig
from cluster.study import StudyConfig, StudySpec


def toy_spec(
    sweep: str = "toy",
    study: StudyConfig | None = None,
    objectives: tuple[str, ...] = ("loss",),
    space: dict[str, tuple] | None = None,
    **task_kwargs: Any,
) -> StudySpec:
    """The toy objective over a small grid; `task_kwargs` are `ToyTaskConfig` fields."""
    directions = tuple("minimize" if o == "loss" else "maximize" for o in objectives)
    return StudySpec(
        sweep=sweep,
        objectives=objectives,
        directions=directions,
        space=space or {"x": ("categorical", [0, 1, 2, 3]), "y": ("categorical", [0, 1, 2])},
        task_factory=task_factory("toy", ToyTaskConfig.from_dict(task_kwargs)),
        study=study or StudyConfig(sampler="grid", actors=2),
    )


@dataclass(frozen=True)
class ToySweepConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2)
    sleep: float = 0.3
    version: int = 1


def toy_sweep_main(argv: list[str] | None = None) -> int:
    """`python -m cluster.testing ...`: a slow 12-point grid, for the driver-kill/--resume test."""
    from cluster.sweep_cli import run_sweep

    return run_sweep(
        argv,
        sweep="toy_sweep",
        description="toy grid for tests",
        config_cls=ToySweepConfig,
        build_spec=lambda cfg: toy_spec("toy_sweep", cfg.study, sleep=cfg.sleep),
    )


if __name__ == "__main__":
    sys.exit(toy_sweep_main())
