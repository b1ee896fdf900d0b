"""The study loop: an Optuna ask/tell driver feeding a pool of long-lived Ray actors.

Design (DESIGN decisions 1-3, infra.md A.4/A.5):
- the driver is the only writer of the study (`JournalStorage(JournalFileBackend)` in the run
  directory); actors load their task once and a trial is a method call;
- a trial may be split into chunks; after each non-final chunk a single-objective study reports
  the intermediate value and asks the pruner (multi-objective studies cannot prune in Optuna);
- actor death → the attempt is FAIL (row with the error), its parameters are re-enqueued within a
  retry budget; an exception from our own code → FAIL with the error text, no retry;
- every attempt's final row reaches the sink (and is flushed) *before* the study is told, so a
  driver killed in between leaves a row and a RUNNING trial; `--resume` then tells COMPLETE from
  the row instead of re-running it — no duplicate COMPLETE rows, no lost flushed rows;
- grid points (cluster/search.py) are enqueued point by point, each recorded by the driver;
- Optuna's public API only: a trial of an earlier driver is told FAIL by number, and its error
  lives in the FAIL row (there is no public way to set attributes on a trial one does not hold).

At scale (issue 20) [ours] the loop works in rounds: ask a trial for every free place in the pool
(several per actor with `study.inflight_per_actor`), flush the journal once (`BufferedJournal`:
one fsync per round, not ~5 per trial), submit, then take *every* completion that is ready, land
all their rows with one sink append, and only then tell the study about each of them. The order
"rows land, then tell" holds per round as it held per trial, so the resume logic is unchanged;
what a SIGKILL can lose is the journal records of the last round, which is the case the resume
already handles (a RUNNING trial with a COMPLETE row is told COMPLETE; one without is retried).
`StudyOutcome.timings` keeps the seconds spent asking, telling, landing, flushing and waiting.
With `study.overlap_land` a round's append is sent without waiting: the driver asks, submits and
collects the next completions while the sink writes, and runs the round's tells when the sink has
answered (at most one append in flight; the tells of a round still follow its rows). A tell is then
late by up to one round (<= 50 ms of waiting), so TPE/NSGA-II settle every append before asking.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import TrialState

from actors.evaluator import Evaluator
from actors.pool import ActorPool, Completion
from actors.sink import ResultSink
from cluster.resources import PROFILES, actor_options, actors_that_fit
from cluster.results import BASE_NAMES, read_table
from cluster.rundir import JOURNAL
from cluster.search import (
    BufferedJournal,
    StudyConfig,
    StudySpec,
    best_trials,
    derive_seed,
    distributions,
    grid_points,
    open_study,
    params_key,
)

# StudyConfig and StudySpec live in cluster.search; sweeps import them from here as well.
__all__ = ["StudyConfig", "StudyOutcome", "StudyRunner", "StudySpec"]

INTERRUPTED = "driver stopped while the trial ran"
SINK_RESTART_S = 120.0  # how long a round waits for a restarting sink before the run stops
# trials whose grid point needs no new trial (a FAIL one only when it failed in our own code)
COVERING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)


@dataclass
class StudyOutcome:
    run_dir: Path
    complete: int = 0
    failed: int = 0
    pruned: int = 0
    retried: int = 0
    rows_written: int = 0
    recovered_rows: int = 0
    seconds: float = 0.0
    best: list[dict[str, Any]] = field(default_factory=list)
    # seconds spent per phase of the loop (ask, tell, land, flush, wait) and rounds run
    timings: dict[str, float] = field(default_factory=dict)


# -- the loop ---------------------------------------------------------------------------------
class StudyRunner:
    """One run of one sweep: study + sink + pool, driven until no work is left."""

    def __init__(
        self,
        spec: StudySpec,
        run_dir: Path,
        run_id: str,
        sink_metadata: Mapping[str, str] | None = None,
        progress: bool = True,
        sink_roll_seconds: float = 10.0,
    ) -> None:
        self.spec = spec
        self.cfg = spec.study
        self.run_dir = run_dir
        self.run_id = run_id
        self.progress = progress
        self.dists = distributions(spec.space)
        self.journal = BufferedJournal(run_dir / JOURNAL)
        self.study = open_study(spec, run_dir, backend=self.journal)
        self.journal.flush()
        self.sink = ResultSink.options(**actor_options("sink_head")).remote(
            str(run_dir), dict(sink_metadata or {}), roll_seconds=sink_roll_seconds
        )
        self.outcome = StudyOutcome(run_dir=run_dir)
        # the sink's start-up (a process, its imports, recovery) runs while the actors start: run()
        # waits for it after creating the pool, or before reconciling (which reads what it recovers)
        self._sink_started: Any = self.sink.stats.remote()
        self.trials: dict[int, optuna.Trial] = {}
        self.meta: dict[int, dict[str, int]] = {}  # number -> root, seed, attempt, retries
        self._n_waiting = self._n_logical = 0
        # grid points planned but not yet enqueued (issue 20)
        self._grid_pending: collections.deque[dict[str, Any]] = collections.deque()
        self.grid_window = max(64, 4 * self.cfg.actors * self.cfg.inflight_per_actor)
        # root trial -> (next chunk, checkpoint): lets a retried stream resume after its last
        # landed chunk instead of recounting it (held in driver memory only).
        self.checkpoints: dict[int, tuple[int, Any]] = {}
        # one round's rows (landed together) and what follows their landing, in order
        self._rows: list[dict[str, Any]] = []
        self._then: list[Callable[[], None]] = []
        # study.overlap_land: the append in flight (its ref, rows and what waits for it), at most one
        self._pending: tuple[Any, list[dict[str, Any]], list[Callable[[], None]]] | None = None
        self.timings = dict.fromkeys(("ask", "tell", "land", "flush", "wait", "rounds"), 0.0)
        self.outcome.timings = self.timings
        self.t0 = time.perf_counter()

    # rows ------------------------------------------------------------------------------------
    def _land(self, rows: list[dict[str, Any]]) -> None:
        """Send rows to the sink and wait for the flush; survive a sink restart."""
        t = time.perf_counter()
        try:
            self._land_now(rows)
        finally:
            self.timings["land"] += time.perf_counter() - t

    def _wait_for_sink(self) -> None:
        if self._sink_started is not None:
            self.outcome.recovered_rows = ray.get(self._sink_started)["recovered_rows"]
            self._sink_started = None

    def _land_now(self, rows: list[dict[str, Any]]) -> None:
        # A restarting sink (a new process: imports, recovery of its segment) took longer than the
        # old 5 tries (~5 s) on a loaded machine with 64 actors (issue 20, slow tier): wait for it
        # up to SINK_RESTART_S instead.
        deadline = time.monotonic() + SINK_RESTART_S
        attempt = 0
        while True:
            try:
                self.outcome.rows_written += ray.get(self.sink.append.remote(rows))
                return
            except ray.exceptions.RayActorError:
                attempt += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5 * attempt, 2.0))

    def _base_row(
        self, trial: optuna.Trial | optuna.trial.FrozenTrial, kind: str, state: str
    ) -> dict[str, Any]:
        attrs = self.meta.get(trial.number) or trial.user_attrs
        params = dict(trial.params)
        return {
            "run_id": self.run_id,
            "sweep": self.spec.sweep,
            "row_kind": kind,
            "trial_number": trial.number,
            "attempt": int(attrs.get("attempt", 1)),
            "state": state,
            "seed": int(attrs.get("seed", 0)),
            "params_json": params_key(params),
            **params,
        }

    # resume ------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Make the journal agree with the landed rows after an interrupted driver."""
        landed = read_table(self.run_dir, include_live=True).to_pylist()
        complete_rows = {
            r["trial_number"]: r
            for r in landed
            if r.get("row_kind") == "trial" and r.get("state") == "COMPLETE"
        }
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            row = complete_rows.get(t.number)
            if row is not None and all(row.get(o) is not None for o in self.spec.objectives):
                self.study.tell(t.number, [float(row[o]) for o in self.spec.objectives])
                continue
            # A RUNNING trial of an earlier driver has no live Trial to set attributes on: the FAIL
            # row carries the error, its retry says why, and with no failure_kind "task_error" the
            # point stays retryable (enqueue_grid gives up only on those).
            self.study.tell(t.number, state=TrialState.FAIL)
            self._land([{**self._base_row(t, "trial", "FAIL"), "error": INTERRUPTED}])
            self.outcome.failed += 1
            self._enqueue_retry(
                t.params, t.user_attrs, t.number, "driver_interrupted", count_against_budget=False
            )

    def _enqueue(self, params: Mapping[str, Any], **attrs: Any) -> None:
        """Enqueue a point; the driver records it as `params_json`, since a WAITING trial's
        parameters are not part of Optuna's public trial view."""
        self.study.enqueue_trial(
            dict(params), user_attrs={**attrs, "params_json": params_key(params)}, skip_if_exists=False
        )

    def _enqueue_retry(
        self,
        params: Mapping[str, Any],
        attrs: Mapping[str, Any],
        number: int,
        reason: str,
        count_against_budget: bool = True,
    ) -> bool:
        attempt = int(attrs.get("attempt", 1))
        retries = int(attrs.get("retries", 0)) + (1 if count_against_budget else 0)
        if retries > self.cfg.max_retries:
            return False
        self._enqueue(
            params,
            retry_of=number,
            retry_reason=reason,
            root=int(attrs.get("root", number)),
            attempt=attempt + 1,
            retries=retries,
            seed=int(attrs.get("seed", derive_seed(self.cfg.seed, number))),
        )
        self._n_waiting += 1
        self.outcome.retried += 1
        return True

    def _grid(self) -> list[dict[str, Any]]:
        return grid_points(self.spec.space, self.spec.grid)[: self.cfg.n_trials]

    def enqueue_grid(self) -> int:
        """Plan the grid points that are neither done, waiting, running nor given up on; return how
        many. They are enqueued in order, a window at a time (`_top_up_grid`): Optuna's ask scans
        the queue, so a queue of 10,000 points would make every ask cost O(10,000)."""
        covered = set()
        for t in self.study.get_trials(deepcopy=False):
            gave_up = t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "task_error"
            if gave_up or t.state in COVERING:
                covered.add(t.user_attrs.get("params_json") or params_key(t.params))
        planned = [point for point in self._grid() if params_key(point) not in covered]
        self._grid_pending.extend(planned)
        self._top_up_grid()
        return len(planned)

    def _top_up_grid(self) -> None:
        """Enqueue planned grid points until `grid_window` wait in the queue (bulk: one flush)."""
        while self._grid_pending and self._n_waiting < self.grid_window:
            self._enqueue(self._grid_pending.popleft(), attempt=1, retries=0)
            self._n_waiting += 1

    def _count_waiting_and_logical(self) -> None:
        """Read the study once; afterwards the driver (its only writer) keeps the counts itself."""
        trials = self.study.get_trials(deepcopy=False)
        self._n_waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
        self._n_logical = sum(
            1 for t in trials if t.state != TrialState.WAITING and "retry_of" not in t.user_attrs
        )

    def _next_trial(self) -> optuna.Trial | None:
        if self._grid_pending and self._n_waiting * 2 < self.grid_window:
            self._top_up_grid()
        popped_waiting = self._n_waiting > 0
        if not popped_waiting:
            if self.cfg.sampler == "grid":
                return None
            if self.cfg.n_trials is not None and self._n_logical >= self.cfg.n_trials:
                return None
        t = time.perf_counter()
        trial = self.study.ask(fixed_distributions=self.dists)
        if popped_waiting:
            self._n_waiting -= 1
        attrs = trial.user_attrs  # one storage read; the driver keeps its own copy below
        if not popped_waiting or "retry_of" not in attrs:
            self._n_logical += 1
        root = int(attrs.get("root", trial.number))
        meta = {
            "root": root,
            "seed": int(attrs.get("seed", derive_seed(self.cfg.seed, root))),
            "attempt": int(attrs.get("attempt", 1)),
            "retries": int(attrs.get("retries", 0)),
        }
        if "seed" not in attrs:
            trial.set_user_attr("seed", meta["seed"])
        self.meta[trial.number] = meta
        self.trials[trial.number] = trial
        self.timings["ask"] += time.perf_counter() - t
        return trial

    def _submit(self, pool: ActorPool, slot: int, trial: optuna.Trial, chunk: int) -> None:
        meta = self.meta[trial.number]
        request = {
            "params": dict(trial.params),
            "seed": meta["seed"],
            "trial": trial.number,
            "chunk": chunk,
            "n_chunks": self.cfg.n_chunks,
        }
        root = meta["root"]
        if root in self.checkpoints and self.checkpoints[root][0] == chunk:
            request["checkpoint"] = self.checkpoints[root][1]
        pool.submit(slot, trial.number, chunk, meta["attempt"], request)

    def _first_chunk(self, trial: optuna.Trial) -> int:
        """A retry resumes at the chunk after the last checkpoint its root trial returned."""
        root = self.meta[trial.number]["root"]
        return self.checkpoints[root][0] if root in self.checkpoints else 0

    def _finish(
        self,
        trial: optuna.Trial,
        state: TrialState,
        fields: dict[str, Any],
        rows_before: list[dict[str, Any]] = (),  # type: ignore[assignment]
        values: list[float] | None = None,
        failure: str | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Queue the attempt's final row (after `rows_before`) to land with the round's rows, and
        the tell (then `after`) to follow once they have landed — in that order."""
        self._rows.extend([*rows_before, {**self._base_row(trial, "trial", state.name), **fields}])

        def tell() -> None:
            t = time.perf_counter()
            if failure is not None:
                trial.set_user_attr("failure_kind", failure)
                trial.set_user_attr("error", str(fields.get("error", ""))[:2000])
            self.study.tell(trial, values, state=state)
            self.timings["tell"] += time.perf_counter() - t
            if state == TrialState.COMPLETE:
                self.outcome.complete += 1
                self.checkpoints.pop(self.meta[trial.number]["root"], None)
            elif state == TrialState.PRUNED:
                self.outcome.pruned += 1
            else:
                self.outcome.failed += 1
            del self.trials[trial.number]
            self.meta.pop(trial.number, None)
            if after is not None:
                after()

        self._then.append(tell)

    def _commit(self) -> None:
        """Land the round's rows with one sink append, then run what waited for them. With
        `study.overlap_land` the append is sent and the loop goes on; what waits for it runs when the
        next round commits, before the next asks once the sink has answered, or when the pool runs
        dry (`_settle`) - never before the rows have landed."""
        self._settle()
        rows, then = self._rows, self._then
        self._rows, self._then = [], []
        if rows and self.cfg.overlap_land:
            t = time.perf_counter()
            self._pending = (self.sink.append.remote(rows), rows, then)
            self.timings["land"] += time.perf_counter() - t
            return
        if rows:
            self._land(rows)
        for step in then:
            step()

    def _settle(self, block: bool = True) -> None:
        """Wait for the append in flight (if `block`, else only if the sink has answered), then run
        what waited for it. A sink that died meanwhile gets the rows again (`_land_now`'s retries)."""
        if self._pending is None:
            return
        ref, rows, then = self._pending
        if not block and not ray.wait([ref], timeout=0)[0]:
            return
        self._pending = None
        t = time.perf_counter()
        try:
            self.outcome.rows_written += ray.get(ref)
        except ray.exceptions.RayActorError:
            self._land_now(rows)
        finally:
            self.timings["land"] += time.perf_counter() - t
        for step in then:
            step()

    def _handle(self, pool: ActorPool, c: Completion) -> None:
        trial = self.trials[c.job.trial]
        if not c.ok:
            error = c.error or "unknown error"
            retry = None
            if c.failure == "actor_died":
                meta = self.meta[trial.number]

                def retry() -> None:
                    self._enqueue_retry(trial.params, meta, trial.number, "actor_died")

            self._finish(
                trial, TrialState.FAIL, {"step": c.job.chunk, "error": error}, failure=c.failure, after=retry
            )
            return
        r = c.result or {}
        who = {k: r.get(k) for k in ("actor_id", "node_id", "ts_start", "ts_end")}
        extra_rows = [
            {**self._base_row(trial, row.get("row_kind", "detail"), "RUNNING"), **who, **row}
            for row in r.get("rows", [])
        ]
        last = c.job.chunk == self.cfg.n_chunks - 1
        if not last:
            if "checkpoint" in r:
                self.checkpoints[self.meta[trial.number]["root"]] = (c.job.chunk + 1, r["checkpoint"])
            inter = None if r.get("intermediate") is None else float(r["intermediate"])
            step = {**who, "step": c.job.chunk, "intermediate": inter}
            self._rows.extend([*extra_rows, {**self._base_row(trial, "chunk", "RUNNING"), **step}])
            if inter is not None and len(self.spec.objectives) == 1:
                trial.report(inter, c.job.chunk)
                if trial.should_prune():
                    self._finish(trial, TrialState.PRUNED, step)
                    return
            slot, chunk = c.job.slot, c.job.chunk + 1
            self._then.append(lambda: self._submit(pool, slot, trial, chunk))
            return
        objectives = r.get("objectives") or {}
        missing = [o for o in self.spec.objectives if o not in objectives]
        bad = [o for o in self.spec.objectives if o in objectives and not _finite(objectives[o])]
        if missing or bad:
            error = (
                f"task returned objectives {sorted(objectives)}; expected finite values for "
                f"{list(self.spec.objectives)} (missing {missing}, not finite {bad})"
            )
            self._finish(trial, TrialState.FAIL, {**who, "error": error}, extra_rows, failure="task_error")
            return
        values = [float(objectives[o]) for o in self.spec.objectives]
        metrics = {k: v for k, v in (r.get("metrics") or {}).items() if k not in BASE_NAMES}
        others = {k: v for k, v in objectives.items() if k not in BASE_NAMES}
        named = dict(zip(self.spec.objectives, values, strict=True))
        fields = {**who, "step": c.job.chunk, **metrics, **others, **named}
        self._finish(trial, TrialState.COMPLETE, fields, extra_rows, values=values)

    def run(
        self, resume: bool = False, on_progress: Callable[[StudyOutcome], None] | None = None
    ) -> StudyOutcome:
        if resume:
            self._wait_for_sink()
            self.reconcile()
        if self.cfg.sampler == "grid":
            self.enqueue_grid()
        self._count_waiting_and_logical()
        total = len(self._grid()) if self.cfg.sampler == "grid" else self.cfg.n_trials
        already = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        threads = self.spec.torch_threads or PROFILES.get(self.cfg.profile).torch_threads
        opts = actor_options(self.cfg.profile)
        factory = self.spec.task_factory

        def make_actor(slot: int) -> Any:
            return Evaluator.options(**opts).remote(factory, threads)

        pool = ActorPool(
            make_actor, actors_that_fit(self.cfg.profile, self.cfg.actors), depth=self.cfg.inflight_per_actor
        )
        bar = _progress_bar(total, already, self.progress)

        def progressed() -> None:
            if bar is not None:
                bar.n = already + self.outcome.complete + self.outcome.pruned
                bar.set_postfix(failed=self.outcome.failed, pruned=self.outcome.pruned, refresh=False)
                bar.refresh()
            if on_progress is not None:
                on_progress(self.outcome)

        last_roll = time.monotonic()
        try:
            self._wait_for_sink()
            # model-based samplers ask with every landed trial told; grid and random asks need none
            told_before_ask = self.cfg.sampler not in ("grid", "random")
            while True:
                self._settle(block=told_before_ask)
                asked = []
                for slot in pool.idle_slots():
                    trial = self._next_trial()
                    if trial is None:
                        break
                    asked.append((slot, trial))
                self._flush_journal()  # every asked trial is in the journal before an actor sees it
                for slot, trial in asked:
                    self._submit(pool, slot, trial, self._first_chunk(trial))
                if not pool.inflight:
                    if self._pending is not None:  # its tells may enqueue retries: ask again after
                        self._settle()
                        continue
                    break
                t = time.perf_counter()
                completions = pool.wait(timeout=0.05 if self._pending is not None else 1.0)
                self.timings["wait"] += time.perf_counter() - t
                self.timings["rounds"] += 1
                for c in completions:
                    self._handle(pool, c)
                    self._then.append(progressed)  # after this completion's tell
                self._commit()
                if time.monotonic() - last_roll >= 0.25:  # the sink's timer, not once per round
                    self.sink.maybe_roll.remote()
                    last_roll = time.monotonic()
        finally:
            self._flush_journal()
            if bar is not None:
                bar.close()
            pool.shutdown()
            try:
                stats = ray.get(self.sink.close.remote())
                self.outcome.rows_written = max(self.outcome.rows_written, stats["rows_written"])
            except ray.exceptions.RayError:
                pass  # the next start's recovery publishes whatever was flushed
        self.outcome.seconds = time.perf_counter() - self.t0
        self.outcome.best = best_trials(self.study, self.spec)
        return self.outcome


    def _flush_journal(self) -> None:
        t = time.perf_counter()
        self.journal.flush()
        self.timings["flush"] += time.perf_counter() - t


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _progress_bar(total: int | None, initial: int, enabled: bool):
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    every = 0.2 if sys.stderr.isatty() else 5.0
    return tqdm(
        total=total, initial=initial, desc="trials", unit="trial", dynamic_ncols=True, mininterval=every
    )
