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
- grids are enumerated by the driver and enqueued point by point. Our own measured reason for
  not using `GridSampler` (optuna 5.0): it counts FAIL trials as visited (a failed point would never
  be retried) and calls `study.stop()` from `tell`, which raises outside `study.optimize`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import ray
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from actors.evaluator import Evaluator
from actors.pool import ActorPool, Completion
from actors.sink import ResultSink
from cluster.resources import PROFILES, actor_options
from cluster.results import BASE_NAMES, read_table
from cluster.rundir import JOURNAL
from methods.errors import ConfigError, EvfarmUserError

SAMPLERS = ("grid", "tpe", "nsga2", "random")
Space = Mapping[str, tuple]


@dataclass(frozen=True)
class StudyConfig:
    """How a sweep searches; every sweep config embeds one as its `study` table.

    Args:
        sampler: grid (driver-enumerated, reproducible), tpe, nsga2 or random.
        n_trials: trials to run (grid: cap on grid points; None = the whole grid).
        seed: base seed; trial seeds are `derive_seed(seed, root_trial_number)`.
        actors: evaluator actors in the pool.
        profile: named resource profile of the evaluators (cluster/resources.py).
        n_chunks: chunks per trial; > 1 enables pruning of single-objective studies.
        pruner: "none" or "median" (single objective only).
        max_retries: re-runs of a trial whose actor died.
    """

    sampler: Literal["grid", "tpe", "nsga2", "random"] = "grid"
    n_trials: int | None = None
    seed: int = 0
    actors: int = 2
    profile: str = "evaluator_cpu1"
    n_chunks: int = 1
    pruner: Literal["none", "median"] = "none"
    max_retries: int = 2
    version: int = 1

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"study.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.actors < 1:
            raise ConfigError(f"study.actors must be >= 1, got {self.actors}.")
        if self.n_chunks < 1:
            raise ConfigError(f"study.n_chunks must be >= 1, got {self.n_chunks}.")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"study.n_trials must be >= 1 or unset, got {self.n_trials}.")
        if self.max_retries < 0:
            raise ConfigError(f"study.max_retries must be >= 0, got {self.max_retries}.")
        if self.profile not in PROFILES:
            PROFILES.get(self.profile)  # raises the error listing known profiles


