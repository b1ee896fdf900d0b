"""The event_segmentation task (actors/segmentation_task.py) on the committed zoo weights."""
from __future__ import annotations

import numpy as np
import pytest

from actors.segmentation_task import EventSegmentationTask, SegmentationTaskConfig
from actors.task import TASKS, task_factory
from methods.errors import CheckpointError, ConfigError

CFG = SegmentationTaskConfig(windows_per_trial=4, windows_per_chunk=2, window_us=20_000)


def run(task, params, chunks, checkpoint=None, trial=0):
    rows, out = [], None
    for c in chunks:
        out = task.evaluate(params, seed=3, trial=trial, chunk=c, n_chunks=CFG.n_chunks,
                            checkpoint=checkpoint if c == chunks[0] else None)
        rows += out["rows"]
    return rows, out


def test_stream_chunks_resume_from_a_checkpoint_exactly():
    params = {"kind": "sltnet", "time_steps": 1, "shot_noise_hz": 2.0}
    full, last = run(EventSegmentationTask(CFG), params, [0, 1])
    assert [r["window"] for r in full] == [0, 1, 2, 3] and all(r["row_kind"] == "stream" for r in full)
    assert set(last["objectives"]) == {"miou", "energy_uj"} and 0 <= last["objectives"]["miou"] <= 1
    head, mid = run(EventSegmentationTask(CFG), params, [0])
    tail, last2 = run(EventSegmentationTask(CFG), params, [1], checkpoint=mid["checkpoint"], trial=9)
    assert [r["window"] for r in head + tail] == [0, 1, 2, 3]
    assert [r["window_miou"] for r in head + tail] == [r["window_miou"] for r in full]
    assert last2["objectives"] == last["objectives"]


def test_trial_params_reach_the_model_and_the_simulator():
    task = EventSegmentationTask(CFG)
    one = {"kind": "sltnet", "time_steps": 1}
    base = run(task, one, [0, 1])[1]
    twin = run(task, {**one, "kind": "sltnet-ann"}, [0, 1])[1]
    assert twin["objectives"]["energy_uj"] > 2 * base["objectives"]["energy_uj"]  # ANN: every op a MAC
    t2 = run(task, {**one, "time_steps": 2}, [0, 1])[1]
    assert t2["metrics"]["macs_per_window"] == 2 * base["metrics"]["macs_per_window"]
    quiet = run(task, {**one, "shot_noise_hz": 0.0}, [0, 1])[0]
    noisy = run(task, {**one, "shot_noise_hz": 200.0}, [0, 1])[0]
    assert sum(r["events"] for r in noisy) > sum(r["events"] for r in quiet) + 500
    high = run(task, {**one, "v_threshold": 4.0}, [0, 1])[1]
    assert high["metrics"]["firing_rate"] < base["metrics"]["firing_rate"]


def test_a_fresh_width_and_bin_count_train_inside_the_trial():
    cfg = SegmentationTaskConfig(windows_per_trial=1, windows_per_chunk=1, window_us=20_000,
                                 train_seeds=(0,), train_windows=2)
    params = {"kind": "snn-baseline", "base": 8, "bins": 3, "train_steps": 2}
    out = EventSegmentationTask(cfg).evaluate(params, seed=0, trial=0, chunk=0, n_chunks=1)
    assert 0 <= out["objectives"]["miou"] <= 1


def test_bad_params_and_states_are_refused():
    task = EventSegmentationTask(CFG)
    with pytest.raises(CheckpointError, match="stream state"):
        task.evaluate({}, seed=0, trial=0, chunk=1, n_chunks=2)
    with pytest.raises(ConfigError, match="kind must be one of"):
        task.evaluate({"kind": "sltnet-xl"}, seed=0, trial=1, chunk=0, n_chunks=2)
    with pytest.raises(ConfigError, match="train_steps > 0"):
        task.evaluate({"base": 32}, seed=0, trial=2, chunk=0, n_chunks=2)
    with pytest.raises(ConfigError, match="window_mode"):
        SegmentationTaskConfig(window_mode="forever")
    assert "event_segmentation" in TASKS
    assert task_factory("event_segmentation", {"windows_per_trial": 2})().cfg.windows_per_trial == 2


def test_a_checkpoint_of_another_class_count_is_refused_at_start(monkeypatch):
    import sims.zoo.registry as registry

    load = registry.load_state_dict_file

    def eleven_classes(path):  # a DSEC-like head: 11 output channels
        state = dict(load(path))
        w = state["classifier.weight"]
        state["classifier.weight"] = w.new_zeros((11, *w.shape[1:]))
        return state

    monkeypatch.setattr(registry, "load_state_dict_file", eleven_classes)
    with pytest.raises(ConfigError, match="predicts 11 classes, but this task scores the simulator's 6"):
        EventSegmentationTask(CFG)


def _window(i, x, y, t, labels):
    from sims.data.events import EventWindow

    return EventWindow(np.asarray(x, np.int16), np.asarray(y, np.int16), np.asarray(t, np.int64),
                       np.ones(len(t), np.int8), labels, 0, 1, i)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (([], [], []), "Window 1 of stream seed 1000 .*empty"),
        (([48], [0], [5]), "Window 1 of stream seed 1000 .*outside the 32x48 sensor"),
        (([0, 1], [0, 0], [5, 3]), "Window 1 of stream seed 1000 .*non-decreasing"),
        (None, "Window 1 of stream seed 1000 .*Label map must be 32x48"),
    ],
    ids=["empty", "outside", "time-backwards", "label-size"],
)
def test_bad_stream_windows_name_the_window_and_seed(monkeypatch, bad, match):
    import sims.data.events as events

    good = np.zeros((32, 48), np.int64)

    def stream(*args, **kwargs):
        yield _window(0, [1, 2], [1, 2], [0, 1], good)
        if bad is None:
            yield _window(1, [1, 2], [1, 2], [0, 1], np.zeros((10, 10), np.int64))
        else:
            yield _window(1, *bad, good)

    task = EventSegmentationTask(CFG)
    monkeypatch.setattr(events, "windows", stream)
    with pytest.raises(ConfigError, match=match):
        task.evaluate({"kind": "sltnet"}, seed=0, trial=0, chunk=0, n_chunks=CFG.n_chunks)
