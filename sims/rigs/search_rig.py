"""Virtual rig 1: hybrid wide-area search (wide-angle camera + 2-axis galvo + high-speed camera).

Paper: "A Novel Wide-Area Multiobject Detection System with High-Probability Region Searching",
Long, Zhao, Chen, Gu, Gu; arXiv 2405.04589 (2024). Only the abstract was readable; the numbers
below come from the authors' related C++ code (reference/systems.md §4.1, [code]):
±5 V per axis (10 V × 10 V field), a 224 px search window ↔ 0.45 V, region priors road 0.847,
sidewalk 0.129, tree 0.022, building 0.002, ~4 ms galvo wait / 0.5 ms controller step, 145 shots a
round, 120 fps claimed.

Our design [inferred], stated so it can be varied:
- the scene is a wide-angle label map of wavy horizontal bands (building on top, road low) plus
  tree blobs; targets are placed with per-pixel density ∝ the class prior, so the paper's PPM
  (area fraction × prior) is the true target distribution;
- the wide-angle pixel → mirror voltage map is a distorted, slightly rolled pinhole; the rig
  fits a polynomial to noisy simulated calibration spots and only that fit is given to a method;
- time is simulated exactly per shot: mirror move (settle + Chebyshev distance / slew), camera
  frame period, exposure, and a detector that runs pipelined on a separate processor; a round's
  detections are returned only when the last detection of the round has finished;
- the detector sees targets inside the square FOV with probability `p_detect`, reports a centre
  with Gaussian noise whose σ grows towards the FOV edge, reports that σ² (a calibrated
  uncertainty, as Gaussian-YOLO would), and adds Poisson false positives per frame.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from methods.errors import ConfigError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class SearchRigConfig:
    """Every physical constant of the search rig (units: volts, seconds, pixels)."""

    version: int = 1
    field_v: float = 10.0               # side of the square voltage field (±5 V)
    fov_v: float = 0.45                 # search-camera field of view in mirror volts
    search_px: int = 224                # detector input side, pixels (224 px ↔ fov_v)
    wide_px: int = 128                  # wide-angle label map side (≈ 0.09 V per pixel)
    wide_half_angle_deg: float = 24.0   # wide camera half field of view
    wide_k1: float = -0.08              # wide camera radial distortion
    wide_roll_rad: float = 0.01         # roll between wide camera and galvo axes
    optical_deg_per_v: float = 4.0      # 10 V ↔ 40° optical
    class_priors: tuple[tuple[str, float], ...] = (
        ("road", 0.847), ("sidewalk", 0.129), ("tree", 0.022), ("building", 0.002))
    bands: tuple[tuple[str, float], ...] = (
        ("building", 0.30), ("tree", 0.12), ("sidewalk", 0.10), ("road", 0.33), ("sidewalk", 0.15))
    n_blobs: int = 4                    # tree blobs scattered over the scene
    blob_class: str = "tree"
    n_targets: int = 12
    calib_grid: int = 7                 # calib_grid² calibration spots
    calib_noise_px: float = 0.3
    calib_degree: int = 3
    settle_s: float = 0.5e-3
    slew_v_per_s: float = 2000.0
    camera_fps: float = 120.0
    exposure_s: float = 3e-3
    detect_s: float = 4e-3
    plan_s: float = 0.0                 # planning time between rounds
    p_detect: float = 0.95
    loc_sigma_px: float = 4.0           # detector centre noise at the FOV centre (per axis)
    loc_sigma_edge_gain: float = 2.0    # σ = loc_sigma_px (1 + gain r²), r = offset / (fov/2)
    fp_per_shot: float = 0.05
    conf_threshold: float = 0.5
    pointing_noise_v: float = 1e-4
    match_radius_v: float = 0.1

    def __post_init__(self) -> None:
        _require(self.version == 1, f"SearchRigConfig version must be 1; received {self.version}.")
        _require(0 < self.fov_v < self.field_v,
                 f"Need 0 < fov_v < field_v; received fov_v={self.fov_v}, field_v={self.field_v}.")
        _require(self.camera_fps > 0 and 0 < self.exposure_s <= 1.0 / self.camera_fps,
                 f"Exposure must fit in a frame: 0 < exposure_s ≤ 1/camera_fps; received "
                 f"exposure_s={self.exposure_s}, camera_fps={self.camera_fps}. Lower the exposure.")
        for name in ("settle_s", "detect_s", "plan_s", "calib_noise_px", "loc_sigma_px",
                     "loc_sigma_edge_gain", "fp_per_shot", "pointing_noise_v"):
            _require(getattr(self, name) >= 0, f"{name} must be ≥ 0; received {getattr(self, name)}.")
        _require(self.slew_v_per_s > 0, f"slew_v_per_s must be > 0; received {self.slew_v_per_s}.")
        _require(0 <= self.p_detect <= 1 and 0 <= self.conf_threshold <= 1,
                 f"p_detect and conf_threshold must lie in [0, 1]; received {self.p_detect}, "
                 f"{self.conf_threshold}.")
        names = [c for c, _ in self.class_priors]
        _require(len(set(names)) == len(names) and all(p > 0 for _, p in self.class_priors),
                 f"class_priors must be distinct names with positive priors; received {self.class_priors}.")
        unknown = [b for b, _ in self.bands if b not in names] + (
            [self.blob_class] if self.n_blobs and self.blob_class not in names else [])
        _require(not unknown, f"Band/blob classes {unknown} are not in class_priors {names}; "
                              "add them to class_priors or change the bands.")
        _require(self.n_targets >= 1 and self.calib_grid >= 3 and 1 <= self.calib_degree <= 5,
                 f"Need n_targets ≥ 1, calib_grid ≥ 3, 1 ≤ calib_degree ≤ 5; received "
                 f"{self.n_targets}, {self.calib_grid}, {self.calib_degree}.")
        n_mono = (self.calib_degree + 1) * (self.calib_degree + 2) // 2
        _require(self.calib_grid ** 2 >= 2 * n_mono,
                 f"calib_grid²={self.calib_grid ** 2} spots are too few for a degree-"
                 f"{self.calib_degree} fit ({n_mono} coefficients); raise calib_grid.")

    @property
    def px_per_v(self) -> float:
        return self.search_px / self.fov_v

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        """Rig parameters an Optuna sweep may vary (all combinations are valid)."""
        return {
            "settle_s": ("float", 0.5e-3, 4e-3),
            "camera_fps": ("categorical", [60.0, 120.0, 240.0]),
            "detect_s": ("float", 1e-3, 8e-3),
            "loc_sigma_px": ("float", 1.0, 10.0),
            "fp_per_shot": ("float", 0.0, 0.3),
            "p_detect": ("float", 0.7, 1.0),
        }


# ----------------------------------------------------------------------------- wide camera
def true_pixel_to_voltage(px: np.ndarray, cfg: SearchRigConfig) -> np.ndarray:
    """Ground-truth map from wide-angle pixel (col, row) to the voltage that centres the mirror there."""
    c = cfg.wide_px / 2.0
    f = c / math.tan(math.radians(cfg.wide_half_angle_deg))
    xn = (np.asarray(px, dtype=float) - c) / f
    r2 = (xn ** 2).sum(axis=1, keepdims=True)
    ang = np.arctan(xn * (1.0 + cfg.wide_k1 * r2))
    cr, sr = math.cos(cfg.wide_roll_rad), math.sin(cfg.wide_roll_rad)
    rot = ang @ np.array([[cr, sr], [-sr, cr]])
    return rot / math.radians(cfg.optical_deg_per_v)


@dataclass(frozen=True)
class PolyMap:
    """Polynomial pixel → voltage map fitted by least squares (the rig's calibration)."""

    degree: int
    centre: float
    coef: np.ndarray  # (n_monomials, 2)

    def _features(self, px: np.ndarray) -> np.ndarray:
        z = (np.asarray(px, dtype=float) - self.centre) / self.centre
        cols = [z[:, 0] ** i * z[:, 1] ** j
                for i in range(self.degree + 1) for j in range(self.degree + 1 - i)]
        return np.stack(cols, axis=1)

    def __call__(self, px: np.ndarray) -> np.ndarray:
        return self._features(np.atleast_2d(px)) @ self.coef

    @classmethod
    def fit(cls, px: np.ndarray, volts: np.ndarray, degree: int, centre: float) -> PolyMap:
        probe = cls(degree, centre, np.zeros(1))
        coef, *_ = np.linalg.lstsq(probe._features(px), volts, rcond=None)
        return cls(degree, centre, coef)


def pixel_centres(cfg: SearchRigConfig) -> np.ndarray:
    """(H·W, 2) pixel centres as (col, row), row-major like the label map."""
    idx = np.arange(cfg.wide_px) + 0.5
    cols, rows = np.meshgrid(idx, idx)
    return np.stack([cols.ravel(), rows.ravel()], axis=1)


def calibrate_wide_to_galvo(cfg: SearchRigConfig, rng: np.random.Generator) -> tuple[PolyMap, float]:
    """Fit the pixel → voltage polynomial from a grid of noisy laser-spot observations.

    Returns the fitted map and its RMS error (V) against the truth over the in-field pixels.
    """
    g = np.linspace(0.08, 0.92, cfg.calib_grid) * cfg.wide_px
    spots = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    volts = true_pixel_to_voltage(spots, cfg)
    seen = spots + rng.normal(0.0, cfg.calib_noise_px, spots.shape)
    fitted = PolyMap.fit(seen, volts, cfg.calib_degree, cfg.wide_px / 2.0)
    pix = pixel_centres(cfg)[::7]
    truth = true_pixel_to_voltage(pix, cfg)
    inside = np.abs(truth).max(axis=1) <= cfg.field_v / 2
    err = np.linalg.norm(fitted(pix[inside]) - truth[inside], axis=1)
    return fitted, float(np.sqrt((err ** 2).mean()))


# ----------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class Scene:
    labels: np.ndarray      # (H, W) int, index into class_names
    class_names: tuple[str, ...]
    targets_px: np.ndarray  # (T, 2) (col, row)
    targets_v: np.ndarray   # (T, 2) true mirror voltages


def make_scene(cfg: SearchRigConfig, rng: np.random.Generator) -> Scene:
    """Wavy horizontal bands + blobs, then targets drawn with density ∝ class prior."""
    names = tuple(c for c, _ in cfg.class_priors)
    h = w = cfg.wide_px
    frac = np.array([f for _, f in cfg.bands]) * rng.uniform(0.7, 1.3, len(cfg.bands))
    edges = np.cumsum(frac / frac.sum())[:-1] * h
    x = np.arange(w)
    bounds = [e + 0.03 * h * np.sin(2 * np.pi * x / w * rng.uniform(0.5, 2.0) + rng.uniform(0, 2 * np.pi))
              for e in edges]
    rows = np.arange(h)[:, None]
    band_idx = sum((rows >= b[None, :]).astype(int) for b in bounds)
    band_cls = np.array([names.index(b) for b, _ in cfg.bands])
    labels = band_cls[band_idx]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(cfg.n_blobs):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.02, 0.06) * w
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = names.index(cfg.blob_class)

    pix = pixel_centres(cfg)
    volts = true_pixel_to_voltage(pix, cfg)
    prior = np.array([p for _, p in cfg.class_priors])
    weight = prior[labels.ravel()] * (np.abs(volts).max(axis=1) <= cfg.field_v / 2 - 0.05)
    pick = rng.choice(len(pix), size=cfg.n_targets, replace=False, p=weight / weight.sum())
    t_px = pix[pick] + rng.uniform(-0.5, 0.5, (cfg.n_targets, 2))
    return Scene(labels, names, t_px, true_pixel_to_voltage(t_px, cfg))


