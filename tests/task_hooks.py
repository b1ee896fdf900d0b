"""Test-only fault injection for farm tasks: kill the actor, raise, or slow every chunk down.

Production task configs carry no test hooks; a test wraps a spec's task factory instead:

    spec = with_faults(toy_spec(...), Faults(marker_dir=str(tmp_path), crash_at={"x": 1, "y": 2}))

`FaultyTask` builds the wrapped task and, before each chunk it forwards:
- raises ValueError when the trial's params match `raise_at` (or always, with `raise_all`): our
  own bug, which the farm fails without a retry;
- exits the actor process (`os._exit`) the first time a trial matching `crash_at` (None: any
  trial) reaches `crash_chunk`, after writing the marker file `marker_dir/marker`; the marker makes
  the retry succeed. Nothing crashes without a `marker_dir`;
- sleeps `chunk_sleep` seconds (throttles a stream so that its rows land part by part).

tests/ is not on the Ray workers' import path, so this module is registered with Ray's cloudpickle
to travel *by value*: the workers unpickle `FaultyTask` without importing this file.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ray import cloudpickle


@dataclass(frozen=True)
class Faults:
    marker_dir: str | None = None
    crash_chunk: int = 0
    crash_at: dict[str, Any] | None = None
    marker: str = "crashed"
    raise_at: dict[str, Any] | None = None
    raise_all: bool = False
    chunk_sleep: float = 0.0


def _matches(params: dict[str, Any], point: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in point.items())


class FaultyTask:
    """Any task with the faults of `Faults` injected before each chunk."""

    def __init__(self, faults: Faults, factory) -> None:
        self.faults = faults
        self.task = factory()

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int,
                 **hooks: Any) -> dict[str, Any]:
        f = self.faults
        if f.raise_all or (f.raise_at is not None and _matches(params, f.raise_at)):
            where = " ".join(f"{k}={params.get(k)}" for k in (f.raise_at or params))
            raise ValueError(f"injected failure at {where}")
        if f.marker_dir and chunk == f.crash_chunk and (f.crash_at is None or _matches(params, f.crash_at)):
            marker = Path(f.marker_dir) / f.marker
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
        time.sleep(f.chunk_sleep)
        return self.task.evaluate(params, seed=seed, trial=trial, chunk=chunk, n_chunks=n_chunks, **hooks)


def with_faults(spec, faults: Faults):
    """A copy of the study spec whose actors run its task wrapped in `FaultyTask`."""
    return dataclasses.replace(spec, task_factory=partial(FaultyTask, faults, spec.task_factory))


cloudpickle.register_pickle_by_value(sys.modules[__name__])
