"""Our own actor pool: it always knows which trial (and chunk) each actor is running.

Why not `ray.util.ActorPool` (infra.md A.4): when a task fails it raises without saying which
submitted value failed, so the trial is lost, and it has handed dead actors back to its idle set.
Here every in-flight object ref maps to a `Job` (actor slot, trial, chunk, attempt). A failure is
classified: `actor_died` (the process or its node went away: the driver may retry the trial) or
`task_error` (our own code raised: no retry). A slot whose actor died gets a fresh actor from the
factory, so the pool heals itself also when the actor's node is gone.

Scale (issue 20) [ours]: `wait` returns every job that is ready, not one, so the driver handles a
round of completions with one sink append; `depth` > 1 queues several jobs on one actor (Ray runs
an actor's calls in order), so the actor starts the next trial without waiting for the driver's
round trip. When an actor with several queued jobs dies, each of them comes back `actor_died`, and
the slot is replaced once: a job remembers which incarnation of its slot's actor it went to.
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
    incarnation: int = 0  # which actor of the slot ran it (a replaced slot's actor counts up)


@dataclass
class Completion:
    job: Job
    ok: bool
    result: dict[str, Any] | None = None
    failure: str | None = None  # "actor_died" | "task_error"
    error: str | None = None


class ActorPool:
    """A fixed number of actor slots, each running at most `depth` jobs at a time.

    Args:
        factory: `factory(slot) -> actor handle`; called at start and to replace a dead actor.
        size: number of slots.
        method: name of the actor method a job calls with its request dict.
        depth: jobs queued on one actor at once (1: one at a time).
    """

    def __init__(
        self, factory: Callable[[int], Any], size: int, method: str = "evaluate", depth: int = 1
    ) -> None:
        if size < 1:
            raise ValueError(f"An actor pool needs at least 1 actor, got size={size}.")
        if depth < 1:
            raise ValueError(f"An actor pool needs depth >= 1 (jobs per actor), got depth={depth}.")
        self.factory = factory
        self.method = method
        self.depth = depth
        self.actors = [factory(i) for i in range(size)]
        self.incarnation = [0] * size
        self.inflight: dict[ray.ObjectRef, Job] = {}
        self._load = [0] * size  # jobs in flight per slot
        self.replacements = 0

    @property
    def size(self) -> int:
        return len(self.actors)

    def busy_slots(self) -> set[int]:
        return {job.slot for job in self.inflight.values()}

    def idle_slots(self) -> list[int]:
        """Slots with room for another job, a slot once per free place (depth 1: the idle slots)."""
        return [i for d in range(self.depth) for i in range(self.size) if self._load[i] <= d]

    def running(self) -> dict[int, tuple[int, int]]:
        """slot → (trial, chunk) for every busy slot (with depth > 1: its latest job)."""
        return {job.slot: (job.trial, job.chunk) for job in self.inflight.values()}

    def submit(self, slot: int, trial: int, chunk: int, attempt: int, request: dict[str, Any]) -> None:
        if self._load[slot] >= self.depth:
            raise RuntimeError(
                f"Actor slot {slot} is busy with {self.running()[slot]}; submit to an idle slot."
            )
        ref = getattr(self.actors[slot], self.method).remote(request)
        self.inflight[ref] = Job(slot, trial, chunk, attempt, request, incarnation=self.incarnation[slot])
        self._load[slot] += 1

    def wait(self, timeout: float | None = None) -> list[Completion]:
        """Completions of every job that has finished, waiting up to `timeout` seconds for the first
        (maybe none)."""
        if not self.inflight:
            return []
        refs = list(self.inflight)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        done = []
        for ref in ready:
            job = self.inflight.pop(ref)
            self._load[job.slot] -= 1
            try:
                done.append(Completion(job, True, result=ray.get(ref)))
            except RayActorError as exc:
                if job.incarnation == self.incarnation[job.slot]:
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
        self.incarnation[slot] += 1
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
        self._load = [0] * self.size


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