# ----------------------------------------------------------------------------- timing
def shot_schedule(moves_v: np.ndarray, cfg: SearchRigConfig, t_ready: float,
                  last_exposure_start: float, detector_free: float) -> dict[str, np.ndarray]:
    """Exact event times for one round of shots.

    moves_v: Chebyshev length of each mirror move (V). For shot i:
      exposure_start = max(previous exposure_end (or t_ready) + settle + move/slew,
                           previous exposure_start + 1/fps)
      exposure_end   = exposure_start + exposure
      detect_end     = max(exposure_end, previous detect_end) + detect
    The mirror may leave as soon as an exposure ends; detection is pipelined.
    """
    period = 1.0 / cfg.camera_fps
    n = len(moves_v)
    exp_start, exp_end, det_end = np.empty(n), np.empty(n), np.empty(n)
    free, last_start, det_free = t_ready, last_exposure_start, detector_free
    for i, move in enumerate(moves_v):
        s = max(free + cfg.settle_s + move / cfg.slew_v_per_s, last_start + period)
        exp_start[i], exp_end[i] = s, s + cfg.exposure_s
        det_end[i] = max(exp_end[i], det_free) + cfg.detect_s
        free, last_start, det_free = exp_end[i], s, det_end[i]
    return {"exposure_start": exp_start, "exposure_end": exp_end, "detect_end": det_end}


