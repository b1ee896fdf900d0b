"""What a sweep searches and how: the `study` config, the search space, grid points, seeds, sampler.

The study loop (cluster/study.py) drives Optuna; this module holds everything it is configured
with, so the loop stays a loop (DESIGN decision 1, house rule 10):

- a search space maps each parameter to one Optuna distribution: a plain entry
  ("categorical", [values]) / ("float", low, high[, "log"]) / ("int", low, high[, step]), or an
  Optuna `BaseDistribution` itself. A trial's parameters are a flat dict of typed values;
- grids are enumerated here, by the driver: the product of a categorical space, or an explicit
  list of points (`check_grid`) when the grid is not a full product. Our own measured reason for
  not using `GridSampler` (optuna 5.0): it counts FAIL trials as visited (a failed point would
  never be retried) and calls `study.stop()` from `tell`, which raises outside `study.optimize`;
- trial seeds are `derive_seed(base_seed, root_trial)`, stable across processes;
- `make_sampler` / `make_pruner` build the Optuna objects a `StudyConfig` names;
- `BufferedJournal` (issue 20) [ours]: the driver's journal backend. Optuna's
  `JournalFileBackend` takes a lock file, appends and fsyncs once per storage operation (create
  trial, each parameter, each attribute, tell: ~5 per trial), and re-opens and stats the file on
  every read. The buffered backend keeps appended records in memory and writes them with one
  lock + fsync on `flush()`, which the loop calls once per round, before any actor sees a trial
  asked in that round (so a landed row never names a trial the journal lacks); reads of records
  the driver itself appended come from memory. The driver is the journal's only writer (the run
  lock), which is what makes this sound. A SIGKILL loses at most the records of one round: tells
  whose rows already landed (the resume tells them from the rows, as before) and asks no actor
  was given.

- `WaitingIndexStorage` (issue 20) [ours]: `Study.ask` looks for a queued (WAITING) trial by
  listing *every* trial of the study and filtering by state (optuna 5.0,
  `Study._pop_waiting_trial_id`), so each ask costs O(trials so far): measured, that alone made
  the per-trial cost at trial 3,000 several times that at trial 100. This `JournalStorage`
  keeps the ids of WAITING trials as the driver creates and pops them and answers that one query
  from them; every other query is Optuna's. With the grid enqueued in windows (cluster/study.py)
  an ask costs O(window), not O(trials).

All of it uses Optuna's public API only (`BaseJournalBackend` and `BaseStorage`'s methods are its
documented extension points) [our own design].
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from cluster.resources import PROFILES
from cluster.results import BASE_NAMES
from cluster.rundir import JOURNAL
from methods.errors import ConfigError

SAMPLERS = ("grid", "tpe", "nsga2", "random")
Space = Mapping[str, tuple | BaseDistribution]


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
        inflight_per_actor: trials queued on one actor at once (issue 20): > 1 hides the
            driver's round trip behind the actor's work for cheap trials; 1 keeps today's
            one-trial-per-actor behaviour (an actor's death then fails only its running trial).
        overlap_land: send a round's rows to the sink and go on (ask, submit, wait) while it writes
            them, telling the study once they have landed (issue 20): one append in flight, and
            "rows land, then tell" still holds; for cheap single-chunk trials. Off: each round
            waits for its append.
    """

    sampler: Literal["grid", "tpe", "nsga2", "random"] = "grid"
    n_trials: int | None = None
    seed: int = 0
    actors: int = 2
    profile: str = "evaluator_cpu1"
    n_chunks: int = 1
    pruner: Literal["none", "median"] = "none"
    max_retries: int = 2
    inflight_per_actor: int = 1
    overlap_land: bool = False
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
        if self.inflight_per_actor < 1:
            raise ConfigError(
                f"study.inflight_per_actor must be >= 1 (trials queued per actor), got "
                f"{self.inflight_per_actor}; use 1 unless trials take milliseconds."
            )
        if self.overlap_land and self.n_chunks > 1:
            raise ConfigError(
                f"study.overlap_land needs single-chunk trials (a trial's next chunk goes to its actor "
                f"only after the chunk's rows land); got n_chunks={self.n_chunks}. Set "
                "study.overlap_land=false or study.n_chunks=1."
            )
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


