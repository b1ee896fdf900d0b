"""Real event-segmentation data to the simulator's interface: DSEC-Semantic sequence folders.

Each window comes out as a `sims.data.events.EventWindow` (x, y, t in µs, p ±1, labels, t_start,
t_end, index), as the simulator's and the DDD17 loader's (`sims.data.event_folders`), so
everything that scores simulator windows scores DSEC windows unchanged. DSEC-Semantic: Sun et al.,
"ESS: Learning Event-based Semantic Segmentation from Still Images" (ECCV 2022); SLTNet (arXiv
2412.12843) trains on it with the ESS loader.

Layout [code: uzh-rpg/ess `DSEC/dataset/sequence.py`, copied unchanged into SLTNet's
`dataset/event/DSEC/dataset/sequence.py`], per sequence folder (e.g. `train/zurich_city_00_a`):

    events/left/events.h5        events/{x, y, t, p}, ms_to_idx, t_offset (optional)
    events/left/rectify_map.h5   rectify_map (480, 640, 2): distorted (x, y) -> rectified (x, y)
    semantic/timestamps.txt      one label timestamp (µs, the clock of t + t_offset) per label
    semantic/left/<N>classes/data/*.png   labels, N = 11 or 19 (the ESS README's tree)
    semantic/<N>classes/data/*.png        the same, where the ESS / SLTNet code reads them

Both label folders are accepted (the README and the code disagree) [ours]. Events: x, y on the
480 x 640 sensor, t in µs relative to `t_offset`, p in {0, 1}; `ms_to_idx[ms]` is the index of the
first event with t >= ms * 1000 (DSEC `EventSlicer`). A window is located through `ms_to_idx`
and one millisecond of timestamps around its end, as the official slicer does: nothing else is
read, so a sequence of 10^8 events costs one window's worth of I/O per label [code].

Windows [code]:
- `mode="count"` (SLTNet's DSEC setting, `fixed_duration` false): the last `n_events` events
  (100,000 in SLTNet's training arguments) with t strictly before the label timestamp;
- `mode="duration"`: the events in [t_label - duration_us, t_label).
- Labels: every `label_stride`-th label (2: the official `index * 2`), after dropping the first
  `skip_labels` (6 = (remove_time_window // 100 + 1) * 2 with remove_time_window 250 ms: "not
  enough events before the first label").
- Rectification: with `rectify_map.h5` present (or `rectify=True`), coordinates become the
  rectified, sub-pixel float32 (x, y), which `sims.data.event_repr.voxel_grid` spreads
  trilinearly; without it (or `rectify=False`) they stay integer pixels.
- The bottom 40 rows are cut: labels are 440 x 640 and the official code drops the last 40 rows
  of the event tensor. Here the events landing there are dropped before any representation is
  built [ours: the official code crops after voxelising, so the cropped rows' events still enter
  the time normalisation and the voxel standardisation]. A count window therefore holds up to
  `n_events` events before the crop, as in the official code.
- Events whose rectified position falls outside the sensor are dropped [ours: the official
  `VoxelGrid` keeps their in-sensor bilinear share, with weights that turn negative for
  coordinates below 0 because it truncates instead of flooring].

Compression: the released events.h5 datasets are Blosc-compressed (HDF5 filter 32001), which h5py
reads only after `import hdf5plugin`. Opening such a dataset without the plugin raises a
`EventDataError` naming it; uncompressed or gzip files need nothing extra.

Bad input (each an `EventDataError`, a `ConfigError`): an unknown class count, missing files, an
empty window, events outside the sensor, timestamps running backwards (events, `ms_to_idx` or the
label timestamps), a label map of the wrong size or with unknown class ids, label and timestamp
counts that disagree, a `skip_labels` that leaves no label.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from methods.errors import ConfigError
from sims.data.events import EventDataError, EventWindow, check_events, check_labels

DSEC_HEIGHT, DSEC_WIDTH, DSEC_LABEL_ROWS = 480, 640, 440
DSEC_CLASS_COUNTS = (11, 19)
HDF5_FILTER_PLUGINS = {32001: "Blosc", 32004: "LZ4", 32008: "Bitshuffle", 32015: "Zstandard"}
LAYOUT = ("events/left/events.h5 (events/x, events/y, events/t, events/p, ms_to_idx), "
          "semantic/timestamps.txt and semantic/[left/]<N>classes/data/*.png")


def dsec_sequences(root: str | Path) -> list[Path]:
    """Sorted sequence folders (holding events/left/events.h5) under root, root/train or root/test."""
    root = Path(root)
    for base in (root, root / "train", root / "test"):
        seqs = sorted(p for p in base.glob("*") if (p / "events" / "left" / "events.h5").is_file())
        if seqs:
            return seqs
    raise EventDataError(f"No DSEC sequence folders under {root} (nor its train/ or test/): expected folders "
                         f"such as zurich_city_00_a holding {LAYOUT}. Pass the DSEC-Semantic root or its "
                         "train/ or test/ folder.")


def label_dir(sequence: str | Path, n_classes: int) -> Path:
    """The folder of <N>-class label PNGs: semantic/left/<N>classes/data or semantic/<N>classes/data."""
    if n_classes not in DSEC_CLASS_COUNTS:
        raise ConfigError(f"DSEC-Semantic labels come with 11 or 19 classes; received "
                          f"n_classes={n_classes!r}. Pass 11 (SLTNet, ESS) or 19 (the Cityscapes classes).")
    seq = Path(sequence)
    options = [seq / "semantic" / "left" / f"{n_classes}classes" / "data",
               seq / "semantic" / f"{n_classes}classes" / "data"]
    for path in options:
        if path.is_dir():
            return path
    raise EventDataError(f"No {n_classes}-class labels in {seq}: neither {options[0]} nor {options[1]} "
                         f"exists. Expected {LAYOUT}; is this a DSEC-Semantic sequence (not plain DSEC)?")


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise EventDataError(f"DSEC {what} missing: {path}. Every sequence folder needs {LAYOUT}.")
    return path


def _h5py():
    try:
        import h5py
    except ImportError:
        raise EventDataError("Reading DSEC events.h5 needs the `h5py` package, which is not installed; "
                             "install it (pip install h5py; it is in requirements.lock).") from None
    return h5py


def _readable(dset, path: Path):
    """`dset`, once every HDF5 filter it is compressed with can be decoded (hdf5plugin for Blosc)."""
    h5py = _h5py()
    plist = dset.id.get_create_plist()
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    missing = [c for c in codes if not h5py.h5z.filter_avail(c)]
    if missing:
        try:
            import hdf5plugin  # noqa: F401  (importing it registers Blosc, LZ4, ... with HDF5)
        except ImportError:
            names = ", ".join(f"{HDF5_FILTER_PLUGINS.get(c, 'unknown')} (HDF5 filter {c})" for c in missing)
            raise EventDataError(f"{path}:{dset.name} is compressed with {names}, which h5py cannot decode "
                                 "without the `hdf5plugin` package (not installed). Install it "
                                 "(pip install hdf5plugin), or decompress the file (h5repack -f NONE).") \
                from None
        missing = [c for c in codes if not h5py.h5z.filter_avail(c)]
        if missing:
            raise EventDataError(f"{path}:{dset.name} uses HDF5 filters {missing}, which neither h5py nor "
                                 "hdf5plugin provides; decompress the file (h5repack -f NONE).")
    return dset


def _read_label(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        labels = np.asarray(img)  # class ids as stored (mode L or P), as the official np.array(Image.open())
    if labels.ndim != 2:
        raise EventDataError(f"Label {path} has shape {labels.shape}; expected a single-channel PNG of class "
                             f"ids ({DSEC_LABEL_ROWS}x{DSEC_WIDTH}), not a colour visualisation.")
    return labels.astype(np.int64)


def dsec_windows(sequence: str | Path, *, n_classes: int = 11, mode: str = "count", n_events: int = 100_000,
                 duration_us: int = 50_000, label_stride: int = 2, skip_labels: int = 6,
                 rectify: bool | None = None) -> Iterator[EventWindow]:
    """One window per used label of a DSEC-Semantic sequence folder, in label order (module docstring)."""
    seq = Path(sequence)
    if mode not in ("duration", "count"):
        raise ConfigError(f"Window mode must be 'duration' or 'count'; received {mode!r}.")
    if n_events < 1 or duration_us < 1 or label_stride < 1 or skip_labels < 0:
        raise ConfigError(f"Need n_events, duration_us, label_stride >= 1 and skip_labels >= 0; received "
                          f"{n_events}, {duration_us}, {label_stride}, {skip_labels}.")
    labels_at = label_dir(seq, n_classes)
    stamps_file = _need(seq / "semantic" / "timestamps.txt", "label timestamps")
    stamps = np.atleast_1d(np.loadtxt(stamps_file, dtype=np.int64))
    pngs = sorted(labels_at.glob("*.png"))
    if len(pngs) != stamps.size:
        raise EventDataError(f"{labels_at} holds {len(pngs)} label PNGs but {stamps_file} lists "
                             f"{stamps.size} timestamps; they must pair one to one (labels and timestamps "
                             "of different releases?).")
    if np.any(np.diff(stamps) < 0):
        i = int(np.nonzero(np.diff(stamps) < 0)[0][0])
        raise EventDataError(f"Label timestamps must be non-decreasing; line {i + 2} of {stamps_file} has "
                             f"{stamps[i + 1]} after {stamps[i]}.")
    if not len(range(skip_labels, stamps.size, label_stride)):
        raise EventDataError(f"{seq} has {stamps.size} labels; skip_labels={skip_labels} leaves none "
                             "to window. Lower skip_labels (the official code skips 6), or check the labels.")
    events_file = _need(seq / "events" / "left" / "events.h5", "events file")
    rect_file = seq / "events" / "left" / "rectify_map.h5"
    if rectify and not rect_file.is_file():
        _need(rect_file, "rectify map (rectify=True)")
    use_rect = rect_file.is_file() if rectify is None else bool(rectify)
    yield from _windows(seq, events_file, rect_file if use_rect else None, stamps, pngs, n_classes, mode,
                        n_events, duration_us, label_stride, skip_labels)


def _windows(seq, events_file, rect_file, stamps, pngs, n_classes, mode, n_events, duration_us, stride,
             skip) -> Iterator[EventWindow]:
    h5py = _h5py()

    rmap = None
    if rect_file is not None:
        with h5py.File(rect_file, "r") as f:
            if "rectify_map" not in f:
                raise EventDataError(f"{rect_file} has no 'rectify_map' dataset; found {sorted(f)}.")
            rmap = np.asarray(_readable(f["rectify_map"], rect_file)[()], dtype=np.float32)
        if rmap.shape != (DSEC_HEIGHT, DSEC_WIDTH, 2):
            raise EventDataError(f"{rect_file}: rectify_map must be ({DSEC_HEIGHT}, {DSEC_WIDTH}, 2); "
                                 f"received {rmap.shape}.")
    with h5py.File(events_file, "r") as f:
        names = ["events/x", "events/y", "events/t", "events/p", "ms_to_idx"]
        absent = [n for n in names if n not in f]
        if absent:
            raise EventDataError(f"{events_file} lacks {absent}; a DSEC events.h5 holds {names} and "
                                 "t_offset.")
        ds = {n.split("/")[-1]: _readable(f[n], events_file) for n in names}
        ms_to_idx = np.asarray(ds["ms_to_idx"][()], dtype=np.int64)
        n_total = int(ds["t"].shape[0])
        if np.any(np.diff(ms_to_idx) < 0) or (ms_to_idx.size and not 0 <= ms_to_idx[-1] <= n_total):
            raise EventDataError(f"{events_file}: ms_to_idx must be non-decreasing indices in 0..{n_total}; "
                                 "it is not (a timestamp stream that runs backwards, or a file from another "
                                 "recording). Regenerate ms_to_idx from events/t.")
        t_offset = int(f["t_offset"][()]) if "t_offset" in f else 0

        def before(t_rel: int) -> int:
            """The number of events with t < t_rel, from ms_to_idx and one ms of timestamps [code]."""
            if t_rel <= 0:
                return 0
            lo_ms, hi_ms = math.floor(t_rel / 1000), math.ceil(t_rel / 1000)
            lo = int(ms_to_idx[lo_ms]) if lo_ms < ms_to_idx.size else n_total
            hi = int(ms_to_idx[hi_ms]) if hi_ms < ms_to_idx.size else n_total
            return lo + int(np.searchsorted(np.asarray(ds["t"][lo:hi], dtype=np.int64), t_rel, side="left"))

        for k, j in enumerate(range(skip, stamps.size, stride)):
            t_label = int(stamps[j])
            end = before(t_label - t_offset)
            start = max(0, end - n_events) if mode == "count" else before(t_label - duration_us - t_offset)
            where = f"label {pngs[j].name} (t={t_label} µs) of {seq}"
            if end <= start:
                span = "sequence before it" if mode == "count" else f"{duration_us} µs before it"
                raise EventDataError(f"The event window before {where} is empty: no events in the {span}."
                                     f" Skip more leading labels (skip_labels={skip} now; the official code "
                                     "skips 6) or use a longer window.")
            x, y, t, p = (np.asarray(ds[c][start:end]) for c in ("x", "y", "t", "p"))
            t = t.astype(np.int64) + t_offset
            try:
                check_events(x, y, t, p, DSEC_HEIGHT, DSEC_WIDTH)
            except EventDataError as exc:
                raise EventDataError(f"Events {start}..{end - 1} of {seq} (the window before {where}): "
                                     f"{exc}") from None
            if rmap is not None:
                xy = rmap[y.astype(np.int64), x.astype(np.int64)]
                x, y = xy[:, 0], xy[:, 1]
            keep = (x >= 0) & (x < DSEC_WIDTH) & (y >= 0) & (y < DSEC_LABEL_ROWS)
            if not keep.any():
                raise EventDataError(f"The event window before {where} is empty after the crop: all "
                                     f"{end - start} events lie in the bottom {DSEC_HEIGHT - DSEC_LABEL_ROWS}"
                                     " rows (or rectify outside the sensor). Use a longer window or skip "
                                     "this label.")
            labels = _read_label(pngs[j])
            try:
                check_labels(labels, DSEC_LABEL_ROWS, DSEC_WIDTH, n_classes)
            except EventDataError as exc:
                raise EventDataError(f"{pngs[j]}: {exc}") from None
            cast = np.float32 if rmap is not None else np.int16
            yield EventWindow(x[keep].astype(cast), y[keep].astype(cast), t[keep],
                              np.where(p[keep] > 0, 1, -1).astype(np.int8), labels,
                              t_label - duration_us if mode == "duration" else int(t[0]), t_label, k)
