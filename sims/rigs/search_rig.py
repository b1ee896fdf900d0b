"""Virtual rig 1: hybrid wide-area search (wide-angle camera + 2-axis galvo + high-speed camera).

Paper: "A Novel Wide-Area Multiobject Detection System with High-Probability Region Searching",
Long, Zhao, Chen, Gu, Gu; arXiv 2405.04589 (2024). Only the abstract was readable; the numbers
below come from the authors' related C++ code (reference/systems.md §4.1, [code]):
±5 V per axis (10 V × 10 V field), a 224 px search window ↔ 0.45 V, region priors road 0.847,
sidewalk 0.129, tree 0.022, building 0.002, ~4 ms galvo wait / 0.5 ms controller step, 145 shots a
round, 120 fps claimed.

The rig works from pixels [ours unless marked]:
- a scene is analytic geometry (`sims/rigs/panorama.py`): bands sky / building / tree / sidewalk /
  road / sidewalk with wavy boundaries, tree blobs, targets placed with per-pixel density ∝ the
  world's class prior (`class_priors`, the paper's numbers plus a small sky prior [ours]),
  distractors (poles, bushes) placed uniformly;
- a method sees only pixels and what the project learned elsewhere: the rendered wide-angle
  panorama goes through the zoo segmenter `search-segmenter` (trained on other rendered scenes),
  which gives per-pixel class probabilities and confidence (`SearchSession.wide_view`); the
  region → target priors are counted on `prior_scenes` separate training scenes
  (`learn_region_priors`); the scene's own label map and target density never reach a method.
  `ppm_source="ground_truth"` is the labelled *upper bound*: one-hot true labels and the scene's
  true target density, as the rig before issue 19 did;
- each shot renders the crop the galvo camera sees (`render_crop`) and runs a classical
  dark-blob detector on it (`detect_blobs`); its localisation variance is not given but estimated:
  σ²(snr) = a + b / snr² fitted by least squares on detector errors measured on separate
  calibration scenes (`calibrate_detector`);
- the wide-angle pixel → mirror voltage map is a distorted, slightly rolled pinhole; the rig
  fits a polynomial to noisy simulated calibration spots and only that fit is given to a method;
- time: galvo settle is a step response of the angle moved (`settle_model="step_response"`):
  t(Δθ) = settle_s · max(1, Δθ / small_step_deg)^settle_exp with Δθ the larger axis' mechanical
  step. Parameters from the Thorlabs GVS011/GVS311 datasheet (10 mm mirror) [datasheet]: small-
  angle step response 400 µs at 0.2°; 50 %-travel square-wave bandwidth 65 Hz, i.e. a 20° step in
  half a period, 7.7 ms → settle_exp = ln(7.7 / 0.4) / ln(20 / 0.2) = 0.642; mechanical angle =
  optical / 2. ("linear": settle + Chebyshev distance / slew, the older model.) Camera frame
  period, exposure and a pipelined detector (`detect_s`, the paper's GPU YOLO, not our CPU blob
  detector) as before; the wide-angle capture (`wide_capture_s`, one 30 fps frame [ours]) and
  segmentation are charged before a method's first PPM shot, route planning before every round.
  `compute_clock="measured"` charges the measured wall time of planning and segmentation;
  `"model"` (default: deterministic, so grid sweeps and paired tests reproduce) charges the cost
  model `plan_s0 + plan_s2 · n²` per planned round of n shots and `seg_s` per segmentation, whose
  constants were measured on the dev machine (plan: 28.6 ms per 145-shot NN + 2-opt plan, issue
  19; segmentation: 75 ms, the fastest of 10 runs of the 128x128 segmenter on one thread with the
  2-core machine at load ≈ 16, so conservative); every result also carries the measured times
  (`plan_measured_s`, `segment_measured_s`) and the bench prints them beside the charged ones;
  `"none"` charges nothing. `time_budget_s` > 0 ends the search at that time (shots whose
  detection would finish later are not fired), so methods can be compared at equal time.
- fps is an outcome: shots / total time, with `fps_bound` naming the resource whose stand-alone
  time (camera n/fps, galvo Σ settle, detector n·detect_s, compute Σ charged) is largest.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from methods.errors import ConfigError
from sims.rigs.panorama import (
    Objects,
    SceneGeometry,
    detect_blobs,
    make_objects,
    one_hot,
    random_geometry,
    render_crop,
    render_panorama,
)

#: SeedSequence spawn keys of the project's *other* scene families (never an evaluated scene:
#: `build_session(seed)` uses `SeedSequence(seed)` with an empty spawn key).
SEGMENTER_TRAIN_KEY, SEGMENTER_EVAL_KEY, PRIOR_KEY, DETECTOR_CALIB_KEY = 1901, 1902, 1903, 1904


def family_seed(key: int, index: int) -> np.random.SeedSequence:
    """Seed of scene `index` of a training / calibration family (disjoint from evaluated scenes)."""
    return np.random.SeedSequence(entropy=index, spawn_key=(key,))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class SearchRigConfig:
    """Every physical constant of the search rig (units: volts, seconds, pixels)."""

    version: int = 2
    field_v: float = 10.0               # side of the square voltage field (±5 V)
    fov_v: float = 0.45                 # search-camera field of view in mirror volts
    search_px: int = 224                # the paper's detector input side (224 px ↔ fov_v), for px errors
    crop_px: int = 48                   # side of the rendered crop our detector sees
    wide_px: int = 128                  # wide-angle image side (≈ 0.1 V per pixel)
    wide_half_angle_deg: float = 24.0   # wide camera half field of view
    wide_k1: float = -0.08              # wide camera radial distortion
    wide_roll_rad: float = 0.01         # roll between wide camera and galvo axes
    optical_deg_per_v: float = 4.0      # 10 V ↔ 40° optical
    class_priors: tuple[tuple[str, float], ...] = (
        ("road", 0.847), ("sidewalk", 0.129), ("tree", 0.022), ("building", 0.002), ("sky", 0.0005))
    bands: tuple[tuple[str, float], ...] = (
        ("sky", 0.14), ("building", 0.24), ("tree", 0.10), ("sidewalk", 0.10), ("road", 0.28),
        ("sidewalk", 0.14))
    n_blobs: int = 4                    # tree blobs scattered over the scene
    blob_class: str = "tree"
    n_targets: int = 12
    n_distractors: int = 24             # poles and bushes, uniform over the field
    far: float = 3.0                    # distance factor at the top row is 1 + far
    wide_noise: float = 0.02
    crop_noise: float = 0.02
    calib_grid: int = 7                 # calib_grid² calibration spots
    calib_noise_px: float = 0.3
    calib_degree: int = 3
    settle_model: str = "step_response"
    settle_s: float = 0.4e-3            # small-step response time (GVS011 datasheet)
    small_step_deg: float = 0.2         # mechanical step of settle_s
    settle_exp: float = 0.642           # from the 65 Hz 50 %-travel bandwidth (see docstring)
    slew_v_per_s: float = 2000.0        # "linear" settle model only
    camera_fps: float = 120.0
    exposure_s: float = 3e-3
    detect_s: float = 4e-3
    wide_capture_s: float = 1.0 / 30.0
    compute_clock: str = "model"
    plan_s0: float = 1.0e-3             # cost model of one planned round (measured, see docstring)
    plan_s2: float = 1.36e-6            # … per shot²: 28.6 ms for a 145-shot NN + 2-opt plan
    seg_s: float = 0.075                # cost model of one segmentation (measured)
    time_budget_s: float = 0.0          # 0: no deadline
    ppm_source: str = "segmenter"       # "ground_truth" = the labelled upper bound
    prior_scenes: int = 60              # training scenes the region priors are counted on
    detector_calib_scenes: int = 6
    det_min_snr: float = 3.0
    det_snr0: float = 6.0               # conf = logistic((snr − snr0) / det_snr_w)
    det_snr_w: float = 1.5
    det_max_elong: float = 6.0
    conf_threshold: float = 0.5
    pointing_noise_v: float = 1e-4
    match_radius_v: float = 0.1

    def __post_init__(self) -> None:
        _require(self.version == 2, f"SearchRigConfig version must be 2 (rendered rig of issue 19); "
                                    f"received {self.version}.")
        _require(0 < self.fov_v < self.field_v,
                 f"Need 0 < fov_v < field_v; received fov_v={self.fov_v}, field_v={self.field_v}.")
        _require(self.camera_fps > 0 and 0 < self.exposure_s <= 1.0 / self.camera_fps,
                 f"Exposure must fit in a frame: 0 < exposure_s ≤ 1/camera_fps; received "
                 f"exposure_s={self.exposure_s}, camera_fps={self.camera_fps}. Lower the exposure.")
        for name in ("settle_s", "detect_s", "calib_noise_px", "pointing_noise_v", "wide_capture_s",
                     "plan_s0", "plan_s2", "seg_s", "time_budget_s", "wide_noise", "crop_noise", "far",
                     "settle_exp"):
            _require(getattr(self, name) >= 0, f"{name} must be ≥ 0; received {getattr(self, name)}.")
        _require(self.slew_v_per_s > 0 and self.small_step_deg > 0,
                 f"slew_v_per_s and small_step_deg must be > 0; received {self.slew_v_per_s}, "
                 f"{self.small_step_deg}.")
        for name, allowed in (("settle_model", ("step_response", "linear")),
                              ("compute_clock", ("model", "measured", "none")),
                              ("ppm_source", ("segmenter", "ground_truth"))):
            _require(getattr(self, name) in allowed,
                     f"{name} must be one of {allowed}; received {getattr(self, name)!r}.")
        _require(0 <= self.conf_threshold <= 1, f"conf_threshold must lie in [0, 1]; received "
                                                f"{self.conf_threshold}.")
        names = [c for c, _ in self.class_priors]
        _require(len(set(names)) == len(names) and all(p > 0 for _, p in self.class_priors),
                 f"class_priors must be distinct names with positive priors; received {self.class_priors}.")
        unknown = [b for b, _ in self.bands if b not in names] + (
            [self.blob_class] if self.n_blobs and self.blob_class not in names else [])
        _require(not unknown, f"Band/blob classes {unknown} are not in class_priors {names}; "
                              "add them to class_priors or change the bands.")
        _require(self.n_targets >= 1 and self.n_distractors >= 0 and self.calib_grid >= 3
                 and 1 <= self.calib_degree <= 5 and self.crop_px >= 16 and self.prior_scenes >= 1
                 and self.detector_calib_scenes >= 1,
                 f"Need n_targets ≥ 1, n_distractors ≥ 0, calib_grid ≥ 3, 1 ≤ calib_degree ≤ 5, "
                 f"crop_px ≥ 16, "
                 f"prior_scenes ≥ 1, detector_calib_scenes ≥ 1; received {self.n_targets}, "
                 f"{self.n_distractors}, {self.calib_grid}, {self.calib_degree}, {self.crop_px}, "
                 f"{self.prior_scenes}, {self.detector_calib_scenes}.")
        n_mono = (self.calib_degree + 1) * (self.calib_degree + 2) // 2
        _require(self.calib_grid ** 2 >= 2 * n_mono,
                 f"calib_grid²={self.calib_grid ** 2} spots are too few for a degree-"
                 f"{self.calib_degree} fit ({n_mono} coefficients); raise calib_grid.")

    @property
    def px_per_v(self) -> float:
        return self.search_px / self.fov_v

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.class_priors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        """Rig parameters an Optuna sweep may vary (all combinations are valid)."""
        return {
            "settle_s": ("float", 0.2e-3, 4e-3),
            "settle_model": ("categorical", ["step_response", "linear"]),
            "camera_fps": ("categorical", [60.0, 120.0, 240.0]),
            "detect_s": ("float", 1e-3, 8e-3),
            "conf_threshold": ("float", 0.2, 0.9),
            "det_min_snr": ("float", 2.0, 6.0),
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
    """The truth of one scene. `labels` and `target_priors` are ground truth: only the metrics
    and the labelled upper bound (`ppm_source="ground_truth"`) may read them."""

    labels: np.ndarray          # (H, W) int, index into class_names (rasterised geometry)
    class_names: tuple[str, ...]
    targets_px: np.ndarray      # (T, 2) (col, row)
    targets_v: np.ndarray       # (T, 2) true mirror voltages
    geometry: SceneGeometry | None = None
    objects: Objects | None = None
    target_priors: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the density targets follow


@functools.lru_cache(maxsize=8)
def _pixel_volts(cfg: SearchRigConfig) -> tuple[np.ndarray, np.ndarray]:
    pix = pixel_centres(cfg)
    return pix, true_pixel_to_voltage(pix, cfg)


def make_scene(cfg: SearchRigConfig, rng: np.random.Generator) -> Scene:
    """Geometry (bands, blobs), targets with density ∝ class prior, uniform distractors."""
    names = cfg.class_names
    geom = random_geometry(names, cfg.bands, cfg.wide_px, cfg.n_blobs, cfg.blob_class, rng)
    labels = geom.raster()
    pix, volts = _pixel_volts(cfg)
    prior = np.array([p for _, p in cfg.class_priors])
    inside = np.abs(volts).max(axis=1) <= cfg.field_v / 2 - 0.05
    weight = prior[labels.ravel()] * inside
    pick = rng.choice(len(pix), size=cfg.n_targets, replace=False, p=weight / weight.sum())
    t_px = pix[pick] + rng.uniform(-0.5, 0.5, (cfg.n_targets, 2))
    d_pick = rng.choice(len(pix), size=cfg.n_distractors, replace=False, p=inside / inside.sum())
    d_px = pix[d_pick] + rng.uniform(-0.5, 0.5, (cfg.n_distractors, 2))
    objs = make_objects(t_px, d_px, rng.integers(1, 3, cfg.n_distractors), cfg.wide_px, rng, far=cfg.far)
    return Scene(labels, names, t_px, true_pixel_to_voltage(t_px, cfg), geom, objs, prior)


@functools.lru_cache(maxsize=8)
def learn_region_priors(cfg: SearchRigConfig) -> np.ndarray:
    """Region → target priors counted on `prior_scenes` separate rendered training scenes.

    prior_c ∝ (targets on class c + 0.5) / (in-field pixels of class c + 1), normalised to sum 1
    (a target-per-area rate with a Jeffreys-like pseudo-count). Labels of *training* scenes are
    annotations the project owns; the evaluated scene is never among them (`PRIOR_KEY`).
    """
    names = cfg.class_names
    hits, area = np.zeros(len(names)), np.zeros(len(names))
    inside = np.abs(true_pixel_to_voltage(pixel_centres(cfg), cfg)).max(axis=1) <= cfg.field_v / 2
    for k in range(cfg.prior_scenes):
        scene = make_scene(cfg, np.random.default_rng(family_seed(PRIOR_KEY, k)))
        lab = scene.labels
        area += np.bincount(lab.ravel()[inside], minlength=len(names))
        t = np.clip(scene.targets_px.astype(int), 0, cfg.wide_px - 1)
        hits += np.bincount(lab[t[:, 1], t[:, 0]], minlength=len(names))
    rate = (hits + 0.5) / (area + 1.0)
    return rate / rate.sum()


# ----------------------------------------------------------------------------- timing
def settle_time(moves_v: np.ndarray, cfg: SearchRigConfig) -> np.ndarray:
    """Galvo settle time of each move (Chebyshev length in volts; see the module docstring)."""
    moves_v = np.asarray(moves_v, dtype=float)
    if cfg.settle_model == "linear":
        return cfg.settle_s + moves_v / cfg.slew_v_per_s
    mech_deg = moves_v * cfg.optical_deg_per_v / 2.0
    return cfg.settle_s * np.maximum(1.0, mech_deg / cfg.small_step_deg) ** cfg.settle_exp


def shot_schedule(moves_v: np.ndarray, cfg: SearchRigConfig, t_ready: float,
                  last_exposure_start: float, detector_free: float) -> dict[str, np.ndarray]:
    """Exact event times for one round of shots.

    moves_v: Chebyshev length of each mirror move (V). For shot i:
      exposure_start = max(previous exposure_end (or t_ready) + settle(move),
                           previous exposure_start + 1/fps)
      exposure_end   = exposure_start + exposure
      detect_end     = max(exposure_end, previous detect_end) + detect
    The mirror may leave as soon as an exposure ends; detection is pipelined.
    """
    period = 1.0 / cfg.camera_fps
    settle = settle_time(moves_v, cfg)
    n = len(moves_v)
    exp_start, exp_end, det_end = np.empty(n), np.empty(n), np.empty(n)
    free, last_start, det_free = t_ready, last_exposure_start, detector_free
    for i in range(n):
        s = max(free + settle[i], last_start + period)
        exp_start[i], exp_end[i] = s, s + cfg.exposure_s
        det_end[i] = max(exp_end[i], det_free) + cfg.detect_s
        free, last_start, det_free = exp_end[i], s, det_end[i]
    return {"exposure_start": exp_start, "exposure_end": exp_end, "detect_end": det_end, "settle": settle}


# ----------------------------------------------------------------------------- detector
@dataclass(frozen=True)
class Detection:
    """One detector output, already mapped to mirror volts."""

    v: np.ndarray   # (2,) estimated target position
    var: float      # estimated per-axis variance (V²), from the calibrated σ²(snr) model
    conf: float
    shot: int       # global index of the shot that produced it


def _raw_detections(img: np.ndarray, cmd_v: np.ndarray,
                    cfg: SearchRigConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector peaks of one crop as (volts (K, 2), snr (K,), scale in volts (K,))."""
    det = detect_blobs(img, min_snr=cfg.det_min_snr, max_elong=cfg.det_max_elong)
    off = det[:, :2] / cfg.crop_px * cfg.fov_v - cfg.fov_v / 2
    return cmd_v[None, :] + off, det[:, 2], det[:, 3] * cfg.fov_v / cfg.crop_px