# -- search space -----------------------------------------------------------------------------
def distributions(space: Space) -> dict[str, BaseDistribution]:
    """Space entries → Optuna distributions (an entry that already is one is kept).

    Entries: ("categorical", [values]), ("float", low, high[, "log"]), ("int", low, high[, step]).
    """
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.items():
        if isinstance(spec, BaseDistribution):
            out[name] = spec
            continue
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


def grid_choices(space: Space) -> dict[str, list[Any]]:
    """Each parameter's list of values; a grid needs a categorical entry for every parameter."""
    out = {}
    for name, dist in distributions(space).items():
        if not isinstance(dist, CategoricalDistribution):
            raise ConfigError(
                f"The grid sampler needs a list of values for every parameter; {name} is "
                f"{space[name]!r}. Give ('categorical', [...]) or choose sampler tpe/nsga2/random."
            )
        out[name] = list(dist.choices)
    return out


def grid_points(space: Space, grid: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The grid's points in order: `grid` when given (see `check_grid`), else every point of the
    space's product in declared order (last parameter varies fastest)."""
    if grid is not None:
        return [dict(p) for p in check_grid(space, grid)]
    choices = grid_choices(space)
    names = list(choices)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices.values())]


def check_grid(space: Space, grid: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Validate explicit grid points against a categorical space; return them with canonical values.

    Every point is a flat dict with exactly the space's keys, each value one of that key's choices
    (same type; an int may stand for an equal float choice). Duplicates are refused.
    """
    if isinstance(grid, Mapping | str) or not len(grid):
        raise ConfigError(f"grid must be a non-empty sequence of points (flat dicts), got {grid!r}.")
    choices = grid_choices(space)
    keys = list(choices)
    out, seen = [], {}
    for i, point in enumerate(grid):
        if not isinstance(point, Mapping):
            raise ConfigError(f"grid point {i} must be a dict of parameter values, got {point!r}.")
        missing = [k for k in keys if k not in point]
        extra = [k for k in point if k not in choices]
        if missing or extra:
            raise ConfigError(
                f"grid point {i} {dict(point)!r} must have exactly the space's keys {keys}; "
                f"missing {missing}, unknown {extra}."
            )
        canonical = {}
        for k in keys:
            match = [c for c in choices[k] if _same_value(point[k], c)]
            if not match:
                raise ConfigError(
                    f"grid point {i} {dict(point)!r}: {k}={point[k]!r} ({type(point[k]).__name__}) "
                    f"is not one of the space's choices for {k}: {choices[k]}; add it to the space or "
                    f"fix the point."
                )
            canonical[k] = match[0]
        key = params_key(canonical)
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


def params_key(params: Mapping[str, Any]) -> str:
    """A trial's parameters as one canonical JSON string (the `params_json` column; identity of a
    grid point in the driver's own bookkeeping)."""
    return json.dumps(params, sort_keys=True, default=str)


# -- seeds, sampler, pruner -------------------------------------------------------------------
def derive_seed(base_seed: int, root_trial: int) -> int:
    """`hash(base_seed, trial_number)` made stable across processes (house rule 10)."""
    digest = hashlib.blake2b(f"{base_seed}:{root_trial}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def make_sampler(cfg: StudyConfig, n_objectives: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed)
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed)
    # grid points are enqueued, so the sampler only matters for what it would add: nothing.
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def make_pruner(cfg: StudyConfig, n_objectives: int) -> optuna.pruners.BasePruner:
    """Median pruning between chunks; Optuna cannot prune multi-objective studies."""
    if cfg.pruner == "median" and n_objectives == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


# -- the Optuna study ------------------------------------------------------------------------
class BufferedJournal(BaseJournalBackend):
    """A `JournalFileBackend` whose appends wait in memory until `flush()` (see the module docstring).

    Only for a journal with one writer (the driver holding the run lock). `max_pending` bounds the
    memory held between flushes: a larger backlog is flushed at once.
    """

    def __init__(self, path: str | Path, max_pending: int = 50_000) -> None:
        self.file = JournalFileBackend(str(path))
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._n_file: int | None = None  # records in the file, known after the first full read
        self.flushes = 0
        self.records_flushed = 0

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._n_file is None or log_number_from < self._n_file:
            out = list(self.file.read_logs(log_number_from))
            if self._n_file is None:
                self._n_file = log_number_from + len(out)
        n_file = self._n_file
        return out + self._pending[max(0, log_number_from - n_file) :]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._n_file is None:
            self.read_logs(0)
        self._pending.extend(logs)
        if len(self._pending) >= self.max_pending:
            self.flush()

    def flush(self) -> int:
        """Write every pending record with one lock, one write and one fsync; return how many."""
        if not self._pending:
            return 0
        n = len(self._pending)
        self.file.append_logs(self._pending)
        self._n_file = (self._n_file or 0) + n
        self._pending = []
        self.flushes += 1
        self.records_flushed += n
        return n

    @property
    def pending(self) -> int:
        return len(self._pending)


class WaitingIndexStorage(JournalStorage):
    """A `JournalStorage` that answers "the WAITING trials of a study" from an index (module docstring).

    Sound only for a journal with one writer (the driver): trials created or popped by another
    process would not be seen by the index.
    """

    def __init__(self, log_storage: BaseJournalBackend) -> None:
        super().__init__(log_storage)
        self._waiting: dict[int, dict[int, None]] = {}  # study id -> WAITING trial ids, in order

    def _index(self, study_id: int) -> dict[int, None]:
        if study_id not in self._waiting:
            trials = super().get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
            ids = (self.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials)
            self._waiting[study_id] = dict.fromkeys(ids)
        return self._waiting[study_id]

    def create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> int:
        index = self._index(study_id)
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is not None and template_trial.state == TrialState.WAITING:
            index[trial_id] = None
        return trial_id

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            if state != TrialState.WAITING and self.get_trial(trial_id).state != TrialState.WAITING:
                for index in self._waiting.values():
                    index.pop(trial_id, None)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Any = None
    ) -> list[optuna.trial.FrozenTrial]:
        if states is not None and tuple(states) == (TrialState.WAITING,):
            trials = [self.get_trial(i) for i in self._index(study_id)]
            return copy.deepcopy(trials) if deepcopy else trials
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


