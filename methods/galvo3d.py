"""Multi-galvanometer light-section 3D: geometric model, reconstruction, three-tier calibration.

Paper: "A Novel Dynamic Light-Section 3D Reconstruction Method for Wide-Range Sensing",
Chen, Li, Shimasaki, Hu, Gu, Ishii; arXiv 2403.01374 (Sensors 2024, 24(12):3793).
No official code exists; only the abstract and section list were readable (systems.md §5).

Follows the paper: a "dynamic camera" (pinhole camera looking through two galvo mirrors), a
"dynamic laser" (line laser swept by its own galvo mirror), and a three-tier calibration —
camera tier, laser tier and a joint tier that minimises 3D error.
Our design [inferred, after systems.md §5.2]:
- mirror j rotates about axis a_j through point p_j; its normal is n_j(V) = R(a_j, k_j V) n_j0
  (Rodrigues), plane n·x = n·p; reflection is the Householder map x ↦ (I − 2nnᵀ)x + 2hn;
- a world point X is seen at π(H_1 H_2 X) (mirror 2 is the last one on the camera's way out);
  a pixel's world ray is traced outwards through mirror 1 then 2; radial distortion k1, k2;
- the laser sheet (n_L, d_L) after its mirror is n' = (I − 2nnᵀ)n_L, d' = d_L − 2h(n_L·n);
  a point is the camera ray ∩ laser plane;
- parameterisation (30 with two camera mirrors): fx, fy, cx, cy, k1, k2; per mirror 7 values —
  axis tilt (2), axis-line shift (2, perpendicular to the design axis), zero-voltage normal tilt
  (2) and gain k (rad/V); laser plane tilt (2) and offset (1). Directions are tilted about design
  vectors, so the design is the zero vector of the tilts. Compared with §5.2's 34 values, the
  axis point's position along the axis and a separate angle offset b are dropped: they are gauge
  freedoms (n0 absorbs b), which would make the least-squares Jacobian singular.
- `Mirror.offset` (the mirror surface sitting e mm off the rotation axis: plane n·x = n·p + e,
  systems.md §5.2's e_j) exists for the simulated truth only; `decode` keeps it 0, so the fitted
  model lacks it [inferred];
- joint tier [ours]: with `stack` (`TierData`) it keeps the camera- and laser-tier residuals in
  its objective, each whitened by its expected noise — a bundle adjustment over all calibration
  data. The 3D-only joint tier (the paper's description) fits 30 parameters to its own ~150
  points; measured in sweeps/bench_galvo3d.py (3 seeds): started at the true parameters it ends
  at the same optimum (no local minimum), its train/test RMSE ratio 0.84 matches the
  least-squares over-fit prediction √((n−p)/(n+p)) = 0.82 (variance, not a bug), and its scaled
  Jacobian is ≈ 9× worse conditioned than the stacked one's. Without model mismatch the stacked
  tier is 0.019 mm [0.006, 0.031] better, 3 of 3 seeds; with 600 joint points the 3D-only tier
  gains 0.040 mm [0.009, 0.072].
All functions are vectorised over points; residuals for `least_squares` are whole arrays.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import least_squares
from threadpoolctl import threadpool_limits

from methods.errors import ConfigError

INTRINSICS = ("fx", "fy", "cx", "cy", "k1", "k2")
MIRROR_FIELDS = ("axis_a", "axis_b", "shift_a", "shift_b", "normal_a", "normal_b", "gain")
LASER_FIELDS = ("plane_a", "plane_b", "plane_d")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt((v * v).sum(axis=-1, keepdims=True))


def _cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross's overhead dominates inside least squares)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


@lru_cache(maxsize=64)
def _basis_of(v: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u = _unit(np.asarray(v, dtype=float))
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _unit(_cross3(u, helper))
    return u, e1, _cross3(u, e1)


def _tilt(v: tuple[float, float, float], a: float, b: float) -> np.ndarray:
    """Design direction `v` tilted by (a, b) along its fixed orthogonal basis."""
    u, e1, e2 = _basis_of(v)
    return _unit(u + a * e1 + b * e2)


@dataclass(frozen=True)
class MirrorDesign:
    """Design (nominal) mirror: rotation axis direction, a point on the axis, normal at 0 V."""

    axis: tuple[float, float, float]
    point: tuple[float, float, float]
    normal: tuple[float, float, float]


@dataclass(frozen=True)
class ScannerDesign:
    """Nominal geometry the parameter vector is measured against (mm, camera frame = world).

    `cam_mirrors` is empty for a static camera (the baseline)."""

    cam_mirrors: tuple[MirrorDesign, ...]
    laser_mirror: MirrorDesign
    laser_normal: tuple[float, float, float]
    laser_d: float

    @property
    def n_params(self) -> int:
        return len(INTRINSICS) + len(MIRROR_FIELDS) * (len(self.cam_mirrors) + 1) + len(LASER_FIELDS)

    def names(self) -> list[str]:
        out = list(INTRINSICS)
        for j in range(len(self.cam_mirrors)):
            out += [f"m{j + 1}.{f}" for f in MIRROR_FIELDS]
        out += [f"mL.{f}" for f in MIRROR_FIELDS] + list(LASER_FIELDS)
        return out

    def index(self, group: str) -> np.ndarray:
        """Indices of a parameter group: 'camera' (intrinsics + camera mirrors), 'laser', 'all'."""
        n_cam = len(INTRINSICS) + len(MIRROR_FIELDS) * len(self.cam_mirrors)
        if group == "camera":
            return np.arange(n_cam)
        if group == "laser":
            return np.arange(n_cam, self.n_params)
        if group == "all":
            return np.arange(self.n_params)
        raise ConfigError(f"Parameter group must be 'camera', 'laser' or 'all'; received {group!r}.")


@dataclass(frozen=True)
class Mirror:
    axis: np.ndarray
    point: np.ndarray
    normal0: np.ndarray
    gain: float
    offset: float = 0.0     # mirror surface ↔ rotation axis (mm, along the normal); the model keeps 0


@dataclass(frozen=True)
class Decoded:
    K: np.ndarray           # fx, fy, cx, cy
    dist: np.ndarray        # k1, k2
    cam_mirrors: tuple[Mirror, ...]
    laser_mirror: Mirror
    laser_n: np.ndarray
    laser_d: float


def _decode_mirror(d: MirrorDesign, q: np.ndarray) -> Mirror:
    axis = _tilt(d.axis, q[0], q[1])
    _, e1, e2 = _basis_of(d.axis)
    point = np.asarray(d.point, dtype=float) + q[2] * e1 + q[3] * e2
    normal = _tilt(d.normal, q[4], q[5])
    return Mirror(axis, point, normal, float(q[6]))


def decode(design: ScannerDesign, x: np.ndarray) -> Decoded:
    x = np.asarray(x, dtype=float)
    if x.shape != (design.n_params,):
        raise ConfigError(f"Parameter vector must have shape ({design.n_params},) for this design; "
                          f"received {x.shape}. Build it with the design's names().")
    m = len(MIRROR_FIELDS)
    cams = tuple(_decode_mirror(d, x[6 + m * j: 6 + m * (j + 1)]) for j, d in enumerate(design.cam_mirrors))
    o = 6 + m * len(design.cam_mirrors)
    laser_mirror = _decode_mirror(design.laser_mirror, x[o: o + m])
    a, b, dd = x[o + m: o + m + 3]
    n_l = _tilt(design.laser_normal, a, b)
    return Decoded(x[0:4], x[4:6], cams, laser_mirror, n_l, float(design.laser_d + dd))


# ----------------------------------------------------------------------------- primitives
def householder(n: np.ndarray, h: float) -> np.ndarray:
    """4×4 reflection in the plane nᵀx = h (unit n): an involution with determinant −1."""
    n = _unit(np.asarray(n, dtype=float))
    out = np.eye(4)
    out[:3, :3] -= 2.0 * np.outer(n, n)
    out[:3, 3] = 2.0 * h * n
    return out


def rodrigues(axis: np.ndarray, v: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate vector v (3,) about unit `axis` by angles theta (N,) → (N, 3)."""
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    return v * c + _cross3(axis, v) * s + axis * (axis @ v) * (1.0 - c)