def _var_features(snr: np.ndarray, scale_v: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(snr), 1.0 / np.maximum(snr, 1e-6) ** 2, scale_v ** 2], axis=1)


def confidence(snr: np.ndarray, cfg: SearchRigConfig) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.asarray(snr) - cfg.det_snr0) / cfg.det_snr_w))


SCENE_FIELDS = ("field_v", "wide_px", "wide_half_angle_deg", "wide_k1", "wide_roll_rad", "optical_deg_per_v",
                "class_priors", "bands", "n_blobs", "blob_class", "n_targets", "n_distractors", "far")
DETECTOR_FIELDS = SCENE_FIELDS + ("fov_v", "crop_px", "crop_noise", "det_min_snr", "det_snr0", "det_snr_w",
                                  "det_max_elong", "match_radius_v", "detector_calib_scenes")


def _key(cfg: SearchRigConfig, names: tuple[str, ...]) -> SearchRigConfig:
    """`cfg` with every field outside `names` at its default (the cache key of a calibration)."""
    return SearchRigConfig(**{n: getattr(cfg, n) for n in names})


def _detector_key(cfg: SearchRigConfig) -> SearchRigConfig:
    return _key(cfg, DETECTOR_FIELDS)


@functools.lru_cache(maxsize=8)
def _calibrate_detector(cfg: SearchRigConfig) -> dict[str, float]:
    names = cfg.class_names
    err2, feats, found, n_t, n_fp, n_crops = [], [], 0, 0, 0, 0
    for k in range(cfg.detector_calib_scenes):
        rng = np.random.default_rng(family_seed(DETECTOR_CALIB_KEY, k))
        scene = make_scene(cfg, rng)
        px_to_v = functools.partial(true_pixel_to_voltage, cfg=cfg)
        for t_v in scene.targets_v:
            cmd = t_v + rng.uniform(-0.35, 0.35, 2) * cfg.fov_v
            img = render_crop(scene.geometry, scene.objects, names, cmd, cfg.fov_v, cfg.crop_px, px_to_v, rng,
                              noise=cfg.crop_noise)
            v, snr, scale = _raw_detections(img, cmd, cfg)
            n_crops += 1
            n_t += 1
            keep = confidence(snr, cfg) >= 0.5
            v, snr, scale = v[keep], snr[keep], scale[keep]
            d = np.linalg.norm(v - t_v, axis=1) if len(v) else np.zeros(0)
            if len(d) and d.min() < cfg.match_radius_v:
                j = int(d.argmin())
                found += 1
                err2.append(((v[j] - t_v) ** 2).mean())
                feats.append(_var_features(snr[j:j + 1], scale[j:j + 1])[0])
                n_fp += len(v) - 1
            else:
                n_fp += len(v)
    from scipy.optimize import nnls

    e, a_mat = np.array(err2), np.array(feats)
    if len(e) >= 4:
        use = np.ones(len(e), dtype=bool)
        for _ in range(4):  # least squares on squared errors is outlier-bound: refit on |z| ≤ 3
            coef, _ = nnls(a_mat[use], e[use])
            use = e <= 9.0 * np.maximum(a_mat @ coef, 1e-12)
    else:
        coef = np.array([(cfg.fov_v / cfg.crop_px) ** 2, 0.0, 0.0])
    coef[0] = max(coef[0], 1e-8)
    return {"var_coef": tuple(float(c) for c in coef), "p_detect": found / max(n_t, 1),
            "fp_per_crop": n_fp / max(n_crops, 1), "n_calib_detections": len(e)}