def open_study(spec: StudySpec, run_dir: Path, backend: BaseJournalBackend | None = None) -> optuna.Study:
    """The run's study on its journal (`backend`: e.g. a `BufferedJournal` of that journal; default:
    Optuna's `JournalFileBackend`, one fsync per operation)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = backend if backend is not None else JournalFileBackend(str(run_dir / JOURNAL))
    storage = WaitingIndexStorage(backend)
    sampler = make_sampler(spec.study, len(spec.objectives))
    pruner = make_pruner(spec.study, len(spec.objectives))
    if any(s.study_name == spec.sweep for s in optuna.get_all_study_summaries(storage)):
        # load, not create(load_if_exists): the latter appends a CREATE_STUDY record on every resume
        study = optuna.load_study(study_name=spec.sweep, storage=storage, sampler=sampler, pruner=pruner)
    else:
        study = optuna.create_study(
            study_name=spec.sweep,
            storage=storage,
            directions=list(spec.directions),
            sampler=sampler,
            pruner=pruner,
        )
    if [d.name.lower() for d in study.directions] != list(spec.directions):
        raise ConfigError(
            f"The run's study optimises {[d.name.lower() for d in study.directions]} but this sweep "
            f"asks for {list(spec.directions)}; resume with the config the run started with."
        )
    return study


def best_trials(study: optuna.Study, spec: StudySpec) -> list[dict[str, Any]]:
    """The best trial (single objective) or the Pareto front (several), as plain dicts."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    best = [study.best_trial] if len(spec.objectives) == 1 else study.best_trials
    return [
        {"trial": t.number, **t.params, **dict(zip(spec.objectives, t.values, strict=True))} for t in best
    ]
