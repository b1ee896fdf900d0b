"""`events`: an event-camera simulator of a driving-like scene with per-pixel semantic labels.

The world of SLTNet ("Spike-driven Lightweight Transformer-based Network for event-camera
semantic segmentation", Zhu et al., arXiv 2412.12843) at CPU scale. It follows the ESIM / v2e
tradition (Rebecq et al. 2018; Hu et al. 2021) [paper: those papers' pixel model]:

- a scene rendered at a high internal frame rate (`frame_rate_hz`, 2 kHz by default);
- per pixel, the log intensity L = log(I) is compared with the reference level of that pixel's
  last event; every crossing of L_ref ± C emits an event of polarity ±1, with the timestamp
  interpolated linearly between the two frames that bracket the crossing (ESIM);
- positive and negative contrast thresholds C+ and C-, each with a fixed per-pixel mismatch
  C · (1 + σ·N(0, 1)) drawn once per sensor (v2e's threshold variation);
- a refractory period: a crossing less than `refractory_us` after the pixel's last event is
  dropped; the reference level still moves past it [ours: v2e instead holds the pixel and lets
  it fire later; dropping keeps every frame's events inside that frame];
- shot noise (random polarity, `shot_noise_hz` per pixel) and leak noise (ON events,
  `leak_noise_hz` per pixel), uniform in time within each frame (v2e's noise kinds, simplified
  to Poisson processes) [ours].

The scene [ours]: the six Ev-SegNet / DDD17 classes (`CLASS_NAMES`): a road (flat) below the
horizon whose stripes stream towards the camera, a background above it drifting with the
ego-motion, a vegetation band along the horizon, and moving objects (poles = "object", people,
vehicles) with anti-aliased edges so that edges cross pixels smoothly. Every object wraps around
the sensor and redraws its size, height and texture at each wrap from `(seed, object, wrap)`, so
`render(t)` is a pure function of time: the stream is unbounded, deterministic by seed and
never materialised.

Windows: DDD17-like fixed-duration windows (`mode="duration"`, 50 ms in the official code) and
DSEC-like fixed-count windows (`mode="count"`, 100,000 events in the official code; tiny
sensors use fewer) [code]. The label map of a window is the scene's labels at the window's end
time (`t_end`): the DDD17/DSEC labels belong to the frame the events lead up to [code].

The simulator produces events only from the rendered intensities; the labels are rendered from
the same scene but never enter the event generation (tested by poisoning the labels).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from methods.config_dict import ConfigDict
from methods.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = ("flat", "background", "object", "vegetation", "human", "vehicle")
FLAT, BACKGROUND, OBJECT, VEGETATION, HUMAN, VEHICLE = range(6)
SEED_SALT = 0xE7E5  # separates this simulator's random streams from other generators' seeds
_OBJECT_SHAPES = {  # class -> (width, height) as fractions of the sensor height [ours]
    OBJECT: (0.06, 0.45),
    HUMAN: (0.10, 0.30),
    VEHICLE: (0.45, 0.28),
}


class EventDataError(ConfigError):
    """Event data that cannot be used: an empty window, events outside the sensor, time running
    backwards, a label map of the wrong size (a `ConfigError`: bad input, exit status 2)."""


@dataclass(frozen=True)
class EventSimConfig(ConfigDict):
    """Parameters of the sensor and the scene (times in µs inside the stream, rates in Hz)."""

    version: int = 1
    height: int = 32
    width: int = 48
    frame_rate_hz: float = 2000.0
    contrast_pos: float = 0.2
    contrast_neg: float = 0.2
    threshold_mismatch: float = 0.03
    refractory_us: float = 100.0
    shot_noise_hz: float = 0.5
    leak_noise_hz: float = 0.1
    n_objects: int = 4
    object_speed_px_s: float = 150.0
    ego_speed_px_s: float = 40.0

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"EventSimConfig version must be 1; received {self.version}.")
        if self.height < 8 or self.width < 8:
            raise ConfigError(f"Sensor must be at least 8x8 pixels; received {self.height}x{self.width}.")
        positive = {"frame_rate_hz": self.frame_rate_hz, "contrast_pos": self.contrast_pos,
                    "contrast_neg": self.contrast_neg}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"EventSimConfig.{name} must be > 0; received {value}.")
        non_negative = {"threshold_mismatch": self.threshold_mismatch, "refractory_us": self.refractory_us,
                        "shot_noise_hz": self.shot_noise_hz, "leak_noise_hz": self.leak_noise_hz,
                        "n_objects": self.n_objects, "object_speed_px_s": self.object_speed_px_s,
                        "ego_speed_px_s": self.ego_speed_px_s}
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"EventSimConfig.{name} must be >= 0; received {value}.")
        if self.refractory_us >= 1e6 / self.frame_rate_hz * 50:
            raise ConfigError(f"refractory_us={self.refractory_us} is longer than 50 frames; use a value "
                              "below the window length (v2e uses 0-1000 µs).")

    @property
    def frame_us(self) -> float:
        return 1e6 / self.frame_rate_hz


@dataclass(frozen=True)
class EventWindow:
    """One window of events: x, y (int16 pixel columns/rows), t (int64 µs, non-decreasing),
    p (int8, ±1), the label map (H, W) int64 at `t_end`, and the window's [t_start, t_end] in µs."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    labels: np.ndarray
    t_start: int
    t_end: int
    index: int

    def __len__(self) -> int:
        return int(self.t.shape[0])


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([SEED_SALT, int(seed), *map(int, parts)]))


