"""The driver at scale (issue 20): buffered journal, rounds of completions, several trials per actor.

Batching must not change what a study records: the same trials, parameters, values and rows as
one operation (and one trial per actor) at a time.
"""

from __future__ import annotations

import collections

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from task_hooks import Faults, with_faults

from cluster.results import read_table, summarise_trials
from cluster.search import BufferedJournal, WaitingIndexStorage
from cluster.study import StudyConfig, StudyRunner
from cluster.testing import toy_spec


def _ask_tell(storage, n: int = 40, flush=lambda: None) -> list[tuple]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.TPESampler(seed=1))
    study.enqueue_trial({"x": 0.5}, user_attrs={"attempt": 1})
    for i in range(n):
        t = study.ask()
        x = t.suggest_float("x", -3, 3)
        t.set_user_attr("i", i)
        if i % 7 == 3:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(t, (x - 1) ** 2)
        if i % 5 == 0:
            flush()
    flush()
    return [(t.number, t.state, t.params, t.values, t.user_attrs) for t in study.trials]


def test_the_buffered_journal_records_what_the_plain_one_records(tmp_path):
    plain = _ask_tell(JournalStorage(JournalFileBackend(str(tmp_path / "plain.journal"))))
    backend = BufferedJournal(tmp_path / "buffered.journal")
    buffered = _ask_tell(JournalStorage(backend), flush=backend.flush)
    assert buffered == plain
    assert backend.flushes == 9 and backend.pending == 0  # 8 in the loop + the last
    reloaded = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "buffered.journal")))
    )
    assert [(t.number, t.state, t.params, t.values, t.user_attrs) for t in reloaded.trials] == plain


def test_unflushed_records_are_not_on_disk_and_a_reader_sees_only_flushed_ones(tmp_path):
    backend = BufferedJournal(tmp_path / "j.journal")
    study = optuna.create_study(study_name="s", storage=JournalStorage(backend))
    backend.flush()
    study.ask()
    assert backend.pending == 1  # the created (RUNNING) trial: kept in memory
    disk = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    )
    assert len(disk.trials) == 0
    backend.flush()
    disk = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    )
    assert len(disk.trials) == 1


def _final(run_dir):
    trials = summarise_trials(read_table(run_dir))
    return trials, collections.Counter((r["x"], r["y"], r["state"]) for r in trials)