def calibrate_detector(cfg: SearchRigConfig) -> dict[str, float]:
    """σ²(snr, scale) = a + b / snr² + c·scale² (per axis, V²; a, b, c ≥ 0 by NNLS, refitted with
    errors beyond 3σ left out, so mismatches do not set the scale) fitted on detector errors against
    the known target
    positions of `detector_calib_scenes` separate rendered scenes (crops centred within ±0.35 FOV
    of each target), plus the detection rate and false positives per crop measured there."""
    return _calibrate_detector(_detector_key(cfg))


class SearchSession:
    """One scene being searched. A method sees `panorama` (pixels), `wide_view()` (the zoo
    segmenter's class probabilities, charged on the clock), `class_priors` (learned on other
    scenes), the fitted pixel→voltage map `px_to_v`, `field_v`, `fov_v`, `mirror_v`, `clock`,
    `computing(n)` (charges planning) and `fire`; the truth stays inside the session."""

    def __init__(self, cfg: SearchRigConfig, scene: Scene, px_to_v: PolyMap, rng: np.random.Generator,
                 panorama: np.ndarray) -> None:
        self.cfg, self._scene, self.px_to_v, self._rng = cfg, scene, px_to_v, rng
        self.panorama = panorama
        self.class_names = cfg.class_names
        if cfg.ppm_source == "ground_truth":   # the labelled upper bound reads the scene's own density
            self.class_priors = np.asarray(scene.target_priors, dtype=float) / np.sum(scene.target_priors)
        else:
            self.class_priors = learn_region_priors(_prior_key(cfg))
        self._true_map = functools.partial(true_pixel_to_voltage, cfg=cfg)
        self._det_model = calibrate_detector(cfg)
        self.field_v, self.fov_v = cfg.field_v, cfg.fov_v
        self.deadline = cfg.time_budget_s if cfg.time_budget_s > 0 else math.inf
        self.mirror_v = np.zeros(2)
        self._t_ready, self._last_start, self._det_free = 0.0, -math.inf, 0.0
        self._wide: np.ndarray | None = None
        self.compute_s = {"capture": 0.0, "segmentation": 0.0, "plan": 0.0}
        self.measured_s = {"segmentation": 0.0, "plan": 0.0}
        self.settle_total_s = 0.0
        self.out_of_time = False
        self.shot_v: list[np.ndarray] = []
        self.shot_time: list[float] = []        # detection-finished time of each shot
        self.shot_hits: list[list[int]] = []    # true target ids detected by each shot
        self.shot_dets: list[list[tuple[float, float, int]]] = []  # (Vx, Vy, true id or -1) per shot
        self.move_total_v = 0.0

    @property
    def shots_fired(self) -> int:
        return len(self.shot_v)

    @property
    def clock(self) -> float:
        """When the rig is next free to act (s since the search began)."""
        return self._t_ready

    def _charge(self, what: str, seconds: float) -> None:
        self.compute_s[what] += seconds
        self._t_ready += seconds

    def _charged(self, what: str, measured: float, modelled: float) -> float:
        self.measured_s[what] += measured
        return {"measured": measured, "model": modelled, "none": 0.0}[self.cfg.compute_clock]

    def wide_view(self) -> np.ndarray:
        """(H, W, C) class probabilities of the wide-angle image; the first call charges one wide
        capture and one segmentation to the clock."""
        if self._wide is None:
            self._charge("capture", self.cfg.wide_capture_s if self.cfg.compute_clock != "none" else 0.0)
            if self.cfg.ppm_source == "ground_truth":
                start = time.perf_counter()
                probs = one_hot(self._scene.labels, len(self.class_names))
            else:
                from sims.zoo.search_segmenter_net import loaded_segmenter, segment_panorama

                loaded_segmenter()  # loading the weights is start-up, not per-scene work
                start = time.perf_counter()
                probs = segment_panorama(self.panorama, self.class_names)
            seg = self._charged("segmentation", time.perf_counter() - start, self.cfg.seg_s)
            self._charge("segmentation", seg)
            self._wide = probs
        return self._wide

    @property
    def labels(self) -> np.ndarray:
        """The segmenter's label map (argmax of `wide_view()`), not the scene's truth."""
        return self.wide_view().argmax(-1)

    @contextlib.contextmanager
    def computing(self, n_shots: int, routed: bool = True) -> Iterator[None]:
        """Charge the planning of a round of `n_shots` (measured wall time or the cost model;
        `routed=False`: no O(n²) routing, the model charges only `plan_s0`)."""
        start = time.perf_counter()
        yield
        model = self.cfg.plan_s0 + (self.cfg.plan_s2 * n_shots ** 2 if routed else 0.0)
        self._charge("plan", self._charged("plan", time.perf_counter() - start, model))

    def fire(self, shots_v: np.ndarray) -> list[Detection]:
        """Fire the shots in the given order; returns the round's detections (after the last one).
        Shots whose detection would end after `time_budget_s` are not fired."""
        cmd = np.clip(np.asarray(shots_v, dtype=float).reshape(-1, 2), -self.field_v / 2, self.field_v / 2)
        if len(cmd) == 0:
            return []
        path = np.vstack([self.mirror_v[None, :], cmd])
        moves = np.abs(np.diff(path, axis=0)).max(axis=1)
        times = shot_schedule(moves, self.cfg, self._t_ready, self._last_start, self._det_free)
        n = int(np.searchsorted(times["detect_end"], self.deadline, side="right"))
        if n < len(cmd):
            self.out_of_time = True
        if n == 0:
            self._t_ready = max(self._t_ready, self.deadline)
            return []
        dets: list[Detection] = []
        for k in range(n):
            dets.extend(self._detect(cmd[k], len(self.shot_v)))
            self.shot_v.append(cmd[k])
            self.shot_time.append(float(times["detect_end"][k]))
        self.move_total_v += float(moves[:n].sum())
        self.settle_total_s += float(times["settle"][:n].sum())
        self.mirror_v = cmd[n - 1].copy()
        self._last_start = float(times["exposure_start"][n - 1])
        self._det_free = float(times["detect_end"][n - 1])
        self._t_ready = max(float(times["exposure_end"][n - 1]), self._det_free)
        return dets

    def _detect(self, cmd: np.ndarray, shot: int) -> list[Detection]:
        cfg, rng, scene = self.cfg, self._rng, self._scene
        actual = cmd + rng.normal(0.0, cfg.pointing_noise_v, 2)
        img = render_crop(scene.geometry, scene.objects, self.class_names, actual, cfg.fov_v, cfg.crop_px,
                          self._true_map, rng, noise=cfg.crop_noise)
        v, snr, scale = _raw_detections(img, cmd, cfg)
        conf = confidence(snr, cfg)
        keep = conf >= cfg.conf_threshold
        v, snr, scale, conf = v[keep], snr[keep], scale[keep], conf[keep]
        var = _var_features(snr, scale) @ np.array(self._det_model["var_coef"])
        truth = []
        for p in v:
            d = np.linalg.norm(scene.targets_v - p, axis=1)
            truth.append(int(d.argmin()) if d.min() < cfg.match_radius_v else -1)
        self.shot_hits.append(sorted({t for t in truth if t >= 0}))
        self.shot_dets.append([(float(p[0]), float(p[1]), t) for p, t in zip(v, truth, strict=True)])
        return [Detection(p, float(s), float(c), shot) for p, s, c in zip(v, var, conf, strict=True)]


