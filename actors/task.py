"""The task protocol and the task registry: what the generic evaluator actor runs.

A *task* holds what is expensive to build (a model, a calibration set, a simulator, a voter pool)
and answers one trial chunk per call. Every task follows the same shape:

- it is built from **one frozen config**: ``TaskCls(config)``, where ``config`` is a frozen
  dataclass with a ``version`` field and ``from_dict`` (unknown keys refused, `ConfigDict`); the
  config class is the annotation of ``__init__``'s first parameter (`config_class`);
- ``evaluate(params, *, seed, trial, chunk, n_chunks) -> TaskResult`` runs one chunk of one
  trial: ``params`` is the trial's flat dict of typed values, ``chunk`` counts 0..n_chunks-1;
- a task that resumes a retried trial also takes ``checkpoint=`` (`ResumableTask`): after a
  non-final chunk it returns a small picklable ``checkpoint``; when the actor dies, the retried
  trial restarts at the next chunk and receives it;
- it is registered by name, once: ``@register_task("toy")``; ``task_factory(name, config)``
  gives the picklable zero-argument factory (``functools.partial(TaskCls, config)``) that a
  `cluster.study.StudySpec` carries to the evaluator actors.

Registration happens when a task's module is imported; `actors.all_tasks` imports every one.
Our own design (after timm's model registry and Ray's actor-per-state pattern); no paper.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from functools import partial
from typing import Any, Protocol, TypedDict, runtime_checkable

from methods.errors import ConfigError
from methods.registry import Registry


class TaskResult(TypedDict, total=False):
    """What `Task.evaluate` returns; the evaluator adds who ran it (actor, node, pid, times).

    objectives: {name: float}, required on the last chunk. intermediate: the value reported for
    pruning after a non-final chunk. metrics: extra columns of the trial's row. rows: extra rows
    to land (e.g. one per stream batch, each with its own ``row_kind``). checkpoint: state after
    a non-final chunk, handed back to a retried trial (`ResumableTask`).
    """

    objectives: dict[str, float]
    intermediate: float
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    checkpoint: Any


@runtime_checkable
class Task(Protocol):
    """A task built once per evaluator actor from one frozen config (see the module docstring)."""

    def __init__(self, config: Any) -> None: ...

    def evaluate(
        self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int
    ) -> TaskResult | dict[str, Any]: ...


@runtime_checkable
class ResumableTask(Task, Protocol):
    """A task whose retried trials resume from the checkpoint of their last landed chunk."""

    def evaluate(
        self,
        params: dict[str, Any],
        *,
        seed: int,
        trial: int,
        chunk: int,
        n_chunks: int,
        checkpoint: Any = None,
    ) -> TaskResult | dict[str, Any]: ...


TASKS: Registry[type[Task]] = Registry("task")
register_task = TASKS.register


def config_class(task_cls: type) -> type:
    """The frozen config dataclass a task is built from: its `__init__`'s first parameter type."""
    params = list(inspect.signature(task_cls.__init__).parameters.values())[1:]
    hints = typing.get_type_hints(task_cls.__init__) if params else {}
    cls = hints.get(params[0].name) if params else None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ConfigError(
            f"Task {task_cls.__name__} must be built from one frozen config dataclass: expected "
            f"`def __init__(self, config: SomeConfig)`, found {inspect.signature(task_cls.__init__)}."
        )
    return cls


def task_factory(name: str, config: Any = None) -> partial:
    """``functools.partial(TaskCls, config)`` for the registered task `name`.

    `config` is an instance of the task's config class, a dict (read with its `from_dict`, so an
    unknown key is an error naming the nearest valid ones), or None for the defaults.
    """
    task_cls = TASKS.get(name)
    cfg_cls = config_class(task_cls)
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        config = cfg_cls.from_dict(config)
    elif not isinstance(config, cfg_cls):
        raise ConfigError(
            f"Task {name!r} is built from a {cfg_cls.__name__} (or a dict of its fields); "
            f"received a {type(config).__name__}."
        )
    return partial(task_cls, config)
