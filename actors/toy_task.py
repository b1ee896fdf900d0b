"""The toy task: objective = (x - 2)^2 + y at a chosen cost, for the farm's tests and benchmarks.

A task for the generic evaluator (`actors/task.py`) with no maths worth the name: each chunk
sleeps `sleep` seconds and burns `cpu_seconds` of CPU; building it takes `load_seconds` (a stand-in
for loading a model). Non-final chunks return an intermediate value, one "detail" row and a
checkpoint (the chunks seen so far), so pruning and resumption can be tested. Failure injection
lives with the tests (`tests/task_hooks.py`), not here. Our own design; no paper.

Trial params: `x`, `y` (default 0).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError


@dataclass(frozen=True)
class ToyTaskConfig(ConfigDict):
    """sleep: seconds per chunk; load_seconds: build time; cpu_seconds: CPU burnt per chunk."""

    sleep: float = 0.0
    load_seconds: float = 0.0
    cpu_seconds: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        if min(self.sleep, self.load_seconds, self.cpu_seconds) < 0:
            raise ConfigError(
                f"sleep, load_seconds and cpu_seconds must be >= 0, got {self.sleep}, "
                f"{self.load_seconds}, {self.cpu_seconds}."
            )


def burn_cpu(seconds: float) -> int:
    """Pure-Python arithmetic for `seconds` of this process's CPU time (a CPU-bound objective)."""
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        for _ in range(1000):
            n += 1
    return n


@register_task("toy")
class ToyTask:
    def __init__(self, config: ToyTaskConfig = ToyTaskConfig()) -> None:
        time.sleep(config.load_seconds)
        self.config = config
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
        time.sleep(self.config.sleep)
        burn_cpu(self.config.cpu_seconds)
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
