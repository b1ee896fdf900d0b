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
- stripe detection: per image row the stripe column is found with Gaussian sub-pixel noise
  (`stripe_noise_px`); checkerboard corners get the same noise on both axes; drive voltages are
  read back with `drive_noise_v` noise;
- calibration targets: surveyed boards for the camera tier, plain boards of known pose for the
  laser tier, and known 3D points (a "CMM-measured" set) for the joint tier; a fresh set of
  points in the volume is the test set;
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

    def __post_init__(self) -> None:
        _require(self.version == 1, f"ScannerRigConfig version must be 1; received {self.version}.")
        for name in ("f_px", "mirror_gap_mm", "laser_baseline_mm", "cam_deg_per_v", "laser_deg_per_v",
                     "cam_v_range", "laser_v_range", "z_near_mm", "static_focal_ratio"):
            _require(getattr(self, name) > 0, f"{name} must be > 0; received {getattr(self, name)}.")
        for name in ("stripe_noise_px", "drive_noise_v", "intr_sigma_px", "angle_sigma_rad",
                     "point_sigma_mm", "gain_rel_sigma"):
            _require(getattr(self, name) >= 0, f"{name} must be ≥ 0; received {getattr(self, name)}.")
        _require(len(self.volume_mm) == 3 and min(self.volume_mm) > 0,
                 f"volume_mm must be three positive spans (x, y, z) in mm; received {self.volume_mm}.")
        _require(self.sensor_px >= 64, f"sensor_px must be ≥ 64; received {self.sensor_px}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"stripe_noise_px": ("float", 0.02, 0.5), "drive_noise_v": ("float", 0.0, 1e-3),
                "laser_baseline_mm": ("float", 150.0, 500.0)}


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"n_joint_points": ("categorical", [40, 80, 150, 300]),
                "n_camera_points": ("categorical", [50, 100, 200]),
                "tiers": ("categorical", ["all", "staged", "joint"])}


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