@pytest.mark.slow
def test_several_trials_per_actor_give_the_same_rows_and_trials(ray_local, tmp_path):
    space = {"x": ("categorical", [0, 1, 2, 3, 4, 5]), "y": ("categorical", [0])}
    one = toy_spec(study=StudyConfig(sampler="grid", actors=2, n_chunks=2), space=space)
    many = toy_spec(
        study=StudyConfig(sampler="grid", actors=2, n_chunks=2, inflight_per_actor=3), space=space
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    o1 = StudyRunner(one, tmp_path / "a", "r", progress=False).run()
    o2 = StudyRunner(many, tmp_path / "b", "r", progress=False).run()
    t1, c1 = _final(tmp_path / "a")
    t2, c2 = _final(tmp_path / "b")
    assert c1 == c2 and set(c1.values()) == {1} and len(c1) == 6
    key = lambda r: (r["row_kind"], r["x"], r["y"], r["step"], r["state"], r.get("loss"))  # noqa: E731
    rows1 = collections.Counter(map(key, read_table(tmp_path / "a").to_pylist()))
    rows2 = collections.Counter(map(key, read_table(tmp_path / "b").to_pylist()))
    assert rows1 == rows2  # same chunk, detail and trial rows
    assert (o1.complete, o1.failed, o1.rows_written) == (o2.complete, o2.failed, o2.rows_written)
    assert o2.timings["rounds"] > 0 and o2.timings["ask"] > 0


@pytest.mark.slow
def test_an_actor_dying_with_several_trials_queued_fails_and_retries_each_once(ray_local, tmp_path):
    spec = with_faults(
        toy_spec(study=StudyConfig(sampler="grid", actors=2, inflight_per_actor=3), sleep=0.05),
        Faults(marker_dir=str(tmp_path), crash_at={"x": 1, "y": 2}),
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outcome = StudyRunner(spec, run_dir, "r", progress=False).run()
    trials = summarise_trials(read_table(run_dir))
    complete = collections.Counter((r["x"], r["y"]) for r in trials if r["state"] == "COMPLETE")
    assert len(complete) == 12 and set(complete.values()) == {1}
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert failed and outcome.failed == len(failed) == outcome.retried  # every queued trial retried
    assert len(failed) <= 3  # at most the dead actor's queue
    for f in failed:
        retry = [r for r in trials if r["state"] == "COMPLETE" and (r["x"], r["y"]) == (f["x"], f["y"])][0]
        assert retry["attempt"] == f["attempt"] + 1 and retry["seed"] == f["seed"]
    for r in trials:
        if r["state"] == "COMPLETE":
            assert r["loss"] == pytest.approx((r["x"] - 2) ** 2 + r["y"])


def _queue_story(storage) -> list[tuple]:
    """Enqueue, ask (popping the queue in order), fail one, enqueue it again, ask the rest."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="q", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for x in range(5):
        study.enqueue_trial({"x": float(x)}, skip_if_exists=False)
    asked = [study.ask() for _ in range(3)]
    for t in asked:
        t.suggest_float("x", 0, 10)
    study.tell(asked[0], state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial({"x": 0.0}, user_attrs={"retry_of": 0}, skip_if_exists=False)
    study.tell(asked[1], 1.0)
    rest = [study.ask() for _ in range(5)]  # 3 queued, then 2 fresh ones
    for t in rest:
        t.suggest_float("x", 0, 10)
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return [(t.number, t.state, t.params) for t in study.trials] + [("waiting", len(waiting))]


def test_the_waiting_index_pops_the_queue_as_optuna_does(tmp_path):
    plain = _queue_story(JournalStorage(JournalFileBackend(str(tmp_path / "a.journal"))))
    indexed = _queue_story(WaitingIndexStorage(BufferedJournal(tmp_path / "b.journal")))
    assert indexed == plain
    popped = [(p["x"], st.name) for n, st, p in plain[3:6]]
    assert popped == [(3.0, "RUNNING"), (4.0, "RUNNING"), (0.0, "RUNNING")]  # the queue, in order
    # an index built from a reloaded journal (a resumed driver) sees the trials still queued
    backend = BufferedJournal(tmp_path / "c.journal")
    storage = WaitingIndexStorage(backend)
    study = optuna.create_study(study_name="q", storage=storage)
    for x in range(3):
        study.enqueue_trial({"x": float(x)}, skip_if_exists=False)
    study.ask()
    backend.flush()
    again = optuna.load_study(
        study_name="q", storage=WaitingIndexStorage(BufferedJournal(tmp_path / "c.journal"))
    )
    assert [t.number for t in again.get_trials(states=(optuna.trial.TrialState.WAITING,))] == [1, 2]
    assert again.ask().number == 1


def _stamping_sink(real, delay_s: float):
    """The run's real sink behind a proxy actor that delays each append and records when each trial
    row landed (wall clock, after the real sink acknowledged it)."""
    import time

    import ray

    @ray.remote(num_cpus=0)
    class StampingSink:
        def __init__(self):
            self.landed: dict[int, float] = {}

        def append(self, rows):
            time.sleep(delay_s)
            n = ray.get(real.append.remote(rows))
            now = time.time()
            for r in rows:
                if r["row_kind"] == "trial":
                    self.landed[r["trial_number"]] = now
            return n

        def maybe_roll(self):
            return ray.get(real.maybe_roll.remote())

        def stats(self):
            return ray.get(real.stats.remote())

        def close(self):
            return ray.get(real.close.remote())

        def landed_at(self):
            return self.landed

    return StampingSink.remote()


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_overlapped_landing_tells_a_trial_only_after_its_row_landed_and_records_the_same(
        ray_local, tmp_path, sampler):
    import time

    import ray

    space = {"x": ("categorical", list(range(10))), "y": ("categorical", [0, 1])}
    results = {}
    for overlap in (False, True):
        run_dir = tmp_path / f"o{overlap}"
        run_dir.mkdir()
        study = StudyConfig(sampler=sampler, n_trials=20, actors=2, inflight_per_actor=2,
                            overlap_land=overlap)
        runner = StudyRunner(toy_spec(study=study, space=space), run_dir, "r", progress=False)
        runner.sink = _stamping_sink(runner.sink, delay_s=0.03)
        told: dict[int, float] = {}
        tell = runner.study.tell

        def stamped_tell(trial, *args, _tell=tell, _told=told, **kwargs):
            _told[trial.number] = time.time()
            return _tell(trial, *args, **kwargs)

        runner.study.tell = stamped_tell
        outcome = runner.run()
        landed = ray.get(runner.sink.landed_at.remote())
        assert outcome.complete == 20 and sorted(told) == sorted(landed)
        assert all(told[n] >= landed[n] for n in told)  # rows land, then the study is told
        trials, counts = _final(run_dir)
        assert len(trials) == 20 and {r["state"] for r in trials} == {"COMPLETE"}
        results[overlap] = sorted((r["trial_number"], r["x"], r["y"], r["loss"]) for r in trials)
    if sampler == "grid":
        assert results[False] == results[True]
    assert {k[1:] for k in results[True]} <= {(x, y, (x - 2) ** 2 + y) for x in range(10) for y in (0, 1)}


def test_overlapped_landing_refuses_chunked_trials():
    from methods.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap_land"):
        StudyConfig(n_chunks=2, overlap_land=True)