def mirror_planes(m: Mirror, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (N, 3) and offsets h (N,) of the mirror plane at each drive voltage."""
    n = rodrigues(m.axis, m.normal0, m.gain * np.asarray(volts, dtype=float))
    return n, n @ m.point + m.offset


def reflect_points(x: np.ndarray, n: np.ndarray, h: np.ndarray) -> np.ndarray:
    return x - 2.0 * ((x * n).sum(axis=1) - h)[:, None] * n


def reflect_dirs(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    return d - 2.0 * (d * n).sum(axis=1)[:, None] * n


def distort(xn: np.ndarray, dist: np.ndarray) -> np.ndarray:
    r2 = (xn ** 2).sum(axis=1, keepdims=True)
    return xn * (1.0 + dist[0] * r2 + dist[1] * r2 ** 2)


def undistort(xd: np.ndarray, dist: np.ndarray, iters: int = 50, tol: float = 1e-15) -> np.ndarray:
    """Invert radial distortion by fixed-point iteration (contracts fast for |k1 r²| ≪ 1);
    stops once no coordinate moves by more than `tol`."""
    xn = xd.copy()
    for _ in range(iters):
        r2 = (xn ** 2).sum(axis=1, keepdims=True)
        nxt = xd / (1.0 + dist[0] * r2 + dist[1] * r2 ** 2)
        done = np.abs(nxt - xn).max(initial=0.0) <= tol
        xn = nxt
        if done:
            break
    return xn


# ----------------------------------------------------------------------------- model
def project(p: Decoded, X: np.ndarray, v_cam: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of world points X (N, 3) with camera-mirror voltages v_cam (N, n_mirrors)."""
    Y = np.asarray(X, dtype=float)
    for j in reversed(range(len(p.cam_mirrors))):
        n, h = mirror_planes(p.cam_mirrors[j], v_cam[:, j])
        Y = reflect_points(Y, n, h)
    xd = distort(Y[:, :2] / Y[:, 2:3], p.dist)
    return np.stack([p.K[0] * xd[:, 0] + p.K[2], p.K[1] * xd[:, 1] + p.K[3]], axis=1)


def camera_rays(p: Decoded, u: np.ndarray, v_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rays (origins, unit directions) of pixels u (N, 2), traced out through the mirrors."""
    xd = np.stack([(u[:, 0] - p.K[2]) / p.K[0], (u[:, 1] - p.K[3]) / p.K[1]], axis=1)
    xn = undistort(xd, p.dist)
    d = _unit(np.concatenate([xn, np.ones((len(u), 1))], axis=1))
    o = np.zeros_like(d)
    for j, m in enumerate(p.cam_mirrors):
        n, h = mirror_planes(m, v_cam[:, j])
        t = (h - (o * n).sum(axis=1)) / (d * n).sum(axis=1)
        o = o + t[:, None] * d
        d = reflect_dirs(d, n)
    return o, d


def laser_planes(p: Decoded, v_laser: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Laser sheet after its mirror at each voltage: normals (N, 3), offsets (N,)."""
    n, h = mirror_planes(p.laser_mirror, v_laser)
    nl = p.laser_n[None, :] - 2.0 * (n @ p.laser_n)[:, None] * n
    return nl, p.laser_d - 2.0 * h * (n @ p.laser_n)


def intersect_plane(o: np.ndarray, d: np.ndarray, n: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Points where rays o + t d meet planes nᵀx = c."""
    t = (c - (n * o).sum(axis=1)) / (n * d).sum(axis=1)
    return o + t[:, None] * d


def triangulate(p: Decoded, u: np.ndarray, v_cam: np.ndarray, v_laser: np.ndarray) -> np.ndarray:
    """Stripe pixel + drive voltages → 3D point (camera ray ∩ reflected laser plane)."""
    o, d = camera_rays(p, u, v_cam)
    n, c = laser_planes(p, v_laser)
    return intersect_plane(o, d, n, c)


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class FitResult:
    x: np.ndarray
    cost: float
    nfev: int
    wall_s: float


def prior_scale(design: ScannerDesign, x_design: np.ndarray, tol_px: float = 20.0,
                tol_rad: float = 0.01, tol_mm: float = 1.0, tol_gain: float = 0.02,
                tol_dist: float = 0.1) -> np.ndarray:
    """Per-parameter manufacturing tolerance, used to scale the weak prior of `_fit`."""
    scale = np.empty(design.n_params)
    scale[:4], scale[4:6] = tol_px, tol_dist
    m = len(MIRROR_FIELDS)
    for j in range(len(design.cam_mirrors) + 1):
        o = 6 + m * j
        scale[o:o + 2], scale[o + 2:o + 4], scale[o + 4:o + 6] = tol_rad, tol_mm, tol_rad
        scale[o + 6] = tol_gain * abs(x_design[o + 6])
    scale[-3:-1], scale[-1] = tol_rad, tol_mm
    return scale


def _fit(fun, x0: np.ndarray, free: np.ndarray, max_nfev: int, prior: tuple | None) -> FitResult:
    """least_squares over the `free` entries of x0; residuals are whole vectorised arrays.

    `prior = (x_design, scale, weight)` appends weight·(x − x_design)/scale to the residuals
    [inferred]: a weak tolerance prior. Some directions of the 30 parameters are only
    second-order observable (e.g. turning the laser sheet about the mirror axis vs. turning the
    mirror's zero normal); without the prior trust-region steps crawl along them for hundreds
    of iterations, with it the fit converges in tens."""
    def full(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[free] = z
        return x

    if prior is None:
        resid = lambda z: fun(full(z))  # noqa: E731
    else:
        x_ref, scale, weight = prior
        resid = lambda z: np.concatenate([fun(full(z)), weight * (z - x_ref[free]) / scale[free]])  # noqa: E731
    t0 = time.perf_counter()
    # One BLAS thread: the SVDs here are tiny (≈ 450 × 30) and a multi-threaded BLAS on a busy
    # machine made each one take ~0.5 s instead of ~0.1 ms.
    with threadpool_limits(limits=1):
        res = least_squares(resid, x0[free], method="trf", jac="2-point", x_scale="jac",
                            max_nfev=max_nfev, xtol=1e-10, ftol=1e-12, gtol=1e-12)
    return FitResult(full(res.x), float(res.cost), int(res.nfev), time.perf_counter() - t0)


def calibrate_camera(design: ScannerDesign, x0: np.ndarray, X: np.ndarray, u: np.ndarray,
                     v_cam: np.ndarray, max_nfev: int = 200, prior: tuple | None = None) -> FitResult:
    """Tier 1: reprojection error of known target points seen at many mirror settings."""
    def resid(x):
        return (project(decode(design, x), X, v_cam) - u).ravel()
    return _fit(resid, np.asarray(x0, dtype=float), design.index("camera"), max_nfev, prior)


def _board_points(p: Decoded, u: np.ndarray, v_cam: np.ndarray, boards: np.ndarray) -> np.ndarray:
    o, d = camera_rays(p, u, v_cam)
    return intersect_plane(o, d, boards[:, :3], boards[:, 3])


def laser_residuals(p: Decoded, u: np.ndarray, v_cam: np.ndarray, v_laser: np.ndarray,
                    boards: np.ndarray) -> np.ndarray:
    """Distance (mm) of stripe points, back-projected onto their board, to the laser plane."""
    pts = _board_points(p, u, v_cam, boards)
    n, c = laser_planes(p, v_laser)
    return (n * pts).sum(axis=1) - c


def calibrate_laser(design: ScannerDesign, x0: np.ndarray, u: np.ndarray, v_cam: np.ndarray,
                    v_laser: np.ndarray, boards: np.ndarray, max_nfev: int = 200,
                    prior: tuple | None = None) -> FitResult:
    """Tier 2: stripe pixels on boards of known planes `boards` (N, 4: n, c). The stripe points
    are back-projected with the tier-1 camera (fixed) onto their board; the laser parameters
    minimise those points' distance (mm) to the laser plane."""
    pts = _board_points(decode(design, x0), u, v_cam, boards)

    def resid(x):
        n, c = laser_planes(decode(design, x), v_laser)
        return (n * pts).sum(axis=1) - c
    return _fit(resid, np.asarray(x0, dtype=float), design.index("laser"), max_nfev, prior)


@dataclass(frozen=True)
class TierData:
    """The camera- and laser-tier data, for a joint tier that keeps them in its objective.

    Residuals are whitened by their expected noise: corners by `corner_sigma_px`, 3D points by
    `ref_sigma_mm` (the joint points' error: stripe noise seen in 3D plus survey noise)."""

    cam_X: np.ndarray
    cam_u: np.ndarray
    cam_v: np.ndarray
    las_u: np.ndarray
    las_v_cam: np.ndarray
    las_v_laser: np.ndarray
    boards: np.ndarray
    corner_sigma_px: float
    point_sigma_mm: float


def calibrate_joint(design: ScannerDesign, x0: np.ndarray, u: np.ndarray, v_cam: np.ndarray,
                    v_laser: np.ndarray, X: np.ndarray, max_nfev: int = 300,
                    prior: tuple | None = None, stack: TierData | None = None) -> FitResult:
    """Tier 3: all parameters, minimising the 3D error of reconstructed known points (mm).

    With `stack` the camera-tier reprojection and laser-tier plane residuals stay in the
    objective (a bundle adjustment over all three data sets, each whitened by its noise) [ours];
    without it the joint tier sees only its own points, as the paper's Algorithm 1 is described."""
    if stack is None:
        def resid(x):
            return (triangulate(decode(design, x), u, v_cam, v_laser) - X).ravel()
    else:
        s = stack

        def resid(x):
            p = decode(design, x)
            return np.concatenate([
                (triangulate(p, u, v_cam, v_laser) - X).ravel() / s.point_sigma_mm,
                (project(p, s.cam_X, s.cam_v) - s.cam_u).ravel() / s.corner_sigma_px,
                laser_residuals(p, s.las_u, s.las_v_cam, s.las_v_laser, s.boards) / s.point_sigma_mm])
    return _fit(resid, np.asarray(x0, dtype=float), design.index("all"), max_nfev, prior)