@dataclass
class StudySpec:
    """Everything the loop needs about one sweep."""

    sweep: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    space: Space
    task_factory: Callable[[], Any]
    study: StudyConfig
    torch_threads: int | None = None
    # Explicit grid points (grid sampler only): flat dicts of typed values, enumerated in this
    # order instead of the product of `space`; other samplers draw from `space`.
    grid: tuple[Mapping[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.objectives) != len(self.directions) or not self.objectives:
            raise ConfigError(
                f"Need one direction per objective, got objectives={self.objectives} "
                f"directions={self.directions}."
            )
        for d in self.directions:
            if d not in ("minimize", "maximize"):
                raise ConfigError(f"A direction is 'minimize' or 'maximize', got {d!r}.")
        clash = set(self.space) & set(BASE_NAMES) | set(self.objectives) & set(BASE_NAMES)
        if clash:
            raise ConfigError(
                f"Parameter/objective names {sorted(clash)} clash with result columns; rename them."
            )
        distributions(self.space)  # validates the space
        if self.grid is not None:
            self.grid = check_grid(self.space, self.grid)
        if self.study.sampler == "grid":
            grid_points(self.space, self.grid)


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


# -- search space -----------------------------------------------------------------------------
def distributions(space: Space) -> dict[str, BaseDistribution]:
    """Plain space entries → Optuna distributions.

    Entries: ("categorical", [values]), ("float", low, high[, "log"]), ("int", low, high[, step]).
    """
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.items():
        kind = spec[0] if spec else None
        if kind == "categorical" and len(spec) == 2 and len(spec[1]) > 0:
            out[name] = CategoricalDistribution(list(spec[1]))
        elif kind == "float" and len(spec) in (3, 4):
            out[name] = FloatDistribution(
                float(spec[1]), float(spec[2]), log=len(spec) == 4 and spec[3] == "log"
            )
        elif kind == "int" and len(spec) in (3, 4):
            out[name] = IntDistribution(
                int(spec[1]), int(spec[2]), step=int(spec[3]) if len(spec) == 4 else 1
            )
        else:
            raise ConfigError(
                f"Search-space entry {name}={spec!r} is not understood. Use ('categorical', [values]), "
                f"('float', low, high[, 'log']) or ('int', low, high[, step])."
            )
    return out


def grid_points(space: Space, grid: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The grid's points in order: `grid` when given (see `check_grid`), else every point of the
    space's product in declared order (last parameter varies fastest)."""
    if grid is not None:
        return [dict(p) for p in check_grid(space, grid)]
    names, values = [], []
    for name, spec in space.items():
        if spec[0] != "categorical":
            raise ConfigError(
                f"The grid sampler needs a list of values for every parameter; {name} is {spec!r}. "
                f"Give ('categorical', [...]) or choose sampler tpe/nsga2/random."
            )
        names.append(name)
        values.append(list(spec[1]))
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def check_grid(space: Space, grid: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Validate explicit grid points against a categorical space; return them with canonical values.

    Every point is a flat dict with exactly the space's keys, each value one of that key's choices
    (same type; an int may stand for an equal float choice). Duplicates are refused.
    """
    if isinstance(grid, Mapping) or isinstance(grid, str) or not len(grid):
        raise ConfigError(f"grid must be a non-empty sequence of points (flat dicts), got {grid!r}.")
    for name, spec in space.items():
        if not spec or spec[0] != "categorical":
            raise ConfigError(
                f"Explicit grid points need a categorical space; {name} is {spec!r}. "
                f"Give ('categorical', [...]) for every parameter."
            )
    keys = list(space)
    out, seen = [], {}
    for i, point in enumerate(grid):
        if not isinstance(point, Mapping):
            raise ConfigError(f"grid point {i} must be a dict of parameter values, got {point!r}.")
        missing = [k for k in keys if k not in point]
        extra = [k for k in point if k not in space]
        if missing or extra:
            raise ConfigError(
                f"grid point {i} {dict(point)!r} must have exactly the space's keys {keys}; "
                f"missing {missing}, unknown {extra}."
            )
        canonical = {}
        for k in keys:
            choices = list(space[k][1])
            match = [c for c in choices if _same_value(point[k], c)]
            if not match:
                raise ConfigError(
                    f"grid point {i} {dict(point)!r}: {k}={point[k]!r} ({type(point[k]).__name__}) "
                    f"is not one of the space's choices for {k}: {choices}; add it to the space or fix"
                    f" the point."
                )
            canonical[k] = match[0]
        key = _params_key(canonical)
        if key in seen:
            raise ConfigError(
                f"grid point {i} {canonical!r} repeats point {seen[key]}; list each point once."
            )
        seen[key] = i
        out.append(canonical)
    return tuple(out)


def _same_value(value: Any, choice: Any) -> bool:
    if type(value) is type(choice):
        return value == choice
    numeric = isinstance(value, int) and not isinstance(value, bool) and isinstance(choice, float)
    return numeric and value == choice


def derive_seed(base_seed: int, root_trial: int) -> int:
    """`hash(base_seed, trial_number)` made stable across processes (house rule 10)."""
    digest = hashlib.blake2b(f"{base_seed}:{root_trial}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def make_sampler(cfg: StudyConfig, n_objectives: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed)
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed)
    # grid points are enqueued, so the sampler only matters for what it would add: nothing.
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def open_study(spec: StudySpec, run_dir: Path) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(run_dir / JOURNAL)))
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if spec.study.pruner == "median" and len(spec.objectives) == 1
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=spec.sweep,
        storage=storage,
        load_if_exists=True,
        directions=list(spec.directions),
        sampler=make_sampler(spec.study, len(spec.objectives)),
        pruner=pruner,
    )
    if [d.name.lower() for d in study.directions] != list(spec.directions):
        raise ConfigError(
            f"The run's study optimises {[d.name.lower() for d in study.directions]} but this sweep "
            f"asks for {list(spec.directions)}; resume with the config the run started with."
        )
    return study


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
        self.study = open_study(spec, run_dir)
        self.sink = ResultSink.options(**actor_options("sink_head")).remote(
            str(run_dir), dict(sink_metadata or {}), roll_seconds=sink_roll_seconds
        )
        self.outcome = StudyOutcome(run_dir=run_dir)
        self.outcome.recovered_rows = ray.get(self.sink.stats.remote())["recovered_rows"]
        self.trials: dict[int, optuna.Trial] = {}
        self.meta: dict[int, dict[str, int]] = {}  # number -> root, seed, attempt, retries
        self._n_waiting = self._n_logical = 0
        # root trial -> (next chunk, checkpoint): lets a retried stream resume after its last
        # landed chunk instead of recounting it (held in driver memory only).
        self.checkpoints: dict[int, tuple[int, Any]] = {}
        self.t0 = time.perf_counter()

    # rows ------------------------------------------------------------------------------------
    def _land(self, rows: list[dict[str, Any]]) -> None:
        """Send rows to the sink and wait for the flush; survive a sink restart."""
        for attempt in range(5):
            try:
                self.outcome.rows_written += ray.get(self.sink.append.remote(rows))
                return
            except ray.exceptions.RayActorError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

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
            "params_json": _params_key(params),
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
            # A RUNNING trial of an earlier driver has no live Trial object: set attrs via storage.
            self.study._storage.set_trial_user_attr(t._trial_id, "failure_kind", "driver_interrupted")
            self.study._storage.set_trial_user_attr(
                t._trial_id, "error", "driver stopped while the trial ran"
            )
            self.study.tell(t.number, state=TrialState.FAIL)
            self._land(
                [{**self._base_row(t, "trial", "FAIL"), "error": "driver stopped while the trial ran"}]
            )
            self.outcome.failed += 1
            self._enqueue_retry(t.params, t.user_attrs, t.number, count_against_budget=False)

    def _enqueue_retry(
        self, params: dict[str, Any], attrs: Mapping[str, Any], number: int, count_against_budget: bool = True
    ) -> bool:
        attempt = int(attrs.get("attempt", 1))
        retries = int(attrs.get("retries", 0)) + (1 if count_against_budget else 0)
        if retries > self.cfg.max_retries:
            return False
        self.study.enqueue_trial(
            params,
            user_attrs={
                "retry_of": number,
                "root": int(attrs.get("root", number)),
                "attempt": attempt + 1,
                "retries": retries,
                "seed": int(attrs.get("seed", derive_seed(self.cfg.seed, number))),
            },
            skip_if_exists=False,
        )
        self._n_waiting += 1
        self.outcome.retried += 1
        return True

    def enqueue_grid(self) -> int:
        """Enqueue grid points that are neither done, waiting, running nor given up on."""
        points = grid_points(self.spec.space, self.spec.grid)
        if self.cfg.n_trials is not None:
            points = points[: self.cfg.n_trials]
        trials = self.study.get_trials(deepcopy=False)
        covered = set()
        for t in trials:
            params = t.params if t.params else t.system_attrs.get("fixed_params", {})
            key = _params_key(params)
            gave_up = t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "task_error"
            if (
                t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
                or gave_up
            ):
                covered.add(key)
        added = 0
        for point in points:
            if _params_key(point) not in covered:
                self.study.enqueue_trial(point, user_attrs={"attempt": 1, "retries": 0})
                added += 1
        return added

    def _count_waiting_and_logical(self) -> None:
        """Read the study once; afterwards the driver (its only writer) keeps the counts itself."""
        trials = self.study.get_trials(deepcopy=False)
        self._n_waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
        self._n_logical = sum(
            1 for t in trials if t.state != TrialState.WAITING and "retry_of" not in t.user_attrs
        )

    def _next_trial(self) -> optuna.Trial | None:
        popped_waiting = self._n_waiting > 0
        if not popped_waiting:
            if self.cfg.sampler == "grid":
                return None
            if self.cfg.n_trials is not None and self._n_logical >= self.cfg.n_trials:
                return None
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
    ) -> None:
        """Land the attempt's final row (after `rows_before`), then tell the study — in that order."""
        self._land([*rows_before, {**self._base_row(trial, "trial", state.name), **fields}])
        if failure is not None:
            trial.set_user_attr("failure_kind", failure)
            trial.set_user_attr("error", str(fields.get("error", ""))[:2000])
        self.study.tell(trial, values, state=state)
        if state == TrialState.COMPLETE:
            self.outcome.complete += 1
            self.checkpoints.pop(self.meta[trial.number]["root"], None)
        elif state == TrialState.PRUNED:
            self.outcome.pruned += 1
        else:
            self.outcome.failed += 1
        del self.trials[trial.number]

    def _handle(self, pool: ActorPool, c: Completion) -> None:
        trial = self.trials[c.job.trial]
        if not c.ok:
            error = c.error or "unknown error"
            self._finish(trial, TrialState.FAIL, {"step": c.job.chunk, "error": error}, failure=c.failure)
            if c.failure == "actor_died":
                self._enqueue_retry(dict(trial.params), self.meta[trial.number], trial.number)
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
            self._land([*extra_rows, {**self._base_row(trial, "chunk", "RUNNING"), **step}])
            if inter is not None and len(self.spec.objectives) == 1:
                trial.report(inter, c.job.chunk)
                if trial.should_prune():
                    self._finish(trial, TrialState.PRUNED, step)
                    return
            self._submit(pool, c.job.slot, trial, c.job.chunk + 1)
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
        fields = {
            **who,
            "step": c.job.chunk,
            **metrics,
            **others,
            **dict(zip(self.spec.objectives, values, strict=True)),
        }
        self._finish(trial, TrialState.COMPLETE, fields, extra_rows, values=values)

    def run(
        self, resume: bool = False, on_progress: Callable[[StudyOutcome], None] | None = None
    ) -> StudyOutcome:
        if resume:
            self.reconcile()
        if self.cfg.sampler == "grid":
            self.enqueue_grid()
        self._count_waiting_and_logical()
        total = (
            len(grid_points(self.spec.space, self.spec.grid))
            if self.cfg.sampler == "grid"
            else self.cfg.n_trials
        )
        if self.cfg.sampler == "grid" and self.cfg.n_trials is not None:
            total = min(total, self.cfg.n_trials)
        already = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        threads = self.spec.torch_threads or PROFILES.get(self.cfg.profile).torch_threads
        opts = actor_options(self.cfg.profile)
        factory = self.spec.task_factory

        def make_actor(slot: int) -> Any:
            return Evaluator.options(**opts).remote(factory, threads)

        pool = ActorPool(make_actor, actors_that_fit(self.cfg.profile, self.cfg.actors))
        bar = _progress_bar(total, already, self.progress)
        try:
            while True:
                for slot in pool.idle_slots():
                    trial = self._next_trial()
                    if trial is None:
                        break
                    self._submit(pool, slot, trial, self._first_chunk(trial))
                if not pool.inflight:
                    break
                for c in pool.wait(timeout=1.0):
                    self._handle(pool, c)
                    if bar is not None:
                        bar.n = already + self.outcome.complete + self.outcome.pruned
                        bar.set_postfix(failed=self.outcome.failed, pruned=self.outcome.pruned, refresh=False)
                        bar.refresh()
                    if on_progress is not None:
                        on_progress(self.outcome)
                self.sink.maybe_roll.remote()
        finally:
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


def actors_that_fit(profile: str, wanted: int) -> int:
    """How many actors of `profile` the connected cluster can hold at once (at most `wanted`).

    Actors that cannot be placed would wait forever and their trials with them, so a cluster that
    holds none is an error and one that holds fewer gets a smaller pool (with a message).
    """
    prof = PROFILES.get(profile)
    need = {"CPU": prof.num_cpus, "GPU": prof.num_gpus, **prof.resources}
    total = ray.cluster_resources()
    fits = wanted
    for name, amount in need.items():
        if amount > 0:
            fits = min(fits, int(total.get(name, 0.0) // amount + 1e-9))
    if fits < 1:
        have = {k: total.get(k, 0.0) for k in need}
        raise EvfarmUserError(
            f"The cluster cannot place a single actor of profile {profile!r}: it needs {need} per actor, "
            f"the cluster has {have}. Start the cluster with those resources (e.g. `evfarm cluster up "
            f"--resources ...`), or choose another profile with --set study.profile=NAME."
        )
    if fits < wanted:
        print(f"note: the cluster holds {fits} actor(s) of profile {profile!r}, not {wanted}; using {fits}")
    return fits


def best_trials(study: optuna.Study, spec: StudySpec) -> list[dict[str, Any]]:
    """The best trial (single objective) or the Pareto front (several), as plain dicts."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    best = [study.best_trial] if len(spec.objectives) == 1 else study.best_trials
    return [
        {"trial": t.number, **t.params, **dict(zip(spec.objectives, t.values, strict=True))} for t in best
    ]


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

    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc="trials",
        unit="trial",
        dynamic_ncols=True,
        mininterval=0.2 if interactive else 5.0,
    )