# ----------------------------------------------------------------------------- observation
def aim_camera(cfg: ScannerRigConfig, p: g3.Decoded, X: np.ndarray, rng: np.random.Generator,
               tries: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Pick camera-mirror voltages that put each point inside the image (10 % margin).

    Returns (voltages (N, n_mirrors), ok (N,) bool). A static camera needs no voltages."""
    n, k = len(X), len(p.cam_mirrors)
    lo, hi = 0.1 * cfg.sensor_px, 0.9 * cfg.sensor_px
    if k == 0:
        u = g3.project(p, X, np.zeros((n, 0)))
        return np.zeros((n, 0)), np.all((u > lo) & (u < hi), axis=1)
    cand = rng.uniform(-cfg.cam_v_range, cfg.cam_v_range, (n, tries, k))
    u = g3.project(p, np.repeat(X, tries, axis=0), cand.reshape(-1, k)).reshape(n, tries, 2)
    good = np.all((u > lo) & (u < hi), axis=2)
    first = np.argmax(good, axis=1)
    return cand[np.arange(n), first], good.any(axis=1)


def solve_laser_voltage(cfg: ScannerRigConfig, p: g3.Decoded,
                        X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Laser drive voltage whose sheet passes through each X (Newton, vectorised)."""
    v = np.zeros(len(X))
    eps = 1e-6
    for _ in range(40):
        n, c = g3.laser_planes(p, v)
        f = (n * X).sum(axis=1) - c
        n2, c2 = g3.laser_planes(p, v + eps)
        df = ((n2 * X).sum(axis=1) - c2 - f) / eps
        v = np.clip(v - f / df, -2 * cfg.laser_v_range, 2 * cfg.laser_v_range)
    n, c = g3.laser_planes(p, v)
    ok = (np.abs((n * X).sum(axis=1) - c) < 1e-7) & (np.abs(v) <= cfg.laser_v_range)
    return v, ok


@dataclass(frozen=True)
class Observations:
    """What the rig records: pixels, read-back drive voltages, and the surveyed truth."""

    u: np.ndarray
    v_cam: np.ndarray
    v_laser: np.ndarray
    X: np.ndarray

    def take(self, n: int) -> Observations:
        return Observations(self.u[:n], self.v_cam[:n], self.v_laser[:n], self.X[:n])

    @staticmethod
    def concat(parts: list[Observations]) -> Observations:
        return Observations(*(np.concatenate([getattr(o, f) for o in parts])
                              for f in ("u", "v_cam", "v_laser", "X")))


def observe(cfg: ScannerRigConfig, p: g3.Decoded, X: np.ndarray, rng: np.random.Generator,
            laser: bool, noise: bool = True) -> Observations:
    """Aim, (optionally) solve the laser, project; keeps only the points the rig can measure."""
    v_cam, ok = aim_camera(cfg, p, X, rng)
    v_l = np.zeros(len(X))
    if laser:
        v_l, ok_l = solve_laser_voltage(cfg, p, X)
        ok &= ok_l
    X, v_cam, v_l = X[ok], v_cam[ok], v_l[ok]
    u = g3.project(p, X, v_cam)
    if noise:
        if laser:   # stripe: sub-pixel column per image row
            u[:, 0] += rng.normal(0.0, cfg.stripe_noise_px, len(u))
        else:       # board corners: both axes
            u += rng.normal(0.0, cfg.stripe_noise_px, u.shape)
        v_cam = v_cam + rng.normal(0.0, cfg.drive_noise_v, v_cam.shape)
        v_l = v_l + rng.normal(0.0, cfg.drive_noise_v, v_l.shape)
    return Observations(u, v_cam, v_l, X)


def sample_volume(bounds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * rng.uniform(size=(n, 3))


def observe_n(cfg, p, n: int, rng, laser: bool, sampler, noise: bool = True) -> Observations:
    """Draw candidate points until `n` of them are measurable (over-sampling ×2 per pass)."""
    parts, have = [], 0
    for _ in range(20):
        obs = observe(cfg, p, sampler(2 * (n - have) + 8), rng, laser, noise)
        parts.append(obs)
        have += len(obs.X)
        if have >= n:
            break
    cat = Observations.concat(parts)
    if len(cat.X) < n:
        raise ConfigError(f"Only {len(cat.X)} of {n} points are measurable with this geometry; "
                          "widen the mirror voltage ranges or shrink volume_mm.")
    return cat.take(n)


def board_points(bounds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Surveyed target points on three boards (planes z = const) across the volume."""
    zs = np.linspace(bounds[0, 2], bounds[1, 2], 3)
    pts = sample_volume(bounds, n, rng)
    pts[:, 2] = zs[rng.integers(0, 3, n)]
    return pts


def laser_board_observations(cfg, p, bounds, n: int, rng) -> tuple[Observations, np.ndarray]:
    """Stripe points on three boards z = const of known pose; returns obs and board planes (N, 4)."""
    zs = np.linspace(bounds[0, 2], bounds[1, 2], 3)
    parts, have = [], 0
    for _ in range(20):
        m = 3 * (n - have) + 8
        v_l = rng.uniform(-cfg.laser_v_range, cfg.laser_v_range, m)
        z = zs[rng.integers(0, 3, m)]
        y = rng.uniform(bounds[0, 1], bounds[1, 1], m)
        nl, c = g3.laser_planes(p, v_l)
        x = (c - nl[:, 1] * y - nl[:, 2] * z) / nl[:, 0]
        X = np.stack([x, y, z], axis=1)
        X = X[(x > bounds[0, 0]) & (x < bounds[1, 0])]
        obs = observe(cfg, p, X, rng, laser=True)
        parts.append(obs)
        have += len(obs.X)
        if have >= n:
            break
    obs = Observations.concat(parts).take(n)
    boards = np.concatenate([np.tile([0.0, 0.0, 1.0], (len(obs.X), 1)), obs.X[:, 2:3]], axis=1)
    return obs, boards


# ----------------------------------------------------------------------------- evaluation
def reconstruction_errors(design, x: np.ndarray, obs: Observations) -> np.ndarray:
    est = g3.triangulate(g3.decode(design, x), obs.u, obs.v_cam, obs.v_laser)
    return np.linalg.norm(est - obs.X, axis=1)


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))


def run_scanner(cfg: ScannerRigConfig, calib: CalibConfig, seed: int, static: bool) -> dict[str, Any]:
    """Build one rig (galvo or static camera), calibrate it, and score it on test points."""
    design, x_design = make_design(cfg, static)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, int(static)]).spawn(5)]
    x_true = perturb(cfg, design, x_design, streams[0])
    p_true = g3.decode(design, x_true)
    bounds = volume_bounds(cfg, design)
    cam = observe_n(cfg, p_true, calib.n_camera_points, streams[1], False,
                    lambda k: board_points(bounds, k, streams[1]))
    las, boards = laser_board_observations(cfg, p_true, bounds, calib.n_laser_points, streams[2])
    joint = observe_n(cfg, p_true, calib.n_joint_points, streams[3], True,
                      lambda k: sample_volume(bounds, k, streams[3]))
    test = observe_n(cfg, p_true, calib.n_test_points, streams[4], True,
                     lambda k: sample_volume(bounds, k, streams[4]))

    out: dict[str, Any] = {"rmse_true_params_mm": _rmse(reconstruction_errors(design, x_true, test)),
                           "rmse_design_mm": _rmse(reconstruction_errors(design, x_design, test))}
    x, wall, nfev = x_design, 0.0, 0
    prior = None
    if calib.prior_weight > 0:
        prior = (x_design, g3.prior_scale(design, x_design), calib.prior_weight)
    if calib.tiers in ("all", "staged"):
        r1 = g3.calibrate_camera(design, x, cam.X, cam.u, cam.v_cam, calib.max_nfev, prior)
        r2 = g3.calibrate_laser(design, r1.x, las.u, las.v_cam, las.v_laser, boards, calib.max_nfev, prior)
        x, wall, nfev = r2.x, r1.wall_s + r2.wall_s, r1.nfev + r2.nfev
        out["rmse_staged_mm"] = _rmse(reconstruction_errors(design, x, test))
        out["reproj_rms_px"] = float(np.sqrt(2 * r1.cost / (2 * len(cam.u))))
    if calib.tiers in ("all", "joint"):
        r3 = g3.calibrate_joint(design, x, joint.u, joint.v_cam, joint.v_laser, joint.X,
                                calib.max_nfev, prior)
        x, wall, nfev = r3.x, wall + r3.wall_s, nfev + r3.nfev
        out["joint_wall_s"] = r3.wall_s
        out["joint_nfev"] = r3.nfev
    err = reconstruction_errors(design, x, test)
    span = test.X.max(axis=0) - test.X.min(axis=0)
    out.update(rmse_mm=_rmse(err), max_err_mm=float(err.max()), calib_wall_s=wall, calib_nfev=nfev,
               intrinsics_err_px=float(np.abs(x[:4] - x_true[:4]).max()),
               span_x_mm=float(span[0]), span_y_mm=float(span[1]), span_z_mm=float(span[2]),
               max_depth_mm=float(test.X[:, 2].max()), n_params=design.n_params)
    return out


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
                         "static_max_err_mm", "static_rmse_ratio", "span_x_mm", "span_y_mm", "span_z_mm")
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