def _prior_key(cfg: SearchRigConfig) -> SearchRigConfig:
    """Only the scene-generation fields decide the learned priors."""
    return _key(cfg, SCENE_FIELDS + ("prior_scenes",))


def build_session(cfg: SearchRigConfig,
                  seed: int) -> tuple[SearchSession, dict[str, float], np.random.Generator]:
    """Scene, calibration, detector, method and rendering streams are independent children of
    `seed`, so every method meets the same scene, panorama and calibration for a given seed."""
    if cfg.ppm_source == "segmenter":
        from sims.zoo.search_segmenter_net import check_classes

        check_classes(cfg.class_names)
    scene_ss, calib_ss, det_ss, method_ss, render_ss = np.random.SeedSequence(seed).spawn(5)
    scene = make_scene(cfg, np.random.default_rng(scene_ss))
    px_to_v, calib_rmse = calibrate_wide_to_galvo(cfg, np.random.default_rng(calib_ss))
    pano = render_panorama(scene.geometry, scene.objects, cfg.class_names, np.random.default_rng(render_ss),
                           noise=cfg.wide_noise)
    session = SearchSession(cfg, scene, px_to_v, np.random.default_rng(det_ss), pano)
    det = session._det_model
    extra = {"calib_rmse_v": calib_rmse, "det_p_detect_calib": det["p_detect"],
             "det_fp_per_crop_calib": det["fp_per_crop"], "det_sigma_floor_v": math.sqrt(det["var_coef"][0])}
    return session, extra, np.random.default_rng(method_ss)


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


