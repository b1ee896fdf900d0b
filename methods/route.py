"""Route planner for a 2-axis galvo shot list: Chebyshev distance, nearest neighbour + 2-opt.

Paper: "A Novel Wide-Area Multiobject Detection System with High-Probability Region Searching",
Long, Zhao, Chen, Gu, Gu; arXiv 2405.04589 (2024).

- From the authors' related C++ code (reference/systems.md §4.1, [code]): the shot list is an
  open travelling-salesman tour under the **Chebyshev** distance max(|ΔVx|, |ΔVy|), because both
  mirror axes move at the same time, so a move lasts as long as its longer axis. The authors use
  OR-tools with a 2-opt / sort fallback.
- Our design [inferred]: no solver dependency; a vectorised nearest-neighbour construction from
  the mirror's current position followed by first-improvement 2-opt on the *open* path (the
  mirror never returns to its start, so the closing edge is not counted).

Every planner returns a permutation of the shot indices (each shot visited exactly once).
Planners take no config: `ROUTE_PLANNERS.create(name)` is the planner function itself.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from methods.errors import ConfigError
from methods.registry import CONFIG_LESS, Registry


@runtime_checkable
class RoutePlanner(Protocol):
    """`planner(points (N, 2), start (2,) | None) -> order`, a permutation of 0..N-1."""

    def __call__(self, points: np.ndarray, start: np.ndarray | None = None) -> np.ndarray: ...


ROUTE_PLANNERS: Registry[RoutePlanner] = Registry("route planner", RoutePlanner, creator=CONFIG_LESS)


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ConfigError(
            f"Shot list must be an (N, 2) array of mirror voltages; received shape {pts.shape}. "
            "Pass one (Vx, Vy) row per shot."
        )
    return pts


def chebyshev_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Chebyshev distances max(|ΔVx|, |ΔVy|) between rows of `a` (N,2) and `b` (M,2)."""
    return np.abs(a[:, None, :] - b[None, :, :]).max(axis=-1)


def _with_start(points: np.ndarray, start: np.ndarray | None) -> np.ndarray:
    """Node 0 is the mirror's start position (the origin when none is given)."""
    start_pt = np.zeros(2) if start is None else np.asarray(start, dtype=float).reshape(2)
    return np.vstack([start_pt[None, :], points])


def tour_length(points: np.ndarray, order: np.ndarray, start: np.ndarray | None = None) -> float:
    """Total Chebyshev length of the open path start → points[order[0]] → … → points[order[-1]]."""
    pts = _with_start(_as_points(points), start)
    path = np.concatenate([[0], np.asarray(order, dtype=int) + 1])
    seg = np.abs(np.diff(pts[path], axis=0)).max(axis=1)
    return float(seg.sum())


@ROUTE_PLANNERS.register("identity")
def identity_route(points: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Fire the shots in the order given (the baseline a raster/snake scan already has)."""
    return np.arange(len(_as_points(points)))


@ROUTE_PLANNERS.register("nn")
def nearest_neighbour(points: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Greedy nearest-neighbour open tour from `start` (ties go to the lowest index)."""
    pts = _as_points(points)
    n = len(pts)
    order = np.empty(n, dtype=int)
    visited = np.zeros(n, dtype=bool)
    cur = np.zeros(2) if start is None else np.asarray(start, dtype=float).reshape(2)
    for k in range(n):
        d = np.abs(pts - cur).max(axis=1)
        d[visited] = np.inf
        j = int(np.argmin(d))
        order[k] = j
        visited[j] = True
        cur = pts[j]
    return order


def two_opt(points: np.ndarray, order: np.ndarray, start: np.ndarray | None = None,
            max_passes: int = 200) -> np.ndarray:
    """Improve an open path by segment reversals until no reversal shortens it.

    Path positions 0..n with node 0 the fixed start. Reversing positions i..j (1 ≤ i < j ≤ n)
    replaces edges (i-1, i) and (j, j+1) by (i-1, j) and (i, j+1); when j = n the path is open
    at its end, so only one edge changes. For each i the gains of all j are computed at once.
    """
    pts = _with_start(_as_points(points), start)
    dist = chebyshev_matrix(pts, pts)
    path = np.concatenate([[0], np.asarray(order, dtype=int) + 1])
    n = len(path) - 1
    for _ in range(max_passes):
        improved = False
        for i in range(1, n):
            js = np.arange(i + 1, n + 1)
            a, b = path[i - 1], path[i]
            c = path[js]
            nxt = np.where(js < n, path[np.minimum(js + 1, n)], -1)
            open_end = nxt < 0
            old = dist[a, b] + np.where(open_end, 0.0, dist[c, np.maximum(nxt, 0)])
            new = dist[a, c] + np.where(open_end, 0.0, dist[b, np.maximum(nxt, 0)])
            gain = old - new
            k = int(np.argmax(gain))
            if gain[k] > 1e-12:
                j = int(js[k])
                path[i:j + 1] = path[i:j + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return path[1:] - 1


@ROUTE_PLANNERS.register("nn2opt")
def nn_two_opt(points: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Nearest neighbour then 2-opt: never longer than nearest neighbour alone."""
    return two_opt(points, nearest_neighbour(points, start), start)


def plan_route(points: np.ndarray, start: np.ndarray | None = None,
               planner: str = "nn2opt") -> np.ndarray:
    """Order `points` (N,2) for the mirror starting at `start`; returns a permutation of 0..N-1."""
    pts = _as_points(points)
    if len(pts) == 0:
        return np.zeros(0, dtype=int)
    return ROUTE_PLANNERS.get(planner)(pts, start)
