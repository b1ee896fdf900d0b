"""Real event-segmentation data to the simulator's interface: DDD17 in the ESS preprocessed layout.

Each window comes out as a `sims.data.events.EventWindow` (x, y, t in µs, p ±1, labels, t_start,
t_end), so everything that scores simulator windows scores DDD17 windows unchanged. The layout
[code: the ESS / SLTNet `ddd17_events_loader.py` and `load_files_in_directory`], per sequence
folder `dir*`:

    events.dat.t            int64 timestamps (ns), one per event, memory-mapped
    events.dat.xyp          int16 triples (x, y, polarity in {0, 1}), memory-mapped
    index/index_<ms>ms.npy  rows (t_ns, idx): idx is the last event before image j + 1
    segmentation_masks/segmentation_<j + 1>.png   6-class Ev-SegNet labels

Windows [code]: fixed duration (the `duration_us` before the image's last event; 50 ms in
SLTNet) or fixed count (the last `n_events` events; 32,000 in SLTNet). The sensor is 260 x 346
and the labels cover its top 200 rows; events below row 200 are dropped, as the official loader
crops the bottom 60 rows of the event tensor [code]. Nothing is read until a window is asked for.

DSEC-Semantic folders are read by `sims.data.dsec` (same interface).

Bad input (each an `EventDataError`, a `ConfigError`, naming the sequence and the mask): missing
files, event and timestamp files of different lengths, a mask pointing past the index, events
outside the 260 x 346 sensor, timestamps running backwards inside a window, a window left empty
by the crop, a label map of the wrong size or with unknown class ids.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sims.data.events import EventDataError, EventWindow, check_events, check_labels

DDD17_HEIGHT, DDD17_WIDTH, DDD17_LABEL_ROWS, DDD17_CLASSES = 260, 346, 200, 6


def ddd17_sequences(root: str | Path) -> list[Path]:
    """The sorted `dir*` sequence folders under `root` (or `root/data`)."""
    root = Path(root)
    for base in (root, root / "data"):
        dirs = sorted(p for p in base.glob("dir*") if p.is_dir())
        if dirs:
            return dirs
    raise EventDataError(f"No DDD17 sequence folders (dir*) under {root} or {root / 'data'}. Pass the folder "
                         "of the ESS preprocessed release (ddd17_seg) that holds dir0, dir1, ...")


def _need(path: Path) -> Path:
    if not path.exists():
        raise EventDataError(f"DDD17 sequence file missing: {path}. Expected events.dat.t, events.dat.xyp, "
                             "index/index_<ms>ms.npy and segmentation_masks/*.png in every dir* folder.")
    return path


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.int64)


def ddd17_windows(sequence: str | Path, *, mode: str = "duration", duration_us: int = 50_000,
                  n_events: int = 32_000, index_ms: int = 50) -> Iterator[EventWindow]:
    """One window per labelled image of a DDD17 sequence folder, in image order."""
    seq = Path(sequence)
    if mode not in ("duration", "count"):
        raise EventDataError(f"Window mode must be 'duration' or 'count'; received {mode!r}.")
    t_file, xyp_file = _need(seq / "events.dat.t"), _need(seq / "events.dat.xyp")
    n = t_file.stat().st_size // 8
    if n == 0 or xyp_file.stat().st_size != n * 6:
        raise EventDataError(f"{xyp_file} holds {xyp_file.stat().st_size} bytes; {n} events in {t_file} "
                             f"need {n * 6} (three int16 per event). The two files belong to different "
                             "recordings.")
    t_ns = np.memmap(t_file, dtype=np.int64, mode="r", shape=(n,))
    xyp = np.memmap(xyp_file, dtype=np.int16, mode="r", shape=(n, 3))
    index = np.load(_need(seq / "index" / f"index_{index_ms}ms.npy"), allow_pickle=False)
    masks = sorted(_need(seq / "segmentation_masks").glob("*.png"))
    for k, mask in enumerate(masks):
        img = int(mask.stem.split("_")[-1]) - 1
        if not 0 <= img < len(index):
            raise EventDataError(f"Mask {mask.name} points at image {img + 1}, but {seq / 'index'} lists "
                                 f"{len(index)} images. The index and the masks come from different "
                                 "releases.")
        end = int(index[img][1])
        if mode == "duration":
            start = int(np.searchsorted(t_ns, t_ns[end] - duration_us * 1000, side="left"))
        else:
            start = max(0, end - n_events + 1)
        x, y, p = (np.asarray(xyp[start:end + 1, i]) for i in range(3))
        t = np.asarray(t_ns[start:end + 1]) // 1000
        where = f"{seq}, window of {mask.name} (events {start}..{end})"
        try:
            check_events(x, y, t, p, DDD17_HEIGHT, DDD17_WIDTH)
        except EventDataError as exc:
            raise EventDataError(f"{where}: {exc}") from None
        keep = y < DDD17_LABEL_ROWS
        if not keep.any():
            raise EventDataError(f"{where}: all {len(y)} events lie below row {DDD17_LABEL_ROWS}, which the "
                                 "official loader crops; the window is empty. Use a longer window "
                                 "(duration_us / n_events) or skip this mask.")
        labels = _read_mask(mask)
        try:
            check_labels(labels, DDD17_LABEL_ROWS, DDD17_WIDTH, DDD17_CLASSES)
        except EventDataError as exc:
            raise EventDataError(f"{mask}: {exc}") from None
        t_end = int(t_ns[end] // 1000)
        yield EventWindow(x[keep].astype(np.int16), y[keep].astype(np.int16), t[keep],
                          np.where(p[keep] > 0, 1, -1).astype(np.int8), labels,
                          t_end - duration_us if mode == "duration" else int(t[0]), t_end, k)