BOUNDS = ("camera", "galvo", "detector", "compute")


def search_metrics(session: SearchSession, tracks: list[Any], extra: dict[str, float]) -> dict[str, Any]:
    """Recall against shots and time, localisation error (refined and single-shot), fps and its bound."""
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
    total = session.shot_time[-1] if session.shot_time else session.clock
    n = session.shots_fired
    nan = math.nan  # one object, so equal results compare equal with ==
    compute = sum(session.compute_s.values())
    stand_alone = {"camera": n / cfg.camera_fps, "galvo": session.settle_total_s,
                   "detector": n * cfg.detect_s, "compute": compute}
    n_dets = sum(len(d) for d in session.shot_dets)
    n_fp = sum(1 for d in session.shot_dets for *_, t in d if t < 0)
    return {
        "n_targets": len(truth), "n_shots": n, "total_time_s": total,
        "system_fps": n / total if total > 0 else nan,
        "fps_bound": max(stand_alone, key=stand_alone.get),
        **{f"time_{k}_s": v for k, v in stand_alone.items()},
        "plan_s": session.compute_s["plan"], "segment_s": session.compute_s["segmentation"],
        "capture_s": session.compute_s["capture"],
        # wall-clock figures are reported only when they are charged, so results stay reproducible
        "plan_measured_s": session.measured_s["plan"] if cfg.compute_clock == "measured" else nan,
        "segment_measured_s": session.measured_s["segmentation"] if cfg.compute_clock == "measured" else nan,
        "recall": curve[-1] if curve else 0.0,
        "recall_localised": len(matched) / len(truth),
        "precision": len(matched) / len(tracks) if tracks else nan,
        "n_reported": len(tracks),
        "det_fp_share": n_fp / n_dets if n_dets else nan,
        "loc_err_v": float(err.mean()) if len(err) else nan,
        "loc_err_single_v": float(err_single.mean()) if len(err) else nan,
        "loc_err_px": float(err.mean() * cfg.px_per_v) if len(err) else nan,
        "mean_move_v": session.move_total_v / max(n, 1),
        "curve_recall": curve, "curve_time_s": list(session.shot_time),
        **extra,
    }


