"""The generic evaluator actor: builds a task once, then answers one trial chunk per call.

The task protocol (`Task`, `ResumableTask`, `TaskResult`) and the task registry are in
`actors/task.py`: a task is built by a picklable zero-argument factory (`task_factory(name,
config)`, i.e. `functools.partial(TaskCls, config)`) in `__init__` — the expensive part: load a
model, a calibration set, a simulator — and `evaluate` runs one chunk. A retried trial's
`checkpoint` is passed only to tasks whose `evaluate` accepts it.

The actor adds who ran it (actor and node id, pid) and wall times. No maths lives here.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import ray


@ray.remote
class Evaluator:
    def __init__(self, task_factory: Callable[[], Any], torch_threads: int = 1) -> None:
        # torch reads OMP_NUM_THREADS when it is imported; a torch the process already holds is set
        # directly. Importing torch here for a task that never uses it cost every actor ~1.9 s of
        # start-up (issue 20's model-load ratio), so the actor imports it only through its task.
        self.torch_threads = torch_threads
        os.environ["OMP_NUM_THREADS"] = str(torch_threads)
        self._set_torch_threads()
        t0 = time.perf_counter()
        self.task = task_factory()
        self.load_seconds = time.perf_counter() - t0
        self._set_torch_threads()
        ctx = ray.get_runtime_context()
        self.actor_id = ctx.get_actor_id()
        self.node_id = ctx.get_node_id()

    def _set_torch_threads(self) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        ts_start = time.time()
        extra = {"checkpoint": request["checkpoint"]} if "checkpoint" in request else {}
        result = self.task.evaluate(
            dict(request["params"]),
            seed=int(request["seed"]),
            trial=int(request["trial"]),
            chunk=int(request["chunk"]),
            n_chunks=int(request["n_chunks"]),
            **extra,
        )
        if not isinstance(result, dict):
            raise TypeError(
                f"{type(self.task).__name__}.evaluate must return a dict with 'objectives' (and "
                f"optionally 'intermediate', 'metrics', 'rows'); it returned {type(result).__name__}."
            )
        return {
            **result,
            "actor_id": self.actor_id,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "ts_start": ts_start,
            "ts_end": time.time(),
        }

    def info(self) -> dict[str, Any]:
        torch = sys.modules.get("torch")
        return {
            "actor_id": self.actor_id,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "load_seconds": self.load_seconds,
            "torch_threads": None if torch is None else torch.get_num_threads(),
        }
