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
- it is registered by name, once: ``@register_task("toy")``. ``TASKS.create(name, **config)``
  (and ``task_factory(name, config)``, which also takes a config object) gives the picklable
  zero-argument factory ``functools.partial(TaskCls, config)`` that a `cluster.study.StudySpec`
  carries to the evaluator actors: the task itself is built there, not in the driver.

Registration happens when a task's module is imported; `actors.all_tasks` (the registry's `home`)
imports every one.
Our own design (after timm's model registry and Ray's actor-per-state pattern); no paper.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from functools import partial
from typing import Any, Protocol, TypedDict, runtime_checkable

from methods.errors import ConfigError
from methods.registry import Registry, config_defaults, config_from_dict


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


def config_class(task_cls: type) -> type | None:
    """The config dataclass a task is built from (the type of `__init__`'s first parameter), or None
    when the task is not built from one."""
    params = list(inspect.signature(task_cls.__init__).parameters.values())[1:]
    if not params:
        return None
    cls = typing.get_type_hints(task_cls.__init__).get(params[0].name)
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


class _TaskFactories:
    """TASKS' creator: `create` gives the task's factory, `partial(TaskCls, config)`, with the config
    read from a dict (unknown keys refused); `defaults`: the default config's fields."""

    def create(self, entry: type, config: dict[str, Any]) -> partial:
        cfg_cls = config_class(entry)
        if cfg_cls is None:
            if config:
                raise ConfigError(f"Task {entry.__name__} takes no config; received {sorted(config)}.")
            return partial(entry)
        return partial(entry, config_from_dict(cfg_cls, config))

    def defaults(self, entry: type) -> dict[str, Any] | None:
        cfg_cls = config_class(entry)
        return None if cfg_cls is None else config_defaults(cfg_cls)

    def __repr__(self) -> str:
        return "TASK_FACTORIES"


TASKS: Registry[type[Task]] = Registry(
    "task", Task, classes=True, creator=_TaskFactories(), home="actors.all_tasks"
)
register_task = TASKS.register


def task_factory(name: str, config: Any = None) -> partial:
    """``functools.partial(TaskCls, config)`` for the registered task `name`.

    `config` is an instance of the task's config class, a dict of its fields (an unknown key is an
    error naming the nearest valid ones), or None for the defaults.
    """
    if config is None or isinstance(config, dict):
        return TASKS.create(name, **(config or {}))
    task_cls = TASKS.get(name)
    cfg_cls = config_class(task_cls)
    if cfg_cls is None or not isinstance(config, cfg_cls):
        expected = f"a {cfg_cls.__name__} (or a dict of its fields)" if cfg_cls else "no config"
        raise ConfigError(f"Task {name!r} is built from {expected}; received a {type(config).__name__}.")
    return partial(task_cls, config)
