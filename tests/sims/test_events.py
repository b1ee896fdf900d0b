"""The event-camera simulator (sims/data/events.py) and the event representations (event_repr.py)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from methods.errors import ConfigError, EvfarmUserError
from sims.data.event_repr import event_frame, normalize_voxels, voxel_grid
from sims.data.events import (
    CLASS_NAMES,
    EventCamera,
    EventDataError,
    EventSimConfig,
    check_events,
    check_labels,
    event_stream,
    windows,
)

QUIET = dict(shot_noise_hz=0.0, leak_noise_hz=0.0, threshold_mismatch=0.0, refractory_us=0.0)


class RampScene:
    """Uniform log intensity rising linearly in time: log I = log(0.1) + rate * t_s."""

    def __init__(self, rate: float, shape=(8, 8)):
        self.rate, self.shape = rate, shape

    def render(self, t_us):
        return np.full(self.shape, 0.1 * np.exp(self.rate * t_us * 1e-6)), np.zeros(self.shape, np.int64)


def _events(camera, frames):
    chunks = [camera.step() for _ in range(frames)]
    return [np.concatenate(a) for a in zip(*chunks, strict=True)]


def test_crossings_are_log_contrast_steps_with_interpolated_timestamps():
    # C = 0.2 and a log-intensity slope of 0.2 per 750 µs: crossings at 750, 1500, 2250, ... µs,
    # between the 500 µs frames, so each timestamp is interpolated inside a frame interval
    cfg = EventSimConfig(height=8, width=8, **QUIET)
    camera = EventCamera(cfg, 0, scene=RampScene(0.2 / 750e-6))
    x, y, t, p = _events(camera, 9)  # up to 4500 µs: 6 crossings per pixel
    per_pixel = t[(x == 3) & (y == 5)]
    assert per_pixel.tolist() == [750, 1500, 2250, 3000, 3750, 4500]
    assert (p == 1).all() and len(t) == 64 * 6
    falling = EventCamera(cfg, 0, scene=RampScene(-0.2 / 750e-6))
    assert (_events(falling, 4)[3] == -1).all()


def test_refractory_period_drops_crossings_too_close_to_the_last_event():
    cfg = EventSimConfig(height=8, width=8, **{**QUIET, "refractory_us": 1000.0})
    x, y, t, p = _events(EventCamera(cfg, 0, scene=RampScene(0.2 / 750e-6)), 9)
    assert t[(x == 0) & (y == 0)].tolist() == [750, 2250, 3750]  # 1500, 3000, 4500 fall in refractory


def test_per_pixel_threshold_mismatch_changes_counts_per_pixel():
    ramp = RampScene(0.2 / 750e-6, shape=(16, 16))
    even = EventSimConfig(height=16, width=16, **QUIET)
    mism = EventSimConfig(height=16, width=16, **{**QUIET, "threshold_mismatch": 0.2})
    counts = []
    for cfg in (even, mism):
        x, y, t, p = _events(EventCamera(cfg, 0, scene=ramp), 40)
        counts.append(np.bincount(y.astype(int) * 16 + x, minlength=256))
    assert counts[0].min() == counts[0].max() == 26  # 20 ms · 0.2/0.75 ms / 0.2
    assert counts[1].std() > 1.0  # per-pixel thresholds differ


def test_shot_and_leak_noise_rates_on_a_static_scene():
    static = RampScene(0.0, shape=(32, 32))
    x, y, t, p = _events(EventCamera(EventSimConfig(height=32, width=32, **QUIET), 0, scene=static), 200)
    assert len(t) == 0  # nothing moves, no noise: no events
    noisy = EventSimConfig(height=32, width=32, **{**QUIET, "shot_noise_hz": 20.0, "leak_noise_hz": 5.0})
    x, y, t, p = _events(EventCamera(noisy, 0, scene=static), 200)  # 0.1 s
    expect_on, expect_off = 1024 * 0.1 * (10 + 5), 1024 * 0.1 * 10
    assert abs((p == 1).sum() - expect_on) < 5 * np.sqrt(expect_on)
    assert abs((p == -1).sum() - expect_off) < 5 * np.sqrt(expect_off)
    assert (np.diff(t) >= 0).all()


def test_the_stream_is_deterministic_by_seed():
    cfg = EventSimConfig()
    a = list(windows(cfg, 7, n_windows=2, duration_us=20_000))
    b = list(windows(cfg, 7, n_windows=2, duration_us=20_000))
    c = list(windows(cfg, 8, n_windows=2, duration_us=20_000))
    for wa, wb in zip(a, b, strict=True):
        assert all(np.array_equal(getattr(wa, k), getattr(wb, k)) for k in ("x", "y", "t", "p", "labels"))
    assert not np.array_equal(a[1].labels, c[1].labels) or len(a[1]) != len(c[1])


def test_duration_and_count_windows_cut_the_stream_without_gaps():
    cfg = EventSimConfig()
    wins = list(windows(cfg, 1, mode="duration", duration_us=25_000, n_windows=3))
    for i, w in enumerate(wins):
        assert (w.t_start, w.t_end) == (25_000 * i, 25_000 * (i + 1))
        assert len(w) > 0 and (w.t > w.t_start).all() and (w.t <= w.t_end).all() and (np.diff(w.t) >= 0).all()
        assert w.labels.shape == (cfg.height, cfg.width)
    counted = list(windows(cfg, 1, mode="count", n_events=1500, n_windows=3))
    assert [len(w) for w in counted] == [1500] * 3
    joined = np.concatenate([w.t for w in counted])
    assert (np.diff(joined) >= 0).all() and counted[1].t_start == counted[0].t_end
    # count windows and duration windows read the same stream: the first 1500 events agree
    first = next(windows(cfg, 1, mode="duration", duration_us=200_000, n_windows=1))
    assert np.array_equal(first.t[:1500], counted[0].t) and np.array_equal(first.x[:1500], counted[0].x)


def test_scene_has_every_class_and_labels_never_reach_the_events():
    cfg = EventSimConfig()
    seen = set()
    for w in itertools.islice(windows(cfg, 3, duration_us=50_000), 12):
        seen |= set(np.unique(w.labels).tolist())
    assert len(CLASS_NAMES) == 6 and seen == set(range(6))
    clean = EventCamera(cfg, 3)
    poisoned = EventCamera(cfg, 3)
    render = poisoned.scene.render
    poisoned.scene.render = lambda t: (render(t)[0], np.full((cfg.height, cfg.width), 99))  # poison labels
    for _ in range(30):
        assert all(np.array_equal(a, b) for a, b in zip(clean.step(), poisoned.step(), strict=True))


def test_event_stream_is_an_unbounded_generator_of_frame_chunks():
    stream = event_stream(EventSimConfig(), 0)
    chunks = list(itertools.islice(stream, 5))
    assert len(chunks) == 5 and all(len(c) == 4 for c in chunks)
    assert all(c[2].max(initial=0) <= 500 * (i + 1) for i, c in enumerate(chunks))


# -- representations ---------------------------------------------------------------------------


def test_voxel_grid_by_hand():
    # 4 events on a 2x3 sensor; t* = 4 (t - 0) / 40: 0, 1, 2.5, 4
    x = np.array([0, 2, 1, 1])
    y = np.array([0, 1, 0, 0])
    t = np.array([0, 10, 25, 40])
    p = np.array([1, -1, 1, 0])  # 0 is the negative polarity of {0, 1} data
    grid = voxel_grid(x, y, t, p, height=2, width=3, bins=5, normalize=False)
    expected = np.zeros((5, 2, 3))
    expected[0, 0, 0] = 1.0
    expected[1, 1, 2] = -1.0
    expected[2, 0, 1] = 0.5  # t* = 2.5 splits half/half into bins 2 and 3
    expected[3, 0, 1] = 0.5
    expected[4, 0, 1] = -1.0
    np.testing.assert_allclose(grid, expected)


def test_voxel_grid_is_trilinear_in_x_and_y():
    grid = voxel_grid(np.array([0.25, 1.0]), np.array([0.5, 1.0]), np.array([0, 8]), np.array([1, 1]),
                      height=2, width=2, bins=3, normalize=False)
    np.testing.assert_allclose(grid[0], [[0.75 * 0.5, 0.25 * 0.5], [0.75 * 0.5, 0.25 * 0.5]])
    np.testing.assert_allclose(grid[2], [[0, 0], [0, 1.0]])
    assert grid[1].sum() == 0


def test_voxel_normalisation_standardises_non_zero_voxels_only():
    raw = np.zeros((2, 2, 2))
    raw[0, 0, 0], raw[1, 1, 1], raw[1, 0, 1] = 1.0, 3.0, -1.0
    out = normalize_voxels(raw, std_ddof=1)
    values = np.array([1.0, 3.0, -1.0])
    z = (values - values.mean()) / values.std(ddof=1)
    np.testing.assert_allclose([out[0, 0, 0], out[1, 1, 1], out[1, 0, 1]], z)
    assert (out[raw == 0] == 0).all()
    assert normalize_voxels(raw, std_ddof=0)[1, 1, 1] == pytest.approx((3 - 1) / values.std())
    same = voxel_grid(np.array([0, 1]), np.array([0, 0]), np.array([5, 5]), np.array([1, 1]), 1, 2, bins=5)
    assert same[0].tolist() == [[0.0, 0.0]] and np.abs(same).sum() == 0  # one timestamp: bin 0, centred


def test_event_frame_counts_by_polarity():
    frame = event_frame(np.array([0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 0]), np.arange(5),
                        np.array([1, 1, -1, 1, -1]), height=2, width=2)
    assert frame[1].tolist() == [[2, 0], [0, 1]] and frame[0].tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize(
    ("x", "y", "t", "p", "match"),
    [
        ([], [], [], [], "empty"),
        ([0, 5], [0, 0], [0, 1], [1, 1], "outside the 4x5 sensor"),
        ([0, 1], [0, -1], [0, 1], [1, 1], "outside"),
        ([0, 1], [0, 0], [5, 3], [1, 1], "non-decreasing"),
        ([0, 1], [0, 0], [0, 1], [1, 2], "Polarities"),
    ],
)
def test_bad_event_windows_are_refused_with_typed_errors(x, y, t, p, match):
    with pytest.raises(EventDataError, match=match) as exc:
        voxel_grid(np.array(x), np.array(y), np.array(t), np.array(p), height=4, width=5)
    assert isinstance(exc.value, EvfarmUserError)


def test_bad_label_maps_and_configs_are_refused():
    check_labels(np.full((4, 5), 255), 4, 5, 6)
    with pytest.raises(EventDataError, match="must be 4x5"):
        check_labels(np.zeros((5, 4)), 4, 5, 6)
    with pytest.raises(EventDataError, match="0..5"):
        check_labels(np.full((4, 5), 6), 4, 5, 6)
    with pytest.raises(ConfigError, match="contrast_pos"):
        EventSimConfig(contrast_pos=0)
    with pytest.raises(ConfigError, match="mode"):
        next(windows(EventSimConfig(), 0, mode="sometimes"))
    quiet = EventSimConfig(n_objects=0, ego_speed_px_s=0, shot_noise_hz=0, leak_noise_hz=0, frame_rate_hz=200)
    with pytest.raises(EventDataError, match="produced"):
        next(windows(quiet, 0, mode="count", n_events=10))
    check_events(np.array([0]), np.array([0]), np.array([0]), np.array([1]), 1, 1)
