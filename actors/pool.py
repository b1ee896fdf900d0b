"""Our own actor pool: it always knows which trial (and chunk) each actor is running.

Why not `ray.util.ActorPool` (infra.md A.4): when a task fails it raises without saying which
submitted value failed, so the trial is lost, and it has handed dead actors back to its idle set.
Here every in-flight object ref maps to a `Job` (actor slot, trial, chunk, attempt). A failure is
classified: `actor_died` (the process or its node went away: the driver may retry the trial) or
`task_error` (our own code raised: no retry). A slot whose actor died gets a fresh actor from the
factory, so the pool heals itself also when the actor's node is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError


@dataclass
class Job:
    slot: int
    trial: int
    chunk: int
    attempt: int
    request: dict[str, Any]
    submitted_at: float = field(default_factory=time.time)


@dataclass
class Completion:
    job: Job
    ok: bool
    result: dict[str, Any] | None = None
    failure: str | None = None  # "actor_died" | "task_error"
    error: str | None = None


class ActorPool:
    """A fixed number of actor slots, each running at most one job at a time.

    Args:
        factory: `factory(slot) -> actor handle`; called at start and to replace a dead actor.
        size: number of slots.
        method: name of the actor method a job calls with its request dict.
    """

    def __init__(self, factory: Callable[[int], Any], size: int, method: str = "evaluate") -> None:
        if size < 1:
            raise ValueError(f"An actor pool needs at least 1 actor, got size={size}.")
        self.factory = factory
        self.method = method
        self.actors = [factory(i) for i in range(size)]
        self.inflight: dict[ray.ObjectRef, Job] = {}
        self.replacements = 0

    @property
    def size(self) -> int:
        return len(self.actors)

    def busy_slots(self) -> set[int]:
        return {job.slot for job in self.inflight.values()}

    def idle_slots(self) -> list[int]:
        busy = self.busy_slots()
        return [i for i in range(self.size) if i not in busy]

    def running(self) -> dict[int, tuple[int, int]]:
        """slot → (trial, chunk) for every busy slot."""
        return {job.slot: (job.trial, job.chunk) for job in self.inflight.values()}

    def submit(self, slot: int, trial: int, chunk: int, attempt: int, request: dict[str, Any]) -> None:
        if slot in self.busy_slots():
            raise RuntimeError(
                f"Actor slot {slot} is busy with {self.running()[slot]}; submit to an idle slot."
            )
        ref = getattr(self.actors[slot], self.method).remote(request)
        self.inflight[ref] = Job(slot, trial, chunk, attempt, request)

    def wait(self, timeout: float | None = None) -> list[Completion]:
        """Completions of the jobs that finished within `timeout` seconds (maybe none)."""
        if not self.inflight:
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            job = self.inflight.pop(ref)
            try:
                done.append(Completion(job, True, result=ray.get(ref)))
            except RayActorError as exc:
                self._replace(job.slot)
                done.append(Completion(job, False, failure="actor_died", error=_short(exc)))
            except RayTaskError as exc:
                done.append(Completion(job, False, failure="task_error", error=_task_error_text(exc)))
        return done

    def _replace(self, slot: int) -> None:
        try:
            ray.kill(self.actors[slot], no_restart=True)
        except Exception:  # already gone, or its node is gone: nothing left to stop
            pass
        self.actors[slot] = self.factory(slot)
        self.replacements += 1

    def call_all(self, method: str, timeout: float | None = None) -> list[Any]:
        try:
            return ray.get([getattr(a, method).remote() for a in self.actors], timeout=timeout)
        except GetTimeoutError:
            return []

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # an actor whose node is gone cannot be killed twice
                pass
        self.inflight.clear()


def _short(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _task_error_text(exc: RayTaskError, limit: int = 4000) -> str:
    """The user's exception type and message plus the tail of its traceback."""
    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
    head = f"{type(cause).__name__}: {cause}"
    tb = str(exc)
    text = head if head in tb else head + "\n" + tb
    return text if len(text) <= limit else text[:limit] + " ..."
