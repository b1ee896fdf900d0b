"""Event representations for SLTNet: the official voxel grid and two-channel event frames.

Voxel grid [code]: SLTNet feeds a 5-bin voxel grid (`nr_temporal_bins` = 5). Each event adds
its polarity value 2p - 1 (±1) with trilinear weights in x, y and normalised time
t* = (B - 1)(t - t_first)/(t_last - t_first), where t_first / t_last are the window's first and
last *event* timestamps, exactly as the DSEC `VoxelGrid` in the official code
(dataset/event/DSEC/dataset/representations.py) and the DDD17 `generate_voxel_grid`
(dataset/event/data_util.py). The DDD17 function is bilinear in time only, with integer x, y;
for integer pixel coordinates (every event camera, and this simulator) the trilinear weights in
x and y are 1 at the event's own pixel and 0 elsewhere, so the two agree; we implement the
trilinear form, which also takes sub-pixel (e.g. rectified) coordinates. A window whose events
share one timestamp puts them all in bin 0 (the official code divides by 1 then).

Normalisation [code]: the non-zero voxels are standardised by their own mean and standard
deviation. DSEC's code uses `torch.std` (unbiased, n - 1); DDD17's `normalize_voxel_grid` the
population std (n). `std_ddof` selects it (default 1, DSEC); a grid whose non-zero voxels have
zero spread is only centred (DSEC's code).

Event frames [code]: the official `generate_event_histogram`: per-pixel counts of negative and
positive events, channels (negative, positive).
"""
from __future__ import annotations

import numpy as np

from methods.errors import ConfigError
from sims.data.events import check_events

N_BINS = 5


def voxel_grid(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, height: int, width: int,
               bins: int = N_BINS, normalize: bool = True, std_ddof: int = 1) -> np.ndarray:
    """(bins, height, width) float32 voxel grid of one window (module docstring for the formula)."""
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ConfigError(f"Voxel grid needs an integer number of bins >= 1; received {bins!r}.")
    if std_ddof not in (0, 1):
        raise ConfigError(f"std_ddof must be 0 (DDD17 code) or 1 (DSEC code); received {std_ddof!r}.")
    check_events(x, y, t, p, height, width)
    xf = np.asarray(x, dtype=np.float64)
    yf = np.asarray(y, dtype=np.float64)
    tf = np.asarray(t, dtype=np.float64)
    value = np.where(np.asarray(p) > 0, 1.0, -1.0)
    span = tf[-1] - tf[0]
    t_norm = (bins - 1) * (tf - tf[0]) / (span if span > 0 else 1.0)
    grid = np.zeros(bins * height * width, dtype=np.float64)
    x0, y0, t0 = (np.floor(a).astype(np.int64) for a in (xf, yf, t_norm))
    for xl in (x0, x0 + 1):
        for yl in (y0, y0 + 1):
            for tl in (t0, t0 + 1):
                inside = (xl >= 0) & (xl < width) & (yl >= 0) & (yl < height) & (tl >= 0) & (tl < bins)
                weight = value * (1 - np.abs(xl - xf)) * (1 - np.abs(yl - yf)) * (1 - np.abs(tl - t_norm))
                keep = inside & (weight != 0)
                np.add.at(grid, ((tl * height + yl) * width + xl)[keep], weight[keep])
    grid = grid.reshape(bins, height, width)
    if normalize:
        grid = normalize_voxels(grid, std_ddof)
    return grid.astype(np.float32)


def normalize_voxels(grid: np.ndarray, std_ddof: int = 1) -> np.ndarray:
    """Standardise the non-zero voxels by their own mean and std; zeros stay zero."""
    out = np.array(grid, dtype=np.float64)
    mask = out != 0
    n = int(mask.sum())
    if n == 0:
        return out
    values = out[mask]
    mean = values.mean()
    std = values.std(ddof=std_ddof) if n > std_ddof else 0.0
    out[mask] = (values - mean) / std if std > 0 else values - mean
    return out


def event_frame(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, height: int,
                width: int) -> np.ndarray:
    """(2, height, width) float32 counts: channel 0 negative events, channel 1 positive (official order)."""
    check_events(x, y, t, p, height, width)
    pos = np.asarray(p) > 0
    frame = np.zeros((2, height * width), dtype=np.float32)
    flat = np.asarray(y, dtype=np.int64) * width + np.asarray(x, dtype=np.int64)
    np.add.at(frame[1], flat[pos], 1.0)
    np.add.at(frame[0], flat[~pos], 1.0)
    return frame.reshape(2, height, width)
