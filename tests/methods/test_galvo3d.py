"""Geometry and calibration of the multi-galvanometer light-section model (methods/galvo3d.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from methods import galvo3d as g3
from methods.errors import ConfigError
from sims.rigs import scanner_rig as sr


@pytest.fixture(scope="module")
def rig():
    cfg = sr.ScannerRigConfig()
    design, x_design = sr.make_design(cfg)
    rng = np.random.default_rng(1)
    x_true = sr.perturb(cfg, design, x_design, rng)
    truth = sr.Truth.ideal(design, x_true)
    bounds = sr.volume_bounds(cfg, design)
    return cfg, design, x_design, x_true, truth, bounds, rng


def _clean(cfg, truth, n, rng, bounds, laser=True):
    """Noise-free pixels of n measurable points: (u, v_cam, v_laser, X)."""
    where = sr.sample_volume if laser else sr.board_points
    sampler = lambda k: where(bounds, k, rng)  # noqa: E731
    shots, X = sr.observe_n(cfg, truth, n, rng, laser, sampler, 0.0, noise=False)
    return shots.u, shots.v_cam, shots.v_laser, X


def _errors(design, x, u, v_cam, v_laser, X):
    return np.linalg.norm(g3.triangulate(g3.decode(design, x), u, v_cam, v_laser) - X, axis=1)


def test_householder_is_an_involution_with_det_minus_one():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n, h = rng.normal(size=3), rng.normal() * 50
        H = g3.householder(n, h)
        assert np.allclose(H @ H, np.eye(4), atol=1e-12)
        assert np.isclose(np.linalg.det(H[:3, :3]), -1.0)
        nu = n / np.linalg.norm(n)
        on_plane = np.append(h * nu + np.cross(nu, rng.normal(size=3)), 1.0)
        assert np.allclose(H @ on_plane, on_plane, atol=1e-9)          # plane points are fixed
        assert np.allclose(H[:3, :3] @ nu, -nu)                         # the normal flips


def test_vectorised_reflection_matches_the_4x4_matrix():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(7, 3)) * 100
    n = rng.normal(size=3)
    n /= np.linalg.norm(n)
    H = g3.householder(n, 12.5)
    want = (H @ np.c_[X, np.ones(7)].T).T[:, :3]
    got = g3.reflect_points(X, np.tile(n, (7, 1)), np.full(7, 12.5))
    assert np.allclose(got, want, atol=1e-10)
    assert np.allclose(g3.reflect_points(got, np.tile(n, (7, 1)), np.full(7, 12.5)), X, atol=1e-10)


def test_rodrigues_keeps_length_and_turns_by_the_angle():
    axis = np.array([0.0, 0.0, 1.0])
    out = g3.rodrigues(axis, np.array([1.0, 0.0, 0.0]), np.array([0.0, np.pi / 2, 0.3]))
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert np.allclose(out[1], [0.0, 1.0, 0.0], atol=1e-12)
    assert np.isclose(out[2] @ [1.0, 0.0, 0.0], np.cos(0.3))


def test_undistort_inverts_distort():
    xn = np.random.default_rng(3).uniform(-0.3, 0.3, (50, 2))
    dist = np.array([-0.05, 0.02])
    assert np.abs(g3.undistort(g3.distort(xn, dist), dist) - xn).max() < 1e-14


def test_project_then_triangulate_recovers_points_without_noise(rig):
    cfg, design, _, _, truth, bounds, rng = rig
    u, v_cam, v_l, X0 = _clean(cfg, truth, 200, rng, bounds)
    p = truth.p
    X = g3.triangulate(p, u, v_cam, v_l)
    assert np.abs(X - X0).max() < 1e-9
    o, d = g3.camera_rays(p, u, v_cam)   # the traced ray passes through the point
    t = ((X0 - o) * d).sum(axis=1)
    assert np.abs(o + t[:, None] * d - X0).max() < 1e-9


def test_mirror_surface_offset_moves_the_plane_along_its_normal(rig):
    _, _, _, _, truth, *_ = rig
    m = truth.p.cam_mirrors[0]
    v = np.array([-3.0, 0.0, 2.0])
    n0, h0 = g3.mirror_planes(m, v)
    n1, h1 = g3.mirror_planes(replace(m, offset=1.5), v)
    assert np.allclose(n0, n1) and np.allclose(h1 - h0, 1.5)


def test_static_camera_round_trip():
    cfg = sr.ScannerRigConfig()
    design, x = sr.make_design(cfg, static=True)
    assert design.n_params == 6 + 7 + 3
    truth = sr.Truth.ideal(design, x)
    rng = np.random.default_rng(4)
    u, v_cam, v_l, X = _clean(cfg, truth, 50, rng, sr.volume_bounds(cfg, design))
    assert np.abs(g3.triangulate(truth.p, u, v_cam, v_l) - X).max() < 1e-9


def test_camera_tier_recovers_perturbed_parameters(rig):
    cfg, design, x_design, x_true, truth, bounds, rng = rig
    u, v_cam, _, X = _clean(cfg, truth, 80, rng, bounds, laser=False)
    res = g3.calibrate_camera(design, x_design, X, u, v_cam)
    idx = design.index("camera")
    assert np.abs(x_design[idx] - x_true[idx]).max() > 5        # the start really was off
    assert np.abs(res.x[idx] - x_true[idx]).max() < 1e-6


def test_laser_tier_recovers_the_swept_plane_family(rig):
    cfg, design, x_design, x_true, truth, bounds, rng = rig
    p = truth.p
    las, boards, X = sr.laser_board_observations(cfg, truth, bounds, 80, rng, 0.0, noise=False)
    assert np.allclose(boards[:, 3], X[:, 2]) and np.allclose(boards[:, 2], 1.0)
    x0 = x_design.copy()
    x0[design.index("camera")] = x_true[design.index("camera")]     # tier 1 already done
    prior = (x_design, g3.prior_scale(design, x_design), 1e-3)
    res = g3.calibrate_laser(design, x0, las.u, las.v_cam, las.v_laser, boards, prior=prior)
    assert np.abs(g3.laser_residuals(g3.decode(design, res.x), las.u, las.v_cam, las.v_laser,
                                     boards)).max() < 1e-4
    v = np.linspace(-8, 3, 20)
    n_est, c_est = g3.laser_planes(g3.decode(design, res.x), v)
    n_true, c_true = g3.laser_planes(p, v)
    n_start, c_start = g3.laser_planes(g3.decode(design, x0), v)
    assert np.abs(c_start - c_true).max() > 1.0
    assert np.abs(n_est - n_true).max() < 1e-6 and np.abs(c_est - c_true).max() < 1e-3


@pytest.mark.parametrize("stacked", [False, True])
def test_joint_tier_from_the_staged_start_reaches_micron_error_without_noise(rig, stacked):
    # From the design itself (≥ 50 mm off) the 3D-only joint tier did not converge within 100
    # evaluations in 3 of 5 draws (it crawls along weakly observable directions); the pipeline
    # starts it from the camera + laser tiers, as here.
    cfg, design, x_design, x_true, truth, _, _ = rig
    rng = np.random.default_rng(12)
    bounds = sr.volume_bounds(cfg, design)
    fit, test = _clean(cfg, truth, 60, rng, bounds), _clean(cfg, truth, 100, rng, bounds)
    cu, cv, _, cX = _clean(cfg, truth, 60, rng, bounds, laser=False)
    las, boards, _ = sr.laser_board_observations(cfg, truth, bounds, 60, rng, 0.0, noise=False)
    prior = (x_design, g3.prior_scale(design, x_design), 1e-3)
    x1 = g3.calibrate_camera(design, x_design, cX, cu, cv, 100, prior).x
    x2 = g3.calibrate_laser(design, x1, las.u, las.v_cam, las.v_laser, boards, 100, prior).x
    x_staged = x2 + 1e-3 * g3.prior_scale(design, x_design)     # knock it off the exact answer
    stack = g3.TierData(cX, cu, cv, las.u, las.v_cam, las.v_laser, boards, 0.1, 0.5) if stacked else None
    res = g3.calibrate_joint(design, x_staged, *fit, 100, prior, stack=stack)
    assert _errors(design, x_design, *test).max() > 50     # the design is ≥ 50 mm off
    assert _errors(design, x_staged, *test).max() > 1e-2
    assert _errors(design, res.x, *test).max() < 1e-3
    assert np.abs(res.x[:4] - x_true[:4]).max() < 1e-3


def test_decode_rejects_a_wrong_length_vector(rig):
    _, design, x_design, *_ = rig
    with pytest.raises(ConfigError, match="shape"):
        g3.decode(design, x_design[:-1])
    with pytest.raises(ConfigError, match="group"):
        design.index("mirrors")
    assert len(design.names()) == design.n_params == 30
