"""Chebyshev route planner (methods/route.py)."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.route import (
    ROUTE_PLANNERS,
    chebyshev_matrix,
    nearest_neighbour,
    plan_route,
    tour_length,
    two_opt,
)


def test_chebyshev_distance_is_the_longer_axis():
    d = chebyshev_matrix(np.array([[0.0, 0.0]]), np.array([[3.0, -1.0], [0.5, 2.0]]))
    assert np.allclose(d, [[3.0, 2.0]])


def test_tour_length_by_hand():
    pts = np.array([[1.0, 0.0], [1.0, 2.0], [4.0, 2.5]])
    # start (0,0) → (1,0): 1; → (1,2): 2; → (4,2.5): 3   (open path, no return edge)
    assert tour_length(pts, np.array([0, 1, 2])) == pytest.approx(6.0)
    assert tour_length(pts, np.array([2, 1, 0]), start=np.array([4.0, 2.5])) == pytest.approx(5.0)


@pytest.mark.parametrize("planner", ["identity", "nn", "nn2opt"])
def test_every_planner_returns_a_permutation(planner):
    pts = np.random.default_rng(0).uniform(-5, 5, (60, 2))
    order = plan_route(pts, np.array([1.0, -2.0]), planner)
    assert sorted(order.tolist()) == list(range(60))     # each shot exactly once


@pytest.mark.parametrize("seed", range(5))
def test_two_opt_never_loses_to_nearest_neighbour(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-5, 5, (80, 2))
    start = rng.uniform(-5, 5, 2)
    nn = nearest_neighbour(pts, start)
    opt = two_opt(pts, nn, start)
    assert sorted(opt.tolist()) == list(range(80))
    assert tour_length(pts, opt, start) <= tour_length(pts, nn, start) + 1e-12
    assert tour_length(pts, nn, start) < tour_length(pts, np.arange(80), start)


def test_two_opt_strictly_improves_a_crossed_path():
    pts = np.array([[1.0, 0.0], [9.0, 2.0], [9.0, 0.0], [1.0, 2.0]])   # 1+8+2+8 = 19 vs 13
    crossed = np.array([0, 1, 2, 3])
    fixed = two_opt(pts, crossed, np.zeros(2))
    assert tour_length(pts, crossed) == pytest.approx(19.0)
    assert tour_length(pts, fixed) == pytest.approx(13.0)


def test_empty_and_bad_input():
    assert plan_route(np.zeros((0, 2))).shape == (0,)
    with pytest.raises(ConfigError, match=r"\(N, 2\)"):
        plan_route(np.zeros((3, 3)))
    with pytest.raises(UnknownNameError, match="nn2opt"):
        plan_route(np.zeros((3, 2)), planner="nn2op")
    assert set(ROUTE_PLANNERS.names()) == {"identity", "nn", "nn2opt"}