#: The results a farm trial averages over its scenes (`RigSpec.metrics`).
SEARCH_TRIAL_METRICS = ("recall", "total_time_s", "system_fps", "recall_localised", "precision", "loc_err_v",
                        "loc_err_single_v", "loc_err_px", "mean_move_v", "n_shots", "calib_rmse_v",
                        "plan_s", "segment_s", "det_fp_share")


def search_method_config(method_name: str) -> type:
    """The config class of a `SEARCH_METHODS` strategy (an unknown name lists the known ones)."""
    from methods.ppm_search import SEARCH_METHODS

    return SEARCH_METHODS.get(method_name).config_cls


def evaluate_search(rig_config: SearchRigConfig | dict | None, method_name: str,
                    method_config: Any = None, seed: int = 0, keep_session: bool = False) -> dict[str, Any]:
    """Single pure entry point: build scene + rig for `seed`, run one search method, score it.

    `rig_config` / `method_config` may be config objects, plain dicts of overrides, or None.
    The result carries `curve_recall` / `curve_time_s` (one value per shot) besides the scalars;
    `keep_session=True` adds the session and tracks under `_session` / `_tracks` (for pictures).
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
    out.update(method=method_name, seed=seed, ppm_source=rig_config.ppm_source)
    if keep_session:
        out.update(_session=session, _tracks=tracks)
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
