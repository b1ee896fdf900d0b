"""The evaluator actor sets torch's threads without importing torch for a task that never uses it."""

from __future__ import annotations

import sys

import pytest
import ray
from ray import cloudpickle

from actors.evaluator import Evaluator
from actors.task import task_factory
from actors.toy_task import ToyTaskConfig

# the workers do not import tests/: this module travels by value (as tests/task_hooks.py does)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class TorchTask:
    """A task whose load imports torch (a model task); evaluate reports torch's thread count."""

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def evaluate(self, params, *, seed, trial, chunk, n_chunks):
        return {"objectives": {"loss": float(self.torch.get_num_threads())}}


def _request() -> dict:
    return {"params": {"x": 1, "y": 0}, "seed": 0, "trial": 0, "chunk": 0, "n_chunks": 1}


@pytest.mark.usefixtures("ray_local")
def test_a_task_without_torch_starts_without_importing_it():
    actor = Evaluator.options(num_cpus=0).remote(task_factory("toy", ToyTaskConfig(sleep=0.0)), 1)
    try:
        info = ray.get(actor.info.remote())
        assert info["torch_threads"] is None  # torch not imported: ~1.9 s of start-up saved
        assert ray.get(actor.evaluate.remote(_request()))["objectives"]["loss"] == 1.0
    finally:
        ray.kill(actor)


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("threads", [1, 2])
def test_a_task_that_loads_torch_runs_with_the_profiles_threads(threads):
    actor = Evaluator.options(num_cpus=0).remote(TorchTask, threads)
    try:
        assert ray.get(actor.info.remote())["torch_threads"] == threads
        assert ray.get(actor.evaluate.remote(_request()))["objectives"]["loss"] == threads
    finally:
        ray.kill(actor)