# ----------------------------------------------------------------------------- detector
@dataclass(frozen=True)
class Detection:
    """One detector output, already mapped to mirror volts."""

    v: np.ndarray   # (2,) estimated target position
    var: float      # reported per-axis variance (V²)
    conf: float
    shot: int       # global index of the shot that produced it


class SearchSession:
    """One scene being searched. A method sees the label map, the class priors, the fitted
    pixel→voltage map and `fire`; the truth (targets, true map) stays inside the session."""

    def __init__(self, cfg: SearchRigConfig, scene: Scene, px_to_v: PolyMap,
                 rng: np.random.Generator) -> None:
        self.cfg, self._scene, self.px_to_v, self._rng = cfg, scene, px_to_v, rng
        self.labels = scene.labels
        self.class_names = scene.class_names
        self.class_priors = np.array([p for _, p in cfg.class_priors])
        self.field_v, self.fov_v = cfg.field_v, cfg.fov_v
        self.mirror_v = np.zeros(2)
        self._t_ready, self._last_start, self._det_free = 0.0, -math.inf, 0.0
        self.shot_v: list[np.ndarray] = []
        self.shot_time: list[float] = []        # detection-finished time of each shot
        self.shot_hits: list[list[int]] = []    # true target ids detected by each shot
        self.move_total_v = 0.0

    @property
    def shots_fired(self) -> int:
        return len(self.shot_v)

    def fire(self, shots_v: np.ndarray) -> list[Detection]:
        """Fire the shots in the given order; returns the round's detections (after the last one)."""
        cmd = np.clip(np.asarray(shots_v, dtype=float).reshape(-1, 2), -self.field_v / 2, self.field_v / 2)
        if len(cmd) == 0:
            return []
        path = np.vstack([self.mirror_v[None, :], cmd])
        moves = np.abs(np.diff(path, axis=0)).max(axis=1)
        times = shot_schedule(moves, self.cfg, self._t_ready, self._last_start, self._det_free)
        dets: list[Detection] = []
        for k, c in enumerate(cmd):
            dets.extend(self._detect(c, len(self.shot_v)))
            self.shot_v.append(c)
            self.shot_time.append(float(times["detect_end"][k]))
        self.move_total_v += float(moves.sum())
        self.mirror_v = cmd[-1].copy()
        self._last_start = float(times["exposure_start"][-1])
        self._det_free = float(times["detect_end"][-1])
        self._t_ready = max(float(times["exposure_end"][-1]), self._det_free) + self.cfg.plan_s
        return dets

    def _sigma_px(self, off_v: np.ndarray) -> np.ndarray:
        r2 = (off_v ** 2).sum(axis=-1) / (self.fov_v / 2) ** 2
        return self.cfg.loc_sigma_px * (1.0 + self.cfg.loc_sigma_edge_gain * r2)

    def _detect(self, cmd: np.ndarray, shot: int) -> list[Detection]:
        cfg, rng = self.cfg, self._rng
        actual = cmd + rng.normal(0.0, cfg.pointing_noise_v, 2)
        off = self._scene.targets_v - actual
        ids = np.flatnonzero(np.abs(off).max(axis=1) <= self.fov_v / 2)
        ids = ids[rng.random(len(ids)) < cfg.p_detect]
        meas = off[ids] + rng.normal(size=(len(ids), 2)) * (self._sigma_px(off[ids]) / cfg.px_per_v)[:, None]
        r2 = (off[ids] ** 2).sum(axis=1) / (self.fov_v / 2) ** 2
        conf = np.clip(rng.normal(0.85 - 0.1 * r2, 0.08), 0.0, 1.0)
        n_fp = rng.poisson(cfg.fp_per_shot)
        fp = rng.uniform(-self.fov_v / 2, self.fov_v / 2, (n_fp, 2))
        meas = np.vstack([meas, fp])
        conf = np.concatenate([conf, rng.uniform(0.3, 0.8, n_fp)])
        truth = np.concatenate([ids, -np.ones(n_fp, dtype=int)])
        keep = conf >= cfg.conf_threshold
        var = (self._sigma_px(meas) / cfg.px_per_v) ** 2
        self.shot_hits.append([int(t) for t in truth[keep] if t >= 0])
        return [Detection(cmd + m, float(s), float(c), shot)
                for m, s, c in zip(meas[keep], var[keep], conf[keep], strict=True)]


