"""Virtual rig 2: multi-galvanometer light-section 3D scanner and its static-camera baseline.

Paper: "A Novel Dynamic Light-Section 3D Reconstruction Method for Wide-Range Sensing",
Chen, Li, Shimasaki, Hu, Gu, Ishii; arXiv 2403.01374 (Sensors 2024). The paper claims 0.3 mm
over 1100 × 1300 × 650 mm; its geometry and code were not readable (systems.md §5).

Everything here is our design [inferred], after systems.md §5.2–5.3 and the simulation plan:
- a 1024² px camera, f = 2400 px, looks along +z through a periscope of two galvo mirrors
  (40 mm apart; mirror 1 tilts the view vertically, mirror 2 horizontally; 1°/V, ±5 V);
- a line laser is folded by its own galvo mirror `laser_baseline_mm` to the side (2°/V,
  ±10 V), so its sheet sweeps across x; triangulation baseline ≈ that distance;
- the true rig = design + manufacturing deviations drawn from the seed (≈20 px in K, 0.01 rad in
  axes/normals, 1 mm in points, 2 % in gains, unknown radial distortion);
- from pixels (`pixels=True`, default): each stripe point is imaged as a patch of grey levels
  (sims/rigs/stripes.py: Gaussian profile, speckle, ambient background, shot/read noise, 8 bit)
  and the *method* extracts its centre (methods/stripe_centre.py, Steger or grey centroid);
  `pixels=False` gives the old analytic column noise `stripe_noise_px`. Checkerboard corners
  keep that analytic noise on both axes (no rendered checkerboard) [ours]; drive voltages are
  read back with `drive_noise_v` noise;
- the truth has what the calibration model lacks, each switchable (0 = off) [inferred magnitudes]:
  mirror surfaces `mirror_offset_mm` off their rotation axes; a quadratic galvo angle bow
  `galvo_nonlin` (fraction of full scale, random sign per galvo); a zero-angle drift of
  `drift_urad` per galvo over the session (the tiers are recorded at times 1/8, 3/8, 5/8, 7/8);
  survey noise on the 3D reference points (`ref_noise_mm`) and on the laser boards' poses
  (`board_tilt_rad`, `board_offset_mm`);
- calibration targets: surveyed boards for the camera tier, plain boards of known pose for the
  laser tier, and known 3D points (a "CMM-measured" set) for the joint tier; a fresh set of
  points in the volume is the test set;
- the method reads only `Measurements` (pixels, read-back voltages, nominal points and poses,
  the design); the simulator's `TruthRecord` is kept apart and used only to score: test RMSE
  beside the floor = the true rig (offsets, bow and drift known) on the same extracted pixels;
- the static baseline is one fixed camera with focal f × `static_focal_ratio` that covers the
  same volume, with the same laser and the same calibration pipeline.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from methods import galvo3d as g3
from methods.errors import ConfigError, UnknownNameError
from methods.stripe_centre import StripeCentreConfig, extract
from sims.rigs.stripes import StripeRenderConfig, render_stripes


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class ScannerRigConfig:
    version: int = 1
    f_px: float = 2400.0
    sensor_px: int = 1024
    k1: float = -0.05
    k2: float = 0.02
    mirror_gap_mm: float = 40.0
    laser_baseline_mm: float = 300.0
    cam_deg_per_v: float = 1.0
    laser_deg_per_v: float = 2.0
    cam_v_range: float = 5.0
    laser_v_range: float = 10.0
    volume_mm: tuple[float, float, float] = (1300.0, 1100.0, 650.0)   # x, y, z spans
    z_near_mm: float = 1700.0
    stripe_noise_px: float = 0.1
    drive_noise_v: float = 1e-4
    intr_sigma_px: float = 20.0
    angle_sigma_rad: float = 0.01
    point_sigma_mm: float = 1.0
    gain_rel_sigma: float = 0.02
    static_focal_ratio: float = 0.2
    # from pixels: stripe images rendered (sims/rigs/stripes.py) and extracted by the method;
    # False = the analytic column noise `stripe_noise_px` (board corners always use it)
    pixels: bool = True
    stripe_width_px: float = 1.5
    stripe_peak_dn: float = 170.0
    speckle_contrast: float = 0.2
    read_noise_dn: float = 1.5
    # what the calibration model lacks (each 0 = off); magnitudes of the order closed-loop galvo
    # datasheets give (linearity ≥ 99.9 %, zero drift tens of µrad per °C) [inferred]
    mirror_offset_mm: float = 1.0     # mirror surface ↔ rotation axis, every mirror
    galvo_nonlin: float = 1e-3        # quadratic angle bow, fraction of full scale, per galvo
    drift_urad: float = 30.0          # zero-angle drift of each galvo over the session
    ref_noise_mm: float = 0.02        # survey noise of 3D reference points (CMM / tracker)
    board_tilt_rad: float = 5e-5      # survey noise of each laser-tier board's pose
    board_offset_mm: float = 0.02

    def __post_init__(self) -> None:
        _require(self.version == 1, f"ScannerRigConfig version must be 1; received {self.version}.")
        for name in ("f_px", "mirror_gap_mm", "laser_baseline_mm", "cam_deg_per_v", "laser_deg_per_v",
                     "cam_v_range", "laser_v_range", "z_near_mm", "static_focal_ratio"):
            _require(getattr(self, name) > 0, f"{name} must be > 0; received {getattr(self, name)}.")
        for name in ("stripe_noise_px", "drive_noise_v", "intr_sigma_px", "angle_sigma_rad",
                     "point_sigma_mm", "gain_rel_sigma", "mirror_offset_mm", "drift_urad",
                     "ref_noise_mm", "board_tilt_rad", "board_offset_mm", "read_noise_dn"):
            _require(getattr(self, name) >= 0, f"{name} must be ≥ 0; received {getattr(self, name)}.")
        _require(len(self.volume_mm) == 3 and min(self.volume_mm) > 0,
                 f"volume_mm must be three positive spans (x, y, z) in mm; received {self.volume_mm}.")
        _require(self.sensor_px >= 64, f"sensor_px must be ≥ 64; received {self.sensor_px}.")
        _require(abs(self.galvo_nonlin) < 0.05, "galvo_nonlin is a fraction of full scale, |·| < 0.05; "
                 f"received {self.galvo_nonlin}.")
        stripe_render_config(self)   # the stripe fields are checked where they are used

    def without_mismatch(self) -> ScannerRigConfig:
        """The same rig with every effect the calibration model lacks switched off."""
        return replace(self, **dict.fromkeys(MISMATCH_FIELDS, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"stripe_noise_px": ("float", 0.02, 0.5), "drive_noise_v": ("float", 0.0, 1e-3),
                "laser_baseline_mm": ("float", 150.0, 500.0), "speckle_contrast": ("float", 0.0, 0.6)}


#: ScannerRigConfig fields of the effects the calibration model does not have.
MISMATCH_FIELDS = ("mirror_offset_mm", "galvo_nonlin", "drift_urad", "ref_noise_mm", "board_tilt_rad",
                   "board_offset_mm")


def stripe_render_config(cfg: ScannerRigConfig) -> StripeRenderConfig:
    return StripeRenderConfig(width_px=cfg.stripe_width_px, peak_dn=cfg.stripe_peak_dn,
                              speckle_contrast=cfg.speckle_contrast, read_noise_dn=cfg.read_noise_dn)


@dataclass(frozen=True)
class CalibConfig:
    version: int = 1
    n_camera_points: int = 200
    n_laser_points: int = 200
    n_joint_points: int = 150
    n_test_points: int = 400
    tiers: str = "all"          # "all": camera → laser → joint; "staged": no joint; "joint": joint only
    max_nfev: int = 300
    prior_weight: float = 0.01  # weak tolerance prior (methods.galvo3d._fit); 0 disables it
    static_baseline: bool = True
    # stripe extraction (methods/stripe_centre.py)
    extractor: str = "steger"
    extractor_sigma_px: float = 1.5
    centroid_half_window: int = 4
    centroid_threshold: float = 0.2
    # joint tier: "stacked" keeps the camera/laser-tier residuals in its objective, "3d" only its points
    joint_mode: str = "stacked"
    corner_sigma_px: float = 0.1      # whitening of the stacked objective (expected noise)
    ref_sigma_mm: float = 0.5

    def __post_init__(self) -> None:
        _require(self.version == 1, f"CalibConfig version must be 1; received {self.version}.")
        _require(self.tiers in ("all", "staged", "joint"),
                 f"tiers must be 'all', 'staged' or 'joint'; received {self.tiers!r}.")
        _require(min(self.n_camera_points, self.n_laser_points, self.n_joint_points) >= 20
                 and self.n_test_points >= 1 and self.max_nfev >= 1,
                 "Need ≥ 20 points per calibration tier, ≥ 1 test point and max_nfev ≥ 1; received "
                 f"{self.n_camera_points}, {self.n_laser_points}, {self.n_joint_points}, "
                 f"{self.n_test_points}, {self.max_nfev}.")
        _require(self.prior_weight >= 0, f"prior_weight must be ≥ 0; received {self.prior_weight}.")
        _require(self.joint_mode in ("stacked", "3d"),
                 f"joint_mode must be 'stacked' or '3d'; received {self.joint_mode!r}.")
        _require(self.corner_sigma_px > 0 and self.ref_sigma_mm > 0,
                 f"corner_sigma_px and ref_sigma_mm must be > 0; received {self.corner_sigma_px}, "
                 f"{self.ref_sigma_mm}.")
        self.extractor_config()   # checks the extractor fields

    def extractor_config(self) -> StripeCentreConfig:
        return StripeCentreConfig(method=self.extractor, sigma_px=self.extractor_sigma_px,
                                  half_window=self.centroid_half_window, threshold=self.centroid_threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"n_joint_points": ("categorical", [40, 80, 150, 300]),
                "n_camera_points": ("categorical", [50, 100, 200]),
                "tiers": ("categorical", ["all", "staged", "joint"]),
                "joint_mode": ("categorical", ["stacked", "3d"]),
                "extractor": ("categorical", ["steger", "centroid"]),
                "extractor_sigma_px": ("float", 0.8, 3.0), "centroid_half_window": ("int", 2, 8),
                "centroid_threshold": ("float", 0.0, 0.6)}


# ----------------------------------------------------------------------------- geometry
def make_design(cfg: ScannerRigConfig, static: bool = False) -> tuple[g3.ScannerDesign, np.ndarray]:
    """Nominal geometry and the design parameter vector (tilts and shifts zero)."""
    s2 = 1.0 / math.sqrt(2.0)
    fold = (0.0, s2, -s2)   # folds +z into +y (mirror 1) and +y back into +z (mirror 2)
    cams = () if static else (
        g3.MirrorDesign((1.0, 0.0, 0.0), (0.0, 0.0, 50.0), fold),
        g3.MirrorDesign((0.0, s2, s2), (0.0, cfg.mirror_gap_mm, 50.0), fold))
    y0 = 0.0 if static else cfg.mirror_gap_mm
    laser = g3.MirrorDesign((0.0, 1.0, 0.0), (cfg.laser_baseline_mm, y0, 50.0), (-s2, 0.0, -s2))
    design = g3.ScannerDesign(cams, laser, (0.0, 0.0, 1.0), 50.0)
    f = cfg.f_px * (cfg.static_focal_ratio if static else 1.0)
    c = cfg.sensor_px / 2.0
    x = np.zeros(design.n_params)
    x[:4] = (f, f, c, c)
    m = len(g3.MIRROR_FIELDS)
    for j in range(len(cams)):
        x[6 + m * j + 6] = math.radians(cfg.cam_deg_per_v)
    x[6 + m * len(cams) + 6] = math.radians(cfg.laser_deg_per_v)
    return design, x


def perturb(cfg: ScannerRigConfig, design: g3.ScannerDesign, x: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """The as-built rig: design + manufacturing deviations (and the lens's real distortion)."""
    out = x.copy()
    out[:4] += rng.normal(0.0, cfg.intr_sigma_px, 4)
    out[4:6] = (cfg.k1, cfg.k2)
    m = len(g3.MIRROR_FIELDS)
    for j in range(len(design.cam_mirrors) + 1):
        o = 6 + m * j
        out[o:o + 2] += rng.normal(0.0, cfg.angle_sigma_rad, 2)
        out[o + 2:o + 4] += rng.normal(0.0, cfg.point_sigma_mm, 2)
        out[o + 4:o + 6] += rng.normal(0.0, cfg.angle_sigma_rad, 2)
        out[o + 6] *= 1.0 + rng.normal(0.0, cfg.gain_rel_sigma)
    out[-3:-1] += rng.normal(0.0, cfg.angle_sigma_rad, 2)
    out[-1] += rng.normal(0.0, cfg.point_sigma_mm)
    return out


def volume_bounds(cfg: ScannerRigConfig, design: g3.ScannerDesign) -> np.ndarray:
    """(2, 3) lower/upper corners of the measured volume, centred on the outgoing optical axis."""
    cy = design.cam_mirrors[-1].point[1] if design.cam_mirrors else 0.0
    sx, sy, sz = cfg.volume_mm
    return np.array([[-sx / 2, cy - sy / 2, cfg.z_near_mm], [sx / 2, cy + sy / 2, cfg.z_near_mm + sz]])


# ----------------------------------------------------------------------------- the as-built truth
@dataclass(frozen=True)
class Truth:
    """The simulated physical rig: parameters in the model's form plus what the model lacks.

    Mirror j's physical angle is gain_j·g_j(V) + drift_j·t with g_j(V) = V + nl_j·V_max·(V/V_max)²
    (V the commanded, read-back voltage; t ∈ [0, 1] the session time), and its surface sits
    `offset` mm from the rotation axis. Expressed as the *effective* voltage the linear model would
    need: v_eff = g_j(V) + drift_j·t / gain_j. Mirrors are ordered camera 1.., laser last."""

    design: g3.ScannerDesign
    x: np.ndarray
    p: g3.Decoded               # with the mirror-surface offsets
    v_max: np.ndarray           # per mirror
    nonlin: np.ndarray          # per mirror, fraction of full scale
    drift_rad: np.ndarray       # per mirror, over the whole session

    @staticmethod
    def ideal(design: g3.ScannerDesign, x: np.ndarray) -> Truth:
        k = len(design.cam_mirrors) + 1
        return Truth(design, x, g3.decode(design, x), np.ones(k), np.zeros(k), np.zeros(k))

    def _gains(self) -> np.ndarray:
        return np.array([m.gain for m in (*self.p.cam_mirrors, self.p.laser_mirror)])

    def effective(self, v: np.ndarray, j: int, t: float) -> np.ndarray:
        vm = self.v_max[j]
        return v + self.nonlin[j] * vm * (v / vm) ** 2 + self.drift_rad[j] * t / self._gains()[j]

    def commanded(self, v_eff: np.ndarray, j: int, t: float) -> np.ndarray:
        """Inverse of `effective` (fixed point; |nl| ≪ 1 contracts in a few steps)."""
        target = v_eff - self.drift_rad[j] * t / self._gains()[j]
        v, vm = target.copy(), self.v_max[j]
        for _ in range(30):
            v = target - self.nonlin[j] * vm * (v / vm) ** 2
        return v

    def eff_cam(self, v_cam: np.ndarray, t: float) -> np.ndarray:
        return np.stack([self.effective(v_cam[:, j], j, t) for j in range(v_cam.shape[1])], axis=1) \
            if v_cam.shape[1] else v_cam

    def eff_laser(self, v_l: np.ndarray, t: float) -> np.ndarray:
        return self.effective(v_l, len(self.p.cam_mirrors), t)


def make_truth(cfg: ScannerRigConfig, design: g3.ScannerDesign, x_true: np.ndarray,
               rng: np.random.Generator) -> Truth:
    p = g3.decode(design, x_true)
    k = len(design.cam_mirrors)
    sign = rng.choice([-1.0, 1.0], (3, k + 1))
    off = cfg.mirror_offset_mm
    p = replace(p, cam_mirrors=tuple(replace(m, offset=off) for m in p.cam_mirrors),
                laser_mirror=replace(p.laser_mirror, offset=off))
    v_max = np.array([cfg.cam_v_range] * k + [cfg.laser_v_range])
    return Truth(design, x_true, p, v_max, sign[0] * cfg.galvo_nonlin,
                 sign[1] * cfg.drift_urad * 1e-6)


# ----------------------------------------------------------------------------- observation
#: Session time of each acquisition: camera tier, laser tier, joint tier, test [ours].
TIER_TIME = {"camera": 0.125, "laser": 0.375, "joint": 0.625, "test": 0.875}


def aim_camera(cfg: ScannerRigConfig, truth: Truth, X: np.ndarray, rng: np.random.Generator,
               t: float, tries: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Pick commanded camera-mirror voltages that put each point inside the image (10 % margin).

    Returns (voltages (N, n_mirrors), ok (N,) bool). A static camera needs no voltages."""
    n, k = len(X), len(truth.p.cam_mirrors)
    lo, hi = 0.1 * cfg.sensor_px, 0.9 * cfg.sensor_px
    if k == 0:
        u = g3.project(truth.p, X, np.zeros((n, 0)))
        return np.zeros((n, 0)), np.all((u > lo) & (u < hi), axis=1)
    cand = rng.uniform(-cfg.cam_v_range, cfg.cam_v_range, (n * tries, k))
    u = g3.project(truth.p, np.repeat(X, tries, axis=0), truth.eff_cam(cand, t)).reshape(n, tries, 2)
    good = np.all((u > lo) & (u < hi), axis=2)
    first = np.argmax(good, axis=1)
    return cand.reshape(n, tries, k)[np.arange(n), first], good.any(axis=1)


def solve_laser_voltage(cfg: ScannerRigConfig, p: g3.Decoded,
                        X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Effective laser voltage whose sheet passes through each X (Newton, vectorised)."""
    v = np.zeros(len(X))
    eps = 1e-6
    for _ in range(40):
        n, c = g3.laser_planes(p, v)
        f = (n * X).sum(axis=1) - c
        n2, c2 = g3.laser_planes(p, v + eps)
        df = ((n2 * X).sum(axis=1) - c2 - f) / eps
        v = np.clip(v - f / df, -2 * cfg.laser_v_range, 2 * cfg.laser_v_range)
    n, c = g3.laser_planes(p, v)
    ok = np.abs((n * X).sum(axis=1) - c) < 1e-7
    return v, ok


@dataclass(frozen=True)
class Shots:
    """What the rig records for one tier (the method's view): stripe patches (or, with
    `pixels=False` and for board corners, pixel coordinates), read-back voltages, and the
    *nominal* 3D reference points (surveyed, with their survey noise; NaN where none)."""

    v_cam: np.ndarray
    v_laser: np.ndarray
    X_ref: np.ndarray
    row: np.ndarray                   # image row coordinate of the measured point
    u: np.ndarray | None = None       # (N, 2) pixel coordinates when no image is rendered
    images: np.ndarray | None = None  # (N, H, W) stripe patches
    col0: np.ndarray | None = None    # (N,) image column of each patch's first pixel

    def take(self, idx: np.ndarray) -> Shots:
        return Shots(*(None if getattr(self, f) is None else getattr(self, f)[idx]
                       for f in ("v_cam", "v_laser", "X_ref", "row", "u", "images", "col0")))

    def __len__(self) -> int:
        return len(self.v_laser)


def _concat(parts: list[tuple[Shots, np.ndarray]]) -> tuple[Shots, np.ndarray]:
    fields = ("v_cam", "v_laser", "X_ref", "row", "u", "images", "col0")
    vals = [None if getattr(parts[0][0], f) is None else np.concatenate([getattr(s, f) for s, _ in parts])
            for f in fields]
    return Shots(*vals), np.concatenate([x for _, x in parts])


def _stripe_slope(p: g3.Decoded, X: np.ndarray, v_cam_eff: np.ndarray, v_l_eff: np.ndarray,
                  u: np.ndarray) -> np.ndarray:
    """Columns per row of the stripe's image near each point: the laser sheet ∩ the plane
    z = const through the point (a fronto-parallel patch of surface) [inferred]."""
    n, _ = g3.laser_planes(p, v_l_eff)
    d = np.cross(n, [0.0, 0.0, 1.0])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    u2 = g3.project(p, X + 5.0 * d, v_cam_eff)
    du, dv = u2[:, 0] - u[:, 0], u2[:, 1] - u[:, 1]
    return np.clip(du / np.where(np.abs(dv) > 1e-9, dv, 1e-9), -1.0, 1.0)


def observe(cfg: ScannerRigConfig, truth: Truth, X: np.ndarray, rng: np.random.Generator,
            laser: bool, t: float, noise: bool = True) -> tuple[Shots, np.ndarray]:
    """Aim, (optionally) solve the laser, image; keeps only the points the rig can measure.

    Returns the rig's record and the true 3D points it measured (kept apart from the record)."""
    v_cam, ok = aim_camera(cfg, truth, X, rng, t)
    v_l_eff = np.zeros(len(X))
    if laser:
        v_l_eff, ok_l = solve_laser_voltage(cfg, truth.p, X)
        ok &= ok_l
    X, v_cam, v_l_eff = X[ok], v_cam[ok], v_l_eff[ok]
    v_l = truth.commanded(v_l_eff, len(truth.p.cam_mirrors), t) if laser else v_l_eff
    keep = np.abs(v_l) <= cfg.laser_v_range
    X, v_cam, v_l, v_l_eff = X[keep], v_cam[keep], v_l[keep], v_l_eff[keep]
    v_cam_eff = truth.eff_cam(v_cam, t)
    u = g3.project(truth.p, X, v_cam_eff)
    X_ref = X + rng.normal(0.0, cfg.ref_noise_mm, X.shape) if noise else X.copy()
    images = col0 = None
    u_rec = u.copy()
    if laser and cfg.pixels and noise:
        slope = _stripe_slope(truth.p, X, v_cam_eff, v_l_eff, u)
        patches = render_stripes(stripe_render_config(cfg), u[:, 0], slope, rng)
        images, col0, u_rec = patches.images, patches.col0, None
    elif noise:
        if laser:   # analytic stripe noise: sub-pixel column per image row
            u_rec[:, 0] += rng.normal(0.0, cfg.stripe_noise_px, len(u))
        else:       # board corners: both axes
            u_rec += rng.normal(0.0, cfg.stripe_noise_px, u.shape)
    if noise:
        v_cam = v_cam + rng.normal(0.0, cfg.drive_noise_v, v_cam.shape)
        v_l = v_l + rng.normal(0.0, cfg.drive_noise_v, v_l.shape)
    row = (u_rec[:, 1] if u_rec is not None else u[:, 1]).copy()
    return Shots(v_cam, v_l, X_ref, row, u_rec, images, col0), X


def sample_volume(bounds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * rng.uniform(size=(n, 3))


def observe_n(cfg, truth: Truth, n: int, rng, laser: bool, sampler, t: float,
              noise: bool = True) -> tuple[Shots, np.ndarray]:
    """Draw candidate points until `n` of them are measurable (over-sampling ×2 per pass)."""
    parts, have = [], 0
    for _ in range(20):
        shots, X = observe(cfg, truth, sampler(2 * (n - have) + 8), rng, laser, t, noise)
        parts.append((shots, X))
        have += len(X)
        if have >= n:
            break
    shots, X = _concat(parts)
    if len(X) < n:
        raise ConfigError(f"Only {len(X)} of {n} points are measurable with this geometry; "
                          "widen the mirror voltage ranges or shrink volume_mm.")
    idx = np.arange(n)
    return shots.take(idx), X[idx]


def board_points(bounds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Surveyed target points on three boards (planes z = const) across the volume."""
    zs = np.linspace(bounds[0, 2], bounds[1, 2], 3)
    pts = sample_volume(bounds, n, rng)
    pts[:, 2] = zs[rng.integers(0, 3, n)]
    return pts


def laser_board_observations(cfg, truth: Truth, bounds, n: int, rng, t: float,
                             noise: bool = True) -> tuple[Shots, np.ndarray, np.ndarray]:
    """Stripe points on three boards z = const; returns the record, the *nominal* board planes
    (N, 4: n, c; with the pose survey noise) and the true points."""
    zs = np.linspace(bounds[0, 2], bounds[1, 2], 3)
    parts, have = [], 0
    lm = len(truth.p.cam_mirrors)
    for _ in range(20):
        m = 3 * (n - have) + 8
        v_l = truth.effective(rng.uniform(-cfg.laser_v_range, cfg.laser_v_range, m), lm, t)
        z = zs[rng.integers(0, 3, m)]
        y = rng.uniform(bounds[0, 1], bounds[1, 1], m)
        nl, c = g3.laser_planes(truth.p, v_l)
        x = (c - nl[:, 1] * y - nl[:, 2] * z) / nl[:, 0]
        X = np.stack([x, y, z], axis=1)
        X = X[(x > bounds[0, 0]) & (x < bounds[1, 0])]
        parts.append(observe(cfg, truth, X, rng, True, t, noise))
        have += len(parts[-1][1])
        if have >= n:
            break
    shots, X = _concat(parts)
    idx = np.arange(min(n, len(X)))
    shots, X = shots.take(idx), X[idx]
    board = np.searchsorted(zs, X[:, 2] - 1e-6)       # which of the three boards
    normal = np.tile([0.0, 0.0, 1.0], (3, 1))
    offset = zs.copy()
    if noise:   # survey error of each board's pose: a small tilt and a shift
        normal[:, :2] += rng.normal(0.0, cfg.board_tilt_rad, (3, 2))
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        offset = offset + rng.normal(0.0, cfg.board_offset_mm, 3)
    boards = np.concatenate([normal[board], offset[board, None]], axis=1)
    return shots, boards, X


# ----------------------------------------------------------------------------- one session
@dataclass(frozen=True)
class Measurements:
    """Everything the calibration method may read: the nominal design, the rig's records of the
    four tiers (pixels, read-back voltages, nominal reference points and board poses)."""

    design: g3.ScannerDesign
    x_design: np.ndarray
    cam: Shots
    laser: Shots
    boards: np.ndarray
    joint: Shots
    test: Shots


@dataclass(frozen=True)
class TruthRecord:
    """The simulator's side, never handed to the method: the rig and the true measured points."""

    truth: Truth
    X: dict[str, np.ndarray]


def simulate_session(cfg: ScannerRigConfig, calib: CalibConfig, seed: int,
                     static: bool) -> tuple[Measurements, TruthRecord]:
    """Build one as-built rig (galvo or static camera) and record its four acquisitions."""
    design, x_design = make_design(cfg, static)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, int(static)]).spawn(6)]
    truth = make_truth(cfg, design, perturb(cfg, design, x_design, streams[0]), streams[5])
    bounds = volume_bounds(cfg, design)
    T = TIER_TIME
    cam, Xc = observe_n(cfg, truth, calib.n_camera_points, streams[1], False,
                        lambda k: board_points(bounds, k, streams[1]), T["camera"])
    las, boards, Xl = laser_board_observations(cfg, truth, bounds, calib.n_laser_points, streams[2],
                                               T["laser"])
    joint, Xj = observe_n(cfg, truth, calib.n_joint_points, streams[3], True,
                          lambda k: sample_volume(bounds, k, streams[3]), T["joint"])
    test, Xt = observe_n(cfg, truth, calib.n_test_points, streams[4], True,
                         lambda k: sample_volume(bounds, k, streams[4]), T["test"])
    meas = Measurements(design, x_design.copy(), cam, las, boards, joint, test)
    return meas, TruthRecord(truth, {"camera": Xc, "laser": Xl, "joint": Xj, "test": Xt})


@dataclass(frozen=True)
class MethodOutput:
    x: np.ndarray                       # calibrated parameters
    u: dict[str, np.ndarray]            # extracted pixels per stripe tier (NaN where none)
    ok: dict[str, np.ndarray]           # extraction succeeded, per stripe tier
    test_points: np.ndarray             # reconstructed test points (NaN where extraction failed)
    x_staged: np.ndarray | None
    residuals: dict[str, np.ndarray]    # per tier at the final parameters (px, mm, mm)
    info: dict[str, float]


def stripe_pixels(shots: Shots, calib: CalibConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the stripe: extracted from the patches, or as recorded (no images)."""
    if shots.images is None:
        return shots.u, np.ones(len(shots), dtype=bool)
    col, ok = extract(shots.images, calib.extractor_config())
    return np.stack([col + shots.col0, shots.row], axis=1), ok


def calibrate_from_measurements(meas: Measurements, calib: CalibConfig) -> MethodOutput:
    """The method: extract stripes, run the calibration tiers, reconstruct the test points.
    Reads `meas` only (pixels and nominal values)."""
    design, x0 = meas.design, meas.x_design
    u, ok = {}, {}
    for tier in ("laser", "joint", "test"):
        u[tier], ok[tier] = stripe_pixels(getattr(meas, tier), calib)
    cam, las, joint = meas.cam, meas.laser.take(ok["laser"]), meas.joint.take(ok["joint"])
    ul, uj = u["laser"][ok["laser"]], u["joint"][ok["joint"]]
    prior = (x0, g3.prior_scale(design, x0), calib.prior_weight) if calib.prior_weight > 0 else None
    x, wall, nfev, x_staged, info = x0, 0.0, 0, None, {}
    if calib.tiers in ("all", "staged"):
        r1 = g3.calibrate_camera(design, x, cam.X_ref, cam.u, cam.v_cam, calib.max_nfev, prior)
        r2 = g3.calibrate_laser(design, r1.x, ul, las.v_cam, las.v_laser, meas.boards[ok["laser"]],
                                calib.max_nfev, prior)
        x, wall, nfev = r2.x, r1.wall_s + r2.wall_s, r1.nfev + r2.nfev
        x_staged = x
        info["reproj_rms_px"] = float(np.sqrt(2 * r1.cost / (2 * len(cam.u))))
    if calib.tiers in ("all", "joint"):
        stack = None
        if calib.joint_mode == "stacked":
            stack = g3.TierData(cam.X_ref, cam.u, cam.v_cam, ul, las.v_cam, las.v_laser,
                                meas.boards[ok["laser"]], calib.corner_sigma_px, calib.ref_sigma_mm)
        r3 = g3.calibrate_joint(design, x, uj, joint.v_cam, joint.v_laser, joint.X_ref,
                                calib.max_nfev, prior, stack=stack)
        x, wall, nfev = r3.x, wall + r3.wall_s, nfev + r3.nfev
        info["joint_wall_s"], info["joint_nfev"] = r3.wall_s, r3.nfev
    info.update(calib_wall_s=wall, calib_nfev=nfev)
    p = g3.decode(design, x)
    test = meas.test
    pts = np.full((len(test), 3), np.nan)
    pts[ok["test"]] = g3.triangulate(p, u["test"][ok["test"]], test.v_cam[ok["test"]],
                                     test.v_laser[ok["test"]])
    res = {"camera_px": g3.project(p, cam.X_ref, cam.v_cam) - cam.u,
           "laser_mm": g3.laser_residuals(p, ul, las.v_cam, las.v_laser, meas.boards[ok["laser"]]),
           "joint_mm": g3.triangulate(p, uj, joint.v_cam, joint.v_laser) - joint.X_ref}
    return MethodOutput(x, u, ok, pts, x_staged, res, info)


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))


def true_parameter_points(rec: TruthRecord, shots: Shots, u: np.ndarray, tier: str) -> np.ndarray:
    """The oracle: the true rig (its offsets, nonlinearity and drift known) on the same pixels."""
    tr, t = rec.truth, TIER_TIME[tier]
    return g3.triangulate(tr.p, u, tr.eff_cam(shots.v_cam, t), tr.eff_laser(shots.v_laser, t))


def point_errors(meas: Measurements, rec: TruthRecord,
                out: MethodOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per extracted test point: true position, calibrated error and floor error (mm)."""
    ok, X = out.ok["test"], rec.X["test"][out.ok["test"]]
    err = np.linalg.norm(out.test_points[ok] - X, axis=1)
    floor = true_parameter_points(rec, meas.test.take(ok), out.u["test"][ok], "test")
    return X, err, np.linalg.norm(floor - X, axis=1)


def score(meas: Measurements, rec: TruthRecord, out: MethodOutput) -> dict[str, Any]:
    """Reconstruction error on the test points, beside the floor (true rig, same extracted pixels)."""
    ok, X = out.ok["test"], rec.X["test"]
    shots, u = meas.test.take(ok), out.u["test"][ok]
    _, err, floor = point_errors(meas, rec, out)

    def rec_err(x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(g3.triangulate(g3.decode(meas.design, x), u, shots.v_cam, shots.v_laser)
                              - X[ok], axis=1)

    stripe = []   # extracted − true stripe column (≈: the true column uses read-back voltages)
    for t in ("laser", "joint", "test"):
        k = out.ok[t]
        v = rec.truth.eff_cam(getattr(meas, t).v_cam[k], TIER_TIME[t])
        stripe.append(out.u[t][k][:, 0] - g3.project(rec.truth.p, rec.X[t][k], v)[:, 0])
    span = X.max(axis=0) - X.min(axis=0)
    joint_train = np.linalg.norm(out.residuals["joint_mm"], axis=1)
    o: dict[str, Any] = {
        "rmse_true_params_mm": _rmse(floor), "rmse_design_mm": _rmse(rec_err(meas.x_design)),
        "rmse_mm": _rmse(err), "max_err_mm": float(err.max()),
        "extract_fail_frac": float(1.0 - np.mean(np.concatenate(list(out.ok.values())))),
        "stripe_err_px": _rmse(np.concatenate(stripe)), "joint_train_rmse_mm": _rmse(joint_train),
        "intrinsics_err_px": float(np.abs(out.x[:4] - rec.truth.x[:4]).max()),
        "span_x_mm": float(span[0]), "span_y_mm": float(span[1]), "span_z_mm": float(span[2]),
        "max_depth_mm": float(X[:, 2].max()), "n_params": meas.design.n_params}
    if out.x_staged is not None:
        o["rmse_staged_mm"] = _rmse(rec_err(out.x_staged))
    o.update(out.info)
    return o


def run_scanner(cfg: ScannerRigConfig, calib: CalibConfig, seed: int, static: bool) -> dict[str, Any]:
    """Build one rig (galvo or static camera), record, calibrate from the records, score."""
    meas, rec = simulate_session(cfg, calib, seed, static)
    return score(meas, rec, calibrate_from_measurements(meas, calib))


def evaluate_scanner(rig_config: ScannerRigConfig | dict | None = None,
                     calib_config: CalibConfig | dict | None = None, seed: int = 0) -> dict[str, Any]:
    """Single pure entry point: the galvo scanner's calibrated accuracy and the static baseline's."""
    cfg = _build(ScannerRigConfig, rig_config)
    calib = _build(CalibConfig, calib_config)
    out = run_scanner(cfg, calib, seed, static=False)
    if calib.static_baseline:
        base = run_scanner(cfg, calib, seed, static=True)
        out.update({f"static_{k}": v for k, v in base.items() if k.startswith(("rmse", "max_err"))})
        out["static_rmse_ratio"] = base["rmse_mm"] / out["rmse_mm"]
    out["seed"] = seed
    return out


#: The results a farm trial averages over its as-built rigs (`RigSpec.metrics`).
SCANNER_TRIAL_METRICS = ("rmse_mm", "max_err_mm", "calib_wall_s", "calib_nfev", "rmse_staged_mm",
                         "rmse_true_params_mm", "rmse_design_mm", "joint_wall_s", "static_rmse_mm",
                         "static_max_err_mm", "static_rmse_ratio", "span_x_mm", "span_y_mm", "span_z_mm",
                         "stripe_err_px", "extract_fail_frac", "joint_train_rmse_mm")
SCANNER_METHOD = "calib"


def scanner_method_config(method: str) -> type:
    """The scanner runs one method, "calib" (methods/galvo3d.py's tiers), configured by `CalibConfig`."""
    if method != SCANNER_METHOD:
        raise UnknownNameError(
            f"Unknown scanner method {method!r}. The scanner rig runs one method, {SCANNER_METHOD!r} "
            "(the camera → laser → joint calibration of methods/galvo3d.py, configured by CalibConfig)."
        )
    return CalibConfig


def evaluate_scanner_method(rig_config: ScannerRigConfig | dict | None, method: str,
                            method_config: CalibConfig | dict | None = None, seed: int = 0) -> dict[str, Any]:
    """`evaluate_scanner` in the signature every rig shares (`sims.rigs.RigSpec.evaluate`)."""
    scanner_method_config(method)
    return evaluate_scanner(rig_config, method_config, seed)


def _build(cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        from dataclasses import fields

        from methods.errors import did_you_mean
        valid = {f.name for f in fields(cls)}
        bad = [k for k in value if k not in valid]
        if bad:
            raise ConfigError(f"Unknown {cls.__name__} key {bad[0]!r}. {did_you_mean(bad[0], valid)}")
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return replace(cls(), **vals)
    raise ConfigError(f"Expected a {cls.__name__}, a dict of overrides or None; "
                      f"received {type(value).__name__}.")
