"""DDD17 folders (sims/data/event_folders.py), on a tiny folder in the ESS layout written here."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from methods.errors import ConfigError
from sims.data.event_folders import DDD17_LABEL_ROWS, DDD17_WIDTH, ddd17_sequences, ddd17_windows
from sims.data.event_repr import voxel_grid
from sims.data.events import EventDataError


def _write_sequence(seq, t_us, xyp, index, masks):
    (seq / "index").mkdir(parents=True)
    (seq / "segmentation_masks").mkdir()
    (np.asarray(t_us, dtype=np.int64) * 1000).tofile(seq / "events.dat.t")  # ns on disk
    np.asarray(xyp, dtype=np.int16).tofile(seq / "events.dat.xyp")
    np.save(seq / "index" / "index_50ms.npy", np.asarray(index, dtype=np.int64))
    for j, labels in masks.items():
        path = seq / "segmentation_masks" / f"segmentation_{j:08d}.png"
        Image.fromarray(labels.astype(np.uint8)).save(path)


def test_ddd17_windows_in_the_ess_layout(tmp_path):
    t_us = [0, 10_000, 40_000, 60_000, 90_000, 100_000]
    xyp = [[0, 0, 1], [5, 3, 0], [345, 199, 1], [7, 250, 1], [1, 1, 0], [2, 2, 1]]  # one event below row 200
    index = [[60_000_000, 3], [100_000_000, 5]]  # image 1: last event 3; image 2: last event 5
    labels = np.zeros((DDD17_LABEL_ROWS, DDD17_WIDTH), np.uint8)
    labels[:, 100:] = 3
    _write_sequence(tmp_path / "data" / "dir0", t_us, xyp, index, {1: labels, 2: labels})
    (seq,) = ddd17_sequences(tmp_path)
    first, second = ddd17_windows(seq)
    # 50 ms up to t=60 ms: events at 10, 40, 60 ms; the one at row 250 is cropped away
    assert first.t.tolist() == [10_000, 40_000] and first.p.tolist() == [-1, 1]
    assert (first.t_start, first.t_end) == (10_000, 60_000) and np.array_equal(first.labels, labels)
    assert second.t.tolist() == [90_000, 100_000]  # 60 ms is at row 250, cropped
    counted = list(ddd17_windows(seq, mode="count", n_events=2))
    assert counted[1].x.tolist() == [1, 2]
    grid = voxel_grid(first.x, first.y, first.t, first.p, DDD17_LABEL_ROWS, DDD17_WIDTH)
    assert grid.shape == (5, DDD17_LABEL_ROWS, DDD17_WIDTH)


def test_bad_ddd17_folders_say_what_is_missing(tmp_path):
    with pytest.raises(EventDataError, match="No DDD17 sequence folders"):
        ddd17_sequences(tmp_path)
    seq = tmp_path / "dir0"
    _write_sequence(seq, [0, 1], [[0, 0, 1], [1, 1, 1]], [[1000, 1]],
                    {1: np.zeros((10, 10), np.uint8)})  # a label map of the wrong size
    with pytest.raises(EventDataError, match="must be 200x346"):
        list(ddd17_windows(seq))
    (seq / "events.dat.xyp").write_bytes(b"\0" * 6)
    with pytest.raises(EventDataError, match="different recordings"):
        list(ddd17_windows(seq))
    (seq / "index" / "index_50ms.npy").unlink()
    (seq / "events.dat.xyp").write_bytes(b"\0" * 12)
    with pytest.raises(EventDataError, match="index_50ms.npy"):
        list(ddd17_windows(seq))


@pytest.mark.parametrize(
    ("t_us", "xyp", "match"),
    [
        ([0, 10, 20], [[0, 0, 1], [346, 3, 0], [1, 1, 1]], r"outside the 260x346 sensor \(first: event 1"),
        ([0, 30, 20], [[0, 0, 1], [1, 3, 0], [1, 1, 1]], "non-decreasing; event 2 has t=20 after t=30"),
        ([0, 10, 20], [[0, 210, 1], [1, 250, 0], [1, 259, 1]], "all 3 events lie below row 200"),
        ([0, 10, 20], [[0, 0, 1], [1, 3, 2], [1, 1, 1]], "Polarities"),
    ],
    ids=["outside", "time-backwards", "cropped-empty", "polarity"],
)
def test_bad_ddd17_events_name_the_sequence_and_mask(tmp_path, t_us, xyp, match):
    labels = np.zeros((DDD17_LABEL_ROWS, DDD17_WIDTH), np.uint8)
    _write_sequence(tmp_path / "dir0", t_us, xyp, [[20_000, 2]], {1: labels})
    with pytest.raises(ConfigError, match=match) as exc:
        list(ddd17_windows(tmp_path / "dir0"))
    assert "segmentation_00000001.png" in str(exc.value)
