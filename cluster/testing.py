"""Tasks and a tiny sweep that exercise the farm's failure paths (used by tests and benchmarks).

They live in the package, not under tests/, because Ray workers must import them by name.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cluster.study import StudyConfig, StudySpec


class ToyTask:
    """objective = (x - 2)^2 + y, after sleeping `sleep` seconds per chunk.

    Failure injection, keyed on the grid point (x, y):
    - `crash_at`: the first evaluation of this point kills the actor process (`os._exit`); a marker
      file in `marker_dir` makes the retry succeed;
    - `raise_at`: every evaluation of this point raises ValueError (our own bug: no retry);
    - `raise_all`: every evaluation raises.
    """

    def __init__(
        self,
        sleep: float = 0.0,
        marker_dir: str | None = None,
        crash_at: tuple[Any, Any] | None = None,
        raise_at: tuple[Any, Any] | None = None,
        raise_all: bool = False,
        load_seconds: float = 0.0,
        crash_chunk: int = 0,
        cpu_seconds: float = 0.0,
    ) -> None:
        time.sleep(load_seconds)
        self.sleep, self.marker_dir = sleep, marker_dir
        self.crash_at, self.raise_at, self.raise_all = crash_at, raise_at, raise_all
        self.crash_chunk = crash_chunk
        self.cpu_seconds = cpu_seconds
        self.pid = os.getpid()

    def evaluate(
        self,
        params: dict[str, Any],
        *,
        seed: int,
        trial: int,
        chunk: int,
        n_chunks: int,
        checkpoint: Any = None,
    ) -> dict[str, Any]:
        x, y = params["x"], params.get("y", 0)
        done = [] if chunk == 0 else list((checkpoint or {}).get("done", getattr(self, "_done", [])))
        if self.raise_all or (self.raise_at is not None and (x, y) == tuple(self.raise_at)):
            raise ValueError(f"injected failure at x={x} y={y}")
        if (
            self.crash_at is not None
            and (x, y) == tuple(self.crash_at)
            and self.marker_dir
            and chunk == self.crash_chunk
        ):
            marker = Path(self.marker_dir) / f"crashed-{x}-{y}"
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
        time.sleep(self.sleep)
        burn_cpu(self.cpu_seconds)
        value = (float(x) - 2.0) ** 2 + float(y)
        done.append(chunk)
        self._done = done
        if chunk < n_chunks - 1:
            return {
                "intermediate": value + (n_chunks - 1 - chunk),
                "rows": [{"row_kind": "detail", "step": chunk}],
                "checkpoint": {"done": done},
            }
        return {
            "objectives": {"loss": value, "neg": -value},
            "metrics": {"pid": self.pid, "chunks_seen": ",".join(map(str, done))},
        }


def burn_cpu(seconds: float) -> int:
    """Pure-Python arithmetic for `seconds` of this process's CPU time (a CPU-bound objective)."""
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        for _ in range(1000):
            n += 1
    return n


def toy_spec(
    sweep: str = "toy",
    study: StudyConfig | None = None,
    objectives: tuple[str, ...] = ("loss",),
    space: dict[str, tuple] | None = None,
    **task_kwargs: Any,
) -> StudySpec:
    directions = tuple("minimize" if o == "loss" else "maximize" for o in objectives)
    return StudySpec(
        sweep=sweep,
        objectives=objectives,
        directions=directions,
        space=space or {"x": ("categorical", [0, 1, 2, 3]), "y": ("categorical", [0, 1, 2])},
        task_factory=partial(ToyTask, **task_kwargs),
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
