"""DSEC-Semantic folders (sims/data/dsec.py), on tiny sequences in the official layout written here.

The files are written uncompressed (the release is Blosc-compressed, which needs hdf5plugin);
`ms_to_idx` is built from its definition in the DSEC `EventSlicer`: the first event with
t >= ms * 1000.
"""
from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from PIL import Image

from methods.errors import ConfigError
from sims.data.dsec import DSEC_HEIGHT, DSEC_LABEL_ROWS, DSEC_WIDTH, dsec_sequences, dsec_windows
from sims.data.event_repr import voxel_grid

h5py = pytest.importorskip("h5py")

OFFSET = 51_000_000  # t_offset: label timestamps are on the clock of t + t_offset
T_REL = [100, 900, 1000, 1500, 2000, 2000, 2999, 3000, 5200]
X = list(range(9))
Y = [0, 0, 0, 0, 0, 0, 450, 0, 0]  # event 6 lands in the bottom 40 rows, which are cut
P = [1, 0, 1, 1, 0, 0, 1, 1, 0]


def _labels(value=0, shape=(DSEC_LABEL_ROWS, DSEC_WIDTH)):
    return np.full(shape, value, np.uint8)


def _write(seq, stamps_rel, labels, *, t=T_REL, x=X, y=Y, p=P, classes=11, layout="left", rmap=None,
           compression=None, ms_to_idx=None):
    ev = seq / "events" / "left"
    ev.mkdir(parents=True)
    t = np.asarray(t, np.int64)
    with h5py.File(ev / "events.h5", "w") as f:
        columns = (("x", x, np.uint16), ("y", y, np.uint16), ("t", t, np.uint32), ("p", p, np.uint8))
        for name, a, dtype in columns:
            f.create_dataset(f"events/{name}", data=np.asarray(a, dtype), compression=compression)
        ms = np.arange(int(t.max()) // 1000 + 2) * 1000
        index = np.searchsorted(t, ms, side="left") if ms_to_idx is None else ms_to_idx
        f["ms_to_idx"] = index.astype(np.uint64)
        f["t_offset"] = np.int64(OFFSET)
    if rmap is not None:
        with h5py.File(ev / "rectify_map.h5", "w") as f:
            f["rectify_map"] = rmap.astype(np.float32)
    sem = seq / "semantic"
    out = (sem / "left" if layout == "left" else sem) / f"{classes}classes" / "data"
    out.mkdir(parents=True)
    for i, lab in enumerate(labels):
        Image.fromarray(lab).save(out / f"{i:06d}.png")
    np.savetxt(sem / "timestamps.txt", np.asarray(stamps_rel, np.int64) + OFFSET, fmt="%d")
    return seq


def test_count_windows_are_the_last_events_strictly_before_each_label(tmp_path):
    stamps = [1000, 2000, 2999, 5000]  # on a ms boundary (1000, 2000), inside a ms with an event at it (2999)
    labels = [_labels(k) for k in range(4)]
    _write(tmp_path / "train" / "zurich_city_00_a", stamps, labels)
    (seq,) = dsec_sequences(tmp_path)
    ws = list(dsec_windows(seq, n_events=3, label_stride=1, skip_labels=0))
    assert [w.x.tolist() for w in ws] == [[0, 1], [1, 2, 3], [3, 4, 5], [5, 7]]  # event 6 is cut (row 450)
    assert ws[0].p.tolist() == [1, -1] and ws[0].x.dtype == np.int16
    assert ws[1].t.tolist() == [OFFSET + 900, OFFSET + 1000, OFFSET + 1500]
    spans = [(100, 1000), (900, 2000), (1500, 2999), (2000, 5000)]
    assert [(w.t_start, w.t_end) for w in ws] == [(OFFSET + a, OFFSET + b) for a, b in spans]
    assert [int(w.labels[0, 0]) for w in ws] == [0, 1, 2, 3]
    assert ws[0].labels.shape == (DSEC_LABEL_ROWS, DSEC_WIDTH)
    assert [w.index for w in ws] == [0, 1, 2, 3]
    grid = voxel_grid(ws[1].x, ws[1].y, ws[1].t, ws[1].p, DSEC_LABEL_ROWS, DSEC_WIDTH)
    assert grid.shape == (5, DSEC_LABEL_ROWS, DSEC_WIDTH)
    assert np.count_nonzero(grid) == 4  # the middle event splits between bins 0 and 1


def test_duration_windows_and_the_official_label_stride(tmp_path):
    seq = _write(tmp_path / "s", [1000, 2000, 2999, 5000], [_labels(k) for k in range(4)])
    ws = list(itertools.islice(dsec_windows(seq, mode="duration", duration_us=1000, label_stride=1,
                                            skip_labels=0), 3))
    assert [w.x.tolist() for w in ws] == [[0, 1], [2, 3], [4, 5]]  # [t - 1000, t)
    assert (ws[2].t_start, ws[2].t_end) == (OFFSET + 1999, OFFSET + 2999)
    with pytest.raises(ConfigError, match="empty: no events in the 1000 µs before it"):
        list(dsec_windows(seq, mode="duration", duration_us=1000, label_stride=1, skip_labels=0))
    # defaults [code]: skip the first 6 labels, then every 2nd (labels 6 and 8 of 9)
    t = np.arange(0, 9000, 250)
    seq9 = _write(tmp_path / "s9", [1000 * (i + 1) for i in range(9)], [_labels(i) for i in range(9)],
                  t=t, x=np.arange(t.size) % DSEC_WIDTH, y=np.zeros(t.size), p=np.ones(t.size))
    ws = list(dsec_windows(seq9, n_events=2))
    assert [int(w.labels[0, 0]) for w in ws] == [6, 8]
    assert [w.t.tolist() for w in ws] == [[OFFSET + 6500, OFFSET + 6750], [OFFSET + 8500, OFFSET + 8750]]


def test_rectify_map_moves_events_to_sub_pixel_positions(tmp_path):
    yy, xx = np.mgrid[0:DSEC_HEIGHT, 0:DSEC_WIDTH].astype(np.float32)
    rmap = np.stack([xx + 0.5, yy + 0.25], axis=-1)
    rmap[0, 1] = (-3.0, 0.0)  # event 1 (x=1, y=0) rectifies outside the sensor: dropped
    seq = _write(tmp_path / "s", [2000], [_labels()], rmap=rmap)
    (w,) = dsec_windows(seq, n_events=10, label_stride=1, skip_labels=0)
    assert w.x.tolist() == [0.5, 2.5, 3.5] and w.y.tolist() == [0.25] * 3 and w.x.dtype == np.float32
    grid = voxel_grid(w.x, w.y, w.t, w.p, DSEC_LABEL_ROWS, DSEC_WIDTH, normalize=False)
    assert grid[:, 0:2, 0:5].sum(axis=0).round(4).tolist()[0] == [0.375, 0.375, 0.375, 0.75, 0.375]
    (raw,) = dsec_windows(seq, n_events=10, label_stride=1, skip_labels=0, rectify=False)
    assert raw.x.tolist() == [0, 1, 2, 3]


def test_nineteen_classes_in_the_code_layout(tmp_path):
    seq = _write(tmp_path / "s", [2000], [_labels(18)], classes=19, layout="code")
    (w,) = dsec_windows(seq, n_classes=19, label_stride=1, skip_labels=0)
    assert int(w.labels.max()) == 18
    with pytest.raises(ConfigError, match="No 11-class labels"):
        next(dsec_windows(seq, label_stride=1, skip_labels=0))


def _first(seq, **kw):
    return next(dsec_windows(seq, **{"n_events": 3, "label_stride": 1, "skip_labels": 0, **kw}))


@pytest.mark.parametrize(
    ("write", "match"),
    [
        ({"stamps_rel": [50], "labels": [_labels()]}, "empty: no events in the sequence before it"),
        ({"stamps_rel": [2000], "labels": [_labels()], "x": [0, 1, 640, 3, 4, 5, 6, 7, 8]},
         "outside the 480x640 sensor"),
        ({"stamps_rel": [2000], "labels": [_labels()],
          "t": [100, 900, 1000, 950, 2000, 2000, 2999, 3000, 5200]},
         "non-decreasing"),
        ({"stamps_rel": [2000], "labels": [_labels()], "y": [450] * 9}, "empty after the crop: all 3 events"),
        ({"stamps_rel": [2000, 1000], "labels": [_labels(), _labels()]}, "line 2 of .* has"),
        ({"stamps_rel": [2000], "labels": [_labels(shape=(DSEC_HEIGHT, DSEC_WIDTH))]}, "must be 440x640"),
        ({"stamps_rel": [2000], "labels": [_labels(15)]}, "0..10"),
        ({"stamps_rel": [2000, 3000], "labels": [_labels()]}, "1 label PNGs but .* lists 2"),
        ({"stamps_rel": [2000], "labels": [_labels()], "ms_to_idx": np.array([0, 5, 4, 8, 8, 8, 9])},
         "ms_to_idx must be non-decreasing"),
    ],
    ids=["empty", "outside", "time-backwards", "cropped-empty", "labels-backwards", "label-size", "class-id",
         "count", "ms_to_idx"],
)
def test_bad_dsec_input_is_a_config_error(tmp_path, write, match):
    seq = _write(tmp_path / "s", **write)
    with pytest.raises(ConfigError, match=match):
        _first(seq)


def test_bad_dsec_arguments_and_folders(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="No DSEC sequence folders"):
        dsec_sequences(tmp_path)
    seq = _write(tmp_path / "s", [2000], [_labels()], compression="gzip")
    with pytest.raises(ConfigError, match="11 or 19 classes; received n_classes=7"):
        _first(seq, n_classes=7)
    with pytest.raises(ConfigError, match="has 1 labels; skip_labels=6 leaves none"):
        next(dsec_windows(seq))
    with pytest.raises(ConfigError, match="rectify map"):
        _first(seq, rectify=True)
    assert _first(seq).x.tolist() == [1, 2, 3]  # gzip: h5py decodes it without plugins
    # a Blosc-like case: a filter HDF5 lacks, and no hdf5plugin to provide it
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != 1)
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)
    with pytest.raises(ConfigError, match=r"events/x is compressed with unknown \(HDF5 filter 1\).*hdf5plu"):
        _first(seq)