def _waves(rng: np.random.Generator, n: int = 4, freq: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """n plane waves: rows of (amplitude, kx, ky, phase) for a smooth, shiftable texture."""
    amp = rng.uniform(0.5, 1.0, n) / n
    ang = rng.uniform(0, 2 * np.pi, n)
    k = rng.uniform(*freq, n)
    return np.stack([amp, k * np.cos(ang), k * np.sin(ang), rng.uniform(0, 2 * np.pi, n)], axis=1)


def _texture(waves: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(xx.shape, yy.shape))
    for a, kx, ky, ph in waves:
        out += a * np.sin(kx * xx + ky * yy + ph)
    return out


class DrivingScene:
    """The scene as a pure function of time: `render(t_us) -> (intensity, labels)`."""

    def __init__(self, config: EventSimConfig, seed: int) -> None:
        self.cfg = config
        self.seed = int(seed)
        h, w = config.height, config.width
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        rng = _rng(seed, 0)
        self.horizon = h * rng.uniform(0.38, 0.5)
        self.base = {FLAT: rng.uniform(0.25, 0.4), BACKGROUND: rng.uniform(0.6, 0.85),
                     VEGETATION: rng.uniform(0.15, 0.3)}
        self.waves = {c: _waves(rng) for c in (FLAT, BACKGROUND, VEGETATION)}
        self.veg_profile = _waves(rng, 3, (0.15, 0.5))
        self.veg_height = h * rng.uniform(0.12, 0.2)
        self.objects = [(int(rng.choice([OBJECT, HUMAN, VEHICLE])),
                         rng.uniform(0.5, 1.5) * rng.choice([-1, 1]), rng.uniform(0, w))
                        for _ in range(config.n_objects)]

    def _object(self, i: int, t_s: float) -> tuple[int, float, float, float, float, float, np.ndarray]:
        """Class, centre x, bottom y, width, height, brightness, texture waves of object i at time t."""
        cls, speed, x0 = self.objects[i]
        h, w = self.cfg.height, self.cfg.width
        fw, fh = _OBJECT_SHAPES[cls]
        span = w + 2 * fw * h * 1.3
        travelled = x0 + speed * self.cfg.object_speed_px_s * t_s
        wrap = int(np.floor(travelled / span))
        rng = _rng(self.seed, 1, i, wrap % 2**32)  # every wrap redraws the object's look, deterministically
        scale = rng.uniform(0.8, 1.3)
        bottom = self.horizon + (h - self.horizon) * rng.uniform(0.25, 0.95)
        cx = travelled - wrap * span - fw * h * 1.3
        bright = rng.uniform(0.05, 1.0) if cls != OBJECT else rng.uniform(0.8, 1.0)
        height = fh * h * scale * (0.6 + 0.4 * bottom / h)  # nearer objects (lower bottom edge) are taller
        return cls, cx, bottom, fw * h * scale, height, bright, _waves(rng, 2)

    def render(self, t_us: float) -> tuple[np.ndarray, np.ndarray]:
        """Intensity in [0.02, 1] (float64, H x W) and labels (int64, H x W) at time t_us."""
        cfg, xx, yy = self.cfg, self.xx, self.yy
        t_s = t_us * 1e-6
        shift = cfg.ego_speed_px_s * t_s
        sky = self.base[BACKGROUND] + 0.25 * _texture(self.waves[BACKGROUND], xx + 0.3 * shift, yy)
        # road stripes stream towards the camera: phase ~ 1/(depth) plus the ego travel
        depth = np.maximum(yy - self.horizon, 0.5)
        road = self.base[FLAT] + 0.2 * np.sin(40.0 / depth + 0.15 * shift) \
            + 0.1 * _texture(self.waves[FLAT], xx, yy)
        below = np.clip(yy - self.horizon + 0.5, 0, 1)  # anti-aliased horizon
        image = sky * (1 - below) + road * below
        labels = np.where(yy > self.horizon, FLAT, BACKGROUND)
        profile = _texture(self.veg_profile, xx + 0.6 * shift, 0 * yy)
        top = self.horizon - self.veg_height * (0.6 + 0.4 * profile)
        veg_cover = np.clip(yy - top + 0.5, 0, 1) * (1 - below)
        veg = self.base[VEGETATION] + 0.3 * _texture(self.waves[VEGETATION], xx + 0.6 * shift, yy)
        image = image * (1 - veg_cover) + veg * veg_cover
        labels = np.where(veg_cover >= 0.5, VEGETATION, labels)
        drawn = sorted((self._object(i, t_s) for i in range(len(self.objects))), key=lambda o: o[2])
        for cls, cx, bottom, ow, oh, bright, waves in drawn:  # far (small bottom y) first
            cover_x = np.clip(ow / 2 - np.abs(xx - cx) + 0.5, 0, 1)
            cover_y = np.clip(np.minimum(yy - (bottom - oh), bottom - yy) + 0.5, 0, 1)
            cover = cover_x * cover_y
            if cls == HUMAN:  # an ellipse: anti-aliased by the normalised radial distance
                r = np.sqrt(((xx - cx) / (ow / 2)) ** 2 + ((yy - (bottom - oh / 2)) / (oh / 2)) ** 2)
                cover = np.clip((1 - r) * min(ow, oh) / 2 + 0.5, 0, 1)
            body = bright + 0.2 * _texture(waves, xx - cx, yy)
            image = image * (1 - cover) + body * cover
            labels = np.where(cover >= 0.5, cls, labels)
        return np.clip(image, 0.02, 1.0), labels.astype(np.int64)


class EventCamera:
    """The pixel model over a scene: each `step()` renders the next frame and returns its events."""

    def __init__(self, config: EventSimConfig, seed: int, scene: DrivingScene | None = None) -> None:
        self.cfg = config
        self.scene = scene or DrivingScene(config, seed)
        rng = _rng(seed, 2)
        shape = (config.height, config.width)
        sigma = config.threshold_mismatch
        self.c_pos = np.maximum(config.contrast_pos * (1 + sigma * rng.standard_normal(shape)), 0.01)
        self.c_neg = np.maximum(config.contrast_neg * (1 + sigma * rng.standard_normal(shape)), 0.01)
        self.noise_rng = _rng(seed, 3)
        self.frame = 0
        intensity, _ = self.scene.render(0.0)
        self.log_prev = np.log(intensity)
        self.ref = self.log_prev.copy()
        self.last_t = np.full(shape, -np.inf)

    def time_us(self, frame: int) -> float:
        return frame * self.cfg.frame_us

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events (x, y, t µs int64, p ±1) of frame interval (t_k-1, t_k], sorted by time."""
        cfg = self.cfg
        t0, t1 = self.time_us(self.frame), self.time_us(self.frame + 1)
        self.frame += 1
        intensity, _ = self.scene.render(t1)
        log_now = np.log(intensity)
        delta = log_now - self.log_prev
        xs, ys, ts, ps = [], [], [], []
        for sign, c in ((1, self.c_pos), (-1, self.c_neg)):
            n_cross = np.floor(sign * (log_now - self.ref) / c + 1e-9).astype(np.int64)  # float slack
            n_cross = np.maximum(n_cross, 0)
            for j in range(1, int(n_cross.max(initial=0)) + 1):
                iy, ix = np.nonzero(n_cross >= j)
                level = self.ref[iy, ix] + sign * c[iy, ix]
                d = delta[iy, ix]
                frac = np.where(d != 0, (level - self.log_prev[iy, ix]) / np.where(d != 0, d, 1), 1.0)
                t = t0 + np.clip(frac, 0, 1) * (t1 - t0)
                keep = t - self.last_t[iy, ix] >= cfg.refractory_us
                self.ref[iy, ix] = level  # the reference moves even when the event is dropped
                self.last_t[iy[keep], ix[keep]] = t[keep]
                xs.append(ix[keep])
                ys.append(iy[keep])
                ts.append(t[keep])
                ps.append(np.full(int(keep.sum()), sign))
        for rate, polarity in ((cfg.shot_noise_hz, 0), (cfg.leak_noise_hz, 1)):
            lam = rate * (t1 - t0) * 1e-6
            if lam <= 0:
                continue
            iy, ix = np.nonzero(self.noise_rng.poisson(lam, log_now.shape) > 0)
            xs.append(ix)
            ys.append(iy)
            ts.append(self.noise_rng.uniform(t0, t1, ix.shape[0]))
            ps.append(self.noise_rng.choice([-1, 1], ix.shape[0]) if polarity == 0 else np.ones(ix.shape[0]))
        self.log_prev = log_now
        x, y, t, p = (np.concatenate(a) if a else np.zeros(0) for a in (xs, ys, ts, ps))
        t_int = np.clip(np.rint(t), np.floor(t0) + 1, np.floor(t1)).astype(np.int64)  # (t0, t1] in whole µs
        order = np.argsort(t_int, kind="stable")
        return (x[order].astype(np.int16), y[order].astype(np.int16), t_int[order], p[order].astype(np.int8))


def event_stream(config: EventSimConfig, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    """An unbounded stream of per-frame event chunks (x, y, t, p); nothing is materialised."""
    camera = EventCamera(config, seed)
    while True:
        yield camera.step()


def windows(config: EventSimConfig, seed: int, *, mode: str = "duration", duration_us: int = 50_000,
            n_events: int = 2_000, n_windows: int | None = None) -> Iterator[EventWindow]:
    """Successive windows of the stream: fixed duration (DDD17-like) or fixed event count (DSEC-like).

    The label map is the scene's labels at the window's end. Only one window's events (plus, in
    count mode, the rest of the frame that completed it) are held at a time.
    """
    if mode not in ("duration", "count"):
        raise ConfigError(f"Window mode must be 'duration' or 'count'; received {mode!r}.")
    if mode == "duration" and duration_us < config.frame_us:
        raise ConfigError(f"duration_us={duration_us} is shorter than one internal frame "
                          f"({config.frame_us:.0f} µs); raise it or raise frame_rate_hz.")
    if mode == "count" and n_events < 1:
        raise ConfigError(f"n_events must be >= 1 for count windows; received {n_events}.")
    camera = EventCamera(config, seed)
    pending: list[tuple[np.ndarray, ...]] = []
    held = 0
    index = 0
    t_start = 0
    while n_windows is None or index < n_windows:
        if mode == "duration":
            t_end = t_start + int(duration_us)
            while camera.time_us(camera.frame) < t_end:
                chunk = camera.step()
                pending.append(chunk)
            parts = [np.concatenate(a) for a in zip(*pending, strict=True)]
            inside = parts[2] <= t_end
            x, y, t, p = (a[inside] for a in parts)
            pending = [tuple(a[~inside] for a in parts)]
        else:
            idle_until = camera.frame + int(10 * config.frame_rate_hz)  # 10 s of sensor time
            while held < n_events:
                chunk = camera.step()
                pending.append(chunk)
                held += chunk[0].shape[0]
                if camera.frame > idle_until:
                    raise EventDataError(f"The scene produced {held} of {n_events} events in 10 s of sensor "
                                         "time; give it motion or noise (object_speed_px_s, shot_noise_hz) "
                                         "or ask for fewer events per window.")
            parts = [np.concatenate(a) for a in zip(*pending, strict=True)]
            x, y, t, p = (a[:n_events] for a in parts)
            pending = [tuple(a[n_events:] for a in parts)]
            held -= n_events
            t_end = int(t[-1])
        _, labels = camera.scene.render(float(t_end))
        yield EventWindow(x, y, t, p, labels, t_start, t_end, index)
        t_start = t_end
        index += 1


def check_events(x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray, height: int, width: int) -> None:
    """Refuse events a representation cannot use, saying which event is wrong and what to do."""
    arrays = [np.asarray(a) for a in (x, y, t, p)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise EventDataError(f"x, y, t, p must be 1-D arrays of one length; received shapes "
                             f"{[a.shape for a in arrays]}.")
    x, y, t, p = arrays
    if x.shape[0] == 0:
        raise EventDataError("The event window is empty (0 events); a voxel grid of no events is undefined. "
                             "Use a longer window, a larger event count, or skip the window.")
    bad = np.nonzero((x < 0) | (x >= width) | (y < 0) | (y >= height))[0]
    if bad.size:
        i = int(bad[0])
        raise EventDataError(f"{bad.size} events lie outside the {height}x{width} sensor (first: event {i} "
                             f"at x={x[i]}, y={y[i]}); expected 0 <= x < {width}, 0 <= y < {height}. "
                             "Pass the sensor size the events were recorded with.")
    back = np.nonzero(np.diff(t) < 0)[0]
    if back.size:
        i = int(back[0])
        raise EventDataError(f"Timestamps must be non-decreasing; event {i + 1} has t={t[i + 1]} after "
                             f"t={t[i]}. Sort the events by time (stable) before building a representation.")
    if not np.isin(p, (-1, 0, 1)).all():
        raise EventDataError(f"Polarities must be in {{-1, 1}} (or {{0, 1}}); received values "
                             f"{sorted(set(np.unique(p).tolist()))[:5]}.")


def check_labels(labels: np.ndarray, height: int, width: int, n_classes: int) -> None:
    """Refuse a label map that does not match the sensor or the class count."""
    labels = np.asarray(labels)
    if labels.shape != (height, width):
        raise EventDataError(f"Label map must be {height}x{width} (the sensor); received shape "
                             f"{labels.shape}. Resize the labels (nearest neighbour) to the event sensor.")
    valid = (labels >= 0) & (labels < n_classes)
    ignore = labels == 255  # the DDD17 / DSEC ignore index
    if not (valid | ignore).all():
        raise EventDataError(f"Label values must be 0..{n_classes - 1} (or 255 = ignore); received "
                             f"{sorted(set(np.unique(labels[~(valid | ignore)]).tolist()))[:5]}.")