def build_session(cfg: SearchRigConfig,
                  seed: int) -> tuple[SearchSession, dict[str, float], np.random.Generator]:
    """Scene, calibration and detector streams are independent children of `seed`, so every
    method meets the same scene and calibration for a given seed."""
    scene_ss, calib_ss, det_ss, method_ss = np.random.SeedSequence(seed).spawn(4)
    scene = make_scene(cfg, np.random.default_rng(scene_ss))
    px_to_v, calib_rmse = calibrate_wide_to_galvo(cfg, np.random.default_rng(calib_ss))
    session = SearchSession(cfg, scene, px_to_v, np.random.default_rng(det_ss))
    return session, {"calib_rmse_v": calib_rmse}, np.random.default_rng(method_ss)


# ----------------------------------------------------------------------------- metrics
def _match(est: np.ndarray, truth: np.ndarray, radius: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of estimates to true targets by distance (< radius)."""
    if len(est) == 0:
        return []
    d = np.linalg.norm(est[:, None, :] - truth[None, :, :], axis=-1)
    pairs = sorted((d[i, j], i, j) for i, j in zip(*np.nonzero(d < radius), strict=True))
    used_e, used_t, out = set(), set(), []
    for dist, i, j in pairs:
        if i not in used_e and j not in used_t:
            used_e.add(i)
            used_t.add(j)
            out.append((int(i), int(j), float(dist)))
    return out


def search_metrics(session: SearchSession, tracks: list[Any], extra: dict[str, float]) -> dict[str, Any]:
    """Recall against shots and time, localisation error (refined and single-shot), fps."""
    cfg, truth = session.cfg, session._scene.targets_v
    seen: set[int] = set()
    curve = []
    for hits in session.shot_hits:
        seen.update(hits)
        curve.append(len(seen) / len(truth))
    est = np.array([t.estimate for t in tracks]).reshape(-1, 2)
    single = np.array([t.best_single for t in tracks]).reshape(-1, 2)
    matched = _match(est, truth, cfg.match_radius_v)
    err = np.array([m[2] for m in matched])
    err_single = np.array([np.linalg.norm(single[i] - truth[j]) for i, j, _ in matched])
    total = session.shot_time[-1] if session.shot_time else 0.0
    n = session.shots_fired
    nan = float("nan")
    return {
        "n_targets": len(truth), "n_shots": n, "total_time_s": total,
        "system_fps": n / total if total > 0 else nan,
        "recall": curve[-1] if curve else 0.0,
        "recall_localised": len(matched) / len(truth),
        "precision": len(matched) / len(tracks) if tracks else nan,
        "n_reported": len(tracks),
        "loc_err_v": float(err.mean()) if len(err) else nan,
        "loc_err_single_v": float(err_single.mean()) if len(err) else nan,
        "loc_err_px": float(err.mean() * cfg.px_per_v) if len(err) else nan,
        "mean_move_v": session.move_total_v / max(n, 1),
        "curve_recall": curve, "curve_time_s": list(session.shot_time),
        **extra,
    }


#: The results a farm trial averages over its scenes (`RigSpec.metrics`).
SEARCH_TRIAL_METRICS = ("recall", "total_time_s", "system_fps", "recall_localised", "precision", "loc_err_v",
                        "loc_err_single_v", "loc_err_px", "mean_move_v", "n_shots", "calib_rmse_v")


def search_method_config(method_name: str) -> type:
    """The config class of a `SEARCH_METHODS` strategy (an unknown name lists the known ones)."""
    from methods.ppm_search import SEARCH_METHODS

    return SEARCH_METHODS.get(method_name).config_cls


def evaluate_search(rig_config: SearchRigConfig | dict | None, method_name: str,
                    method_config: Any = None, seed: int = 0) -> dict[str, Any]:
    """Single pure entry point: build scene + rig for `seed`, run one search method, score it.

    `rig_config` / `method_config` may be config objects, plain dicts of overrides, or None.
    The result carries `curve_recall` / `curve_time_s` (one value per shot) besides the scalars.
    """
    from methods.ppm_search import SEARCH_METHODS

    if rig_config is None:
        rig_config = SearchRigConfig()
    elif isinstance(rig_config, dict):
        rig_config = _from_dict(SearchRigConfig, rig_config)
    spec = SEARCH_METHODS.get(method_name)
    if method_config is None:
        method_config = spec.config_cls()
    elif isinstance(method_config, dict):
        method_config = _from_dict(spec.config_cls, method_config)
    if not isinstance(method_config, spec.config_cls) or not isinstance(rig_config, SearchRigConfig):
        raise ConfigError(f"Method {method_name!r} needs a {spec.config_cls.__name__} (or a dict of "
                          f"overrides) and a SearchRigConfig; received {type(method_config).__name__} "
                          f"and {type(rig_config).__name__}.")
    session, extra, rng = build_session(rig_config, seed)
    tracks = spec.run(session, method_config, rng)
    out = search_metrics(session, tracks, extra)
    out.update(method=method_name, seed=seed)
    return out


def _from_dict(cls: type, overrides: dict) -> Any:
    """Build a frozen config from overrides; an unknown key is an error naming the valid ones."""
    from dataclasses import fields

    from methods.errors import did_you_mean

    valid = {f.name for f in fields(cls)}
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"Unknown {cls.__name__} key {key!r}. {did_you_mean(key, valid)}")
    vals = {k: tuple(map(tuple, v)) if isinstance(v, list) and v and isinstance(v[0], list) else v
            for k, v in overrides.items()}
    return replace(cls(), **vals)
