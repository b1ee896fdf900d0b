"""Wide-area search strategies: raster, uniform, PPM sampling, PPM + probability searching.

Paper: "A Novel Wide-Area Multiobject Detection System with High-Probability Region Searching",
Long, Zhao, Chen, Gu, Gu; arXiv 2405.04589 (2024).

Follows the paper (abstract) and the authors' related C++ code (reference/systems.md §4.1):
- panoramic probability map (PPM): each region gets probability area fraction × class prior and
  shots are drawn uniformly inside regions [code]; here per-pixel weight prior^γ (γ = 1 is exactly
  the paper's rule, because a region's pixel count is its area);
- probability searching [abstract + code]: a first PPM round, then a share of the next budget
  (`focus_frac`, 0.8 in the code) goes to detections in proportion to their confidence, the rest
  to global sampling; duplicate centres are merged by L1-distance NMS at 0.12 V [code];
- a *dynamic sampling range* and *uncertainty-variance refinement* [abstract; formulas not
  readable]. Our design [inferred]: resample radius r = clip(k·σ, r_min·FOV, r_max·FOV) around
  the fused estimate, inverse-variance fusion x̂ = Σ x/σ² / Σ 1/σ², σ̂² = 1/Σ 1/σ²; a track
  stops attracting shots when σ̂ < stop_sigma_fov·FOV.
Our own additions [inferred], each a config switch: footprint inhibition of the PPM (after a shot
misses, the weight under its footprint is multiplied by 1 − assumed_p_detect, a Bayesian update),
and confirmation (a track that was re-shot more often without a detection than with one is dropped).

From pixels (issue 19) [ours]: the PPM is built from the rig's segmenter output, not from a
label map: weight(pixel) = Σ_c p_c(pixel) · prior_c^γ, the expected prior under the segmenter's
class probabilities (γ = 1 and one-hot p give the paper's rule); pixels whose confidence (max p)
is below `seg_threshold` get the class-average prior^γ (no information). The priors are the rig's
`class_priors`, learned on other scenes. Planning (sampling + routing of a round) runs inside
`session.computing(n)`, which charges it to the rig's clock.

Every strategy has the same interface: `run(session, config, rng) -> list[Track]`, where
`session` offers `wide_view()` (class probabilities), `class_priors`, `px_to_v`, `field_v`,
`fov_v`, `mirror_v`, `computing`, `fire`.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from methods.errors import ConfigError
from methods.registry import Registry, config_from_dict
from methods.route import plan_route


@dataclass(frozen=True)
class SearchMethod:
    """A registered strategy: its config class and `run(session, config, rng) -> list[Track]`."""

    name: str
    config_cls: type
    run: Callable[[Any, Any, np.random.Generator], list[Track]]

    def create(self, **config: Any) -> Callable[[Any, np.random.Generator], list[Track]]:
        """This strategy with `config` bound (unknown keys refused): call it as `search(session, rng)`."""
        cfg = config_from_dict(self.config_cls, config)

        def search(session: Any, rng: np.random.Generator) -> list[Track]:
            return self.run(session, cfg, rng)

        return search


SEARCH_METHODS: Registry[SearchMethod] = Registry("search method", SearchMethod)
MERGE_L1_V = 0.12   # duplicate-merge radius of the authors' code, used by the one-round baselines


def register_search(name: str, config_cls: type) -> Callable:
    def add(fn: Callable) -> Callable:
        SEARCH_METHODS.register(name)(SearchMethod(name, config_cls, fn))
        return fn
    return add


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class _Config:
    """Shared validation of the budget / planner / version fields."""

    def _check_common(self) -> None:
        _require(self.version == 1, f"{type(self).__name__} version must be 1; received {self.version}.")
        _require(isinstance(self.budget, int) and self.budget >= 1,
                 f"budget must be a positive int (shots); received {self.budget!r}.")
        _require(self.planner in ("identity", "nn", "nn2opt"),
                 f"planner must be 'identity', 'nn' or 'nn2opt'; received {self.planner!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RasterConfig(_Config):
    """mode 'full': snake over the grid that covers the field, cut at the budget (the paper's
    raster baseline); 'spread': an evenly spaced √budget × √budget grid over the whole field."""

    version: int = 1
    budget: int = 145
    mode: str = "full"
    planner: str = "identity"

    def __post_init__(self) -> None:
        self._check_common()
        _require(self.mode in ("full", "spread"), f"mode must be 'full' or 'spread'; received {self.mode!r}.")

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"mode": ("categorical", ["full", "spread"])}


@dataclass(frozen=True)
class UniformConfig(_Config):
    version: int = 1
    budget: int = 145
    planner: str = "nn2opt"

    def __post_init__(self) -> None:
        self._check_common()

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"planner": ("categorical", ["identity", "nn", "nn2opt"])}


@dataclass(frozen=True)
class PPMConfig(_Config):
    version: int = 1
    budget: int = 145
    gamma: float = 1.0          # weight = prior^gamma (1 = the paper's rule)
    explore: float = 0.0        # share of uniform weight mixed into the map
    inhibit: bool = False       # footprint inhibition while drawing the round
    assumed_p_detect: float = 0.9
    seg_threshold: float = 0.0  # segmenter confidence below which a pixel carries no class information
    planner: str = "nn2opt"

    def __post_init__(self) -> None:
        self._check_common()
        _require(0 <= self.seg_threshold <= 1,
                 f"seg_threshold must lie in [0, 1]; received {self.seg_threshold}.")
        _require(self.gamma >= 0 and 0 <= self.explore <= 1 and 0 <= self.assumed_p_detect <= 1,
                 f"Need gamma ≥ 0, explore and assumed_p_detect in [0, 1]; received {self.gamma}, "
                 f"{self.explore}, {self.assumed_p_detect}.")

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"gamma": ("float", 0.0, 2.0), "explore": ("float", 0.0, 0.5),
                "inhibit": ("categorical", [False, True]), "seg_threshold": ("float", 0.0, 0.9)}


@dataclass(frozen=True)
class PPMSearchConfig(_Config):
    version: int = 1
    budget: int = 145
    round1_frac: float = 0.6     # share of the budget in the first, pure-PPM round
    n_rounds: int = 3            # rounds after the first share the rest equally
    focus_frac: float = 0.8      # share of a later round aimed at tracks (code: 0.8)
    max_revisits: int = 2        # per track and round
    k_sigma: float = 1.0         # dynamic sampling range r = clip(k σ, r_min, r_max)
    r_min_fov: float = 0.05
    r_max_fov: float = 0.5
    stop_sigma_fov: float = 0.015
    merge_l1_v: float = 0.12     # duplicate merging radius (code: 0.12 V)
    fuse: bool = True            # inverse-variance refinement
    confirm: bool = True
    gamma: float = 1.0
    explore: float = 0.0
    inhibit: bool = True
    assumed_p_detect: float = 0.9
    seg_threshold: float = 0.0
    planner: str = "nn2opt"

    def __post_init__(self) -> None:
        self._check_common()
        _require(0 <= self.seg_threshold <= 1,
                 f"seg_threshold must lie in [0, 1]; received {self.seg_threshold}.")
        _require(0 < self.round1_frac <= 1 and 0 <= self.focus_frac <= 1,
                 f"Need 0 < round1_frac ≤ 1 and 0 ≤ focus_frac ≤ 1; received {self.round1_frac}, "
                 f"{self.focus_frac}.")
        _require(self.n_rounds >= 1 and self.max_revisits >= 0,
                 f"Need n_rounds ≥ 1 (refinement rounds) and max_revisits ≥ 0; received "
                 f"{self.n_rounds}, {self.max_revisits}.")
        _require(0 <= self.r_min_fov <= self.r_max_fov and self.k_sigma >= 0 and self.merge_l1_v > 0,
                 f"Need 0 ≤ r_min_fov ≤ r_max_fov, k_sigma ≥ 0, merge_l1_v > 0; received "
                 f"{self.r_min_fov}, {self.r_max_fov}, {self.k_sigma}, {self.merge_l1_v}.")
        _require(self.gamma >= 0 and 0 <= self.explore <= 1 and 0 <= self.assumed_p_detect <= 1,
                 f"Need gamma ≥ 0, explore and assumed_p_detect in [0, 1]; received {self.gamma}, "
                 f"{self.explore}, {self.assumed_p_detect}.")

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {
            "round1_frac": ("float", 0.3, 1.0), "n_rounds": ("int", 1, 4),
            "focus_frac": ("float", 0.2, 1.0), "k_sigma": ("float", 0.0, 4.0),
            "r_max_fov": ("float", 0.1, 2.0), "stop_sigma_fov": ("float", 0.005, 0.05),
            "merge_l1_v": ("float", 0.05, 0.3), "gamma": ("float", 0.0, 2.0),
            "inhibit": ("categorical", [False, True]), "seg_threshold": ("float", 0.0, 0.9),
        }


# ----------------------------------------------------------------------------- tracks
def inverse_variance_fuse(x: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, float]:
    """x̂ = Σ x_k/σ_k² / Σ 1/σ_k², fused variance 1/Σ 1/σ_k² (per axis, isotropic σ_k)."""
    w = 1.0 / np.asarray(var, dtype=float)
    return (np.asarray(x, dtype=float) * w[:, None]).sum(axis=0) / w.sum(), float(1.0 / w.sum())


class Track:
    """Observations of one putative target; `estimate` is fused or the best single observation."""

    def __init__(self, det: Any, fuse: bool) -> None:
        self.fuse = fuse
        self.obs_v, self.obs_var, self.obs_conf, self.shots = [], [], [], set()
        self.misses = 0  # later shots whose FOV covered the estimate but did not detect it
        self.add(det)

    def add(self, det: Any) -> None:
        self.obs_v.append(np.asarray(det.v, dtype=float))
        self.obs_var.append(det.var)
        self.obs_conf.append(det.conf)
        self.shots.add(det.shot)
        self.fused, self.var = inverse_variance_fuse(np.array(self.obs_v), np.array(self.obs_var))

    def absorb(self, other: Track) -> None:
        for v, s, c in zip(other.obs_v, other.obs_var, other.obs_conf, strict=True):
            self.obs_v.append(v)
            self.obs_var.append(s)
            self.obs_conf.append(c)
        self.shots |= other.shots
        self.misses += other.misses
        self.fused, self.var = inverse_variance_fuse(np.array(self.obs_v), np.array(self.obs_var))

    @property
    def best_single(self) -> np.ndarray:
        return self.obs_v[int(np.argmax(self.obs_conf))]

    @property
    def estimate(self) -> np.ndarray:
        return self.fused if self.fuse else self.best_single

    @property
    def conf(self) -> float:
        return float(max(self.obs_conf))


def merge_detections(dets: list[Any], merge_l1_v: float, fuse: bool = True,
                     tracks: list[Track] | None = None) -> list[Track]:
    """Greedy L1 NMS: a detection (highest confidence first) joins the nearest track within
    `merge_l1_v` (L1 distance in volts), else starts one; then tracks that drifted within the
    radius of each other are merged."""
    tracks = list(tracks or [])
    for det in sorted(dets, key=lambda d: -d.conf):
        dist = [float(np.abs(t.estimate - det.v).sum()) for t in tracks]
        k = int(np.argmin(dist)) if dist else -1
        if k >= 0 and dist[k] < merge_l1_v:
            tracks[k].add(det)
        else:
            tracks.append(Track(det, fuse))
    merged = True
    while merged:
        merged = False
        for i in range(len(tracks)):
            for j in range(i + 1, len(tracks)):
                if np.abs(tracks[i].estimate - tracks[j].estimate).sum() < merge_l1_v:
                    tracks[i].absorb(tracks.pop(j))
                    merged = True
                    break
            if merged:
                break
    return tracks


# ----------------------------------------------------------------------------- PPM
class PPM:
    """Per-pixel sampling weights of the wide-angle view, with the pixel centres in volts."""

    def __init__(self, session: Any, gamma: float, explore: float, seg_threshold: float = 0.0) -> None:
        probs = np.asarray(session.wide_view(), dtype=float)
        h, w, n_cls = probs.shape
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        self.px = np.stack([cols.ravel(), rows.ravel()], axis=1)
        self.v = session.px_to_v(self.px)
        self.vx, self.vy = self.v[:, 0].copy(), self.v[:, 1].copy()
        self.half_fov = session.fov_v / 2
        lim = session.field_v / 2
        inside = np.abs(self.v).max(axis=1) <= lim
        prior = np.asarray(session.class_priors, dtype=float) ** gamma
        p = probs.reshape(-1, n_cls)
        expected = p @ prior
        expected = np.where(p.max(axis=1) >= seg_threshold, expected, prior.mean())
        base = expected * inside
        base = base / base.sum()
        uni = inside / inside.sum()
        self.weight = (1 - explore) * base + explore * uni
        self.px_to_v = session.px_to_v

    def inhibit(self, shot_v: np.ndarray, p_detect: float) -> None:
        """A shot that found nothing here leaves (1 − p_detect) of the mass under its footprint."""
        vx, vy = self.vx, self.vy
        for s in np.atleast_2d(shot_v):
            # Two separable 1-D tests are ~10x faster than a row-wise max over (N, 2).
            under = np.flatnonzero(np.abs(vx - s[0]) <= self.half_fov)
            under = under[np.abs(vy[under] - s[1]) <= self.half_fov]
            self.weight[under] *= 1.0 - p_detect

    def sample(self, n: int, rng: np.random.Generator, inhibit: bool, p_detect: float) -> np.ndarray:
        """n shot centres in volts (a pixel drawn ∝ weight, jittered inside the pixel)."""
        if n <= 0:
            return np.zeros((0, 2))
        if not inhibit:
            idx = rng.choice(len(self.weight), size=n, p=self.weight / self.weight.sum())
            return self.px_to_v(self.px[idx] + rng.uniform(-0.5, 0.5, (n, 2)))
        # Sequential draws on a scratch copy: each planned shot suppresses its own footprint
        # (at the pixel centre's voltage), so a round does not pile shots onto one spot.
        saved = self.weight.copy()
        picks = np.empty(n, dtype=int)
        for k in range(n):
            cdf = np.cumsum(self.weight)
            picks[k] = min(int(np.searchsorted(cdf, rng.uniform(0, cdf[-1]), side="right")), len(cdf) - 1)
            self.inhibit(self.v[picks[k]], p_detect)
        out = self.px_to_v(self.px[picks] + rng.uniform(-0.5, 0.5, (n, 2)))
        self.weight = saved
        return out


def _planning(session: Any, n: int, planner: str) -> contextlib.AbstractContextManager:
    """The rig's clock for planning a round of n shots (a session without one charges nothing);
    the identity planner does no O(n²) routing work."""
    if not hasattr(session, "computing"):
        return contextlib.nullcontext()
    return session.computing(n, routed=planner != "identity")


def _route(session: Any, shots: np.ndarray, planner: str) -> np.ndarray:
    lim = session.field_v / 2 - session.fov_v / 2
    shots = np.clip(np.asarray(shots, dtype=float).reshape(-1, 2), -lim, lim)
    return shots[plan_route(shots, session.mirror_v, planner)]


# ----------------------------------------------------------------------------- strategies
@register_search("raster", RasterConfig)
def raster(session: Any, cfg: RasterConfig, rng: np.random.Generator) -> list[Track]:
    half = session.field_v / 2
    if cfg.mode == "full":
        n = math.ceil(session.field_v / session.fov_v)
    else:
        n = max(int(math.floor(math.sqrt(cfg.budget))), 1)
    centres = -half + session.field_v * (np.arange(n) + 0.5) / n
    rows = [np.stack([centres if r % 2 == 0 else centres[::-1], np.full(n, centres[r])], axis=1)
            for r in range(n)]   # snake, starting with the top rows of the view (Vy < 0)
    with _planning(session, min(cfg.budget, n * n), cfg.planner):
        shots = _route(session, np.vstack(rows)[: cfg.budget], cfg.planner)
    return merge_detections(session.fire(shots), MERGE_L1_V, fuse=False)


@register_search("uniform", UniformConfig)
def uniform(session: Any, cfg: UniformConfig, rng: np.random.Generator) -> list[Track]:
    lim = session.field_v / 2 - session.fov_v / 2
    with _planning(session, cfg.budget, cfg.planner):
        shots = _route(session, rng.uniform(-lim, lim, (cfg.budget, 2)), cfg.planner)
    return merge_detections(session.fire(shots), MERGE_L1_V, fuse=False)


@register_search("ppm", PPMConfig)
def ppm_sampling(session: Any, cfg: PPMConfig, rng: np.random.Generator) -> list[Track]:
    session.wide_view()   # capture + segmentation are charged by the rig, not as planning
    with _planning(session, cfg.budget, cfg.planner):
        ppm = PPM(session, cfg.gamma, cfg.explore, cfg.seg_threshold)
        shots = _route(session, ppm.sample(cfg.budget, rng, cfg.inhibit, cfg.assumed_p_detect), cfg.planner)
    return merge_detections(session.fire(shots), MERGE_L1_V, fuse=False)


def _round_sizes(cfg: PPMSearchConfig) -> list[int]:
    first = max(1, round(cfg.round1_frac * cfg.budget))
    rest = cfg.budget - first
    later = [rest // cfg.n_rounds + (1 if i < rest % cfg.n_rounds else 0) for i in range(cfg.n_rounds)]
    return [first] + [n for n in later if n > 0]


def _focus_shots(tracks: list[Track], n_focus: int, cfg: PPMSearchConfig, fov: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Shots around unconverged tracks, ∝ confidence, within the dynamic range r = k σ̂ (clipped)."""
    active = [t for t in tracks if math.sqrt(t.var) > cfg.stop_sigma_fov * fov
              and not (cfg.confirm and t.misses >= len(t.shots))]
    if not active or n_focus <= 0:
        return np.zeros((0, 2))
    conf = np.array([t.conf for t in active])
    n_focus = min(n_focus, cfg.max_revisits * len(active))
    quota = np.minimum(np.floor(conf / conf.sum() * n_focus), cfg.max_revisits).astype(int)
    for i in np.argsort(-conf):  # hand out the remainder by confidence
        if quota.sum() >= n_focus:
            break
        if quota[i] < cfg.max_revisits:
            quota[i] += 1
    shots = []
    for t, q in zip(active, quota, strict=True):
        r = float(np.clip(cfg.k_sigma * math.sqrt(t.var), cfg.r_min_fov * fov, cfg.r_max_fov * fov))
        ang, rad = rng.uniform(0, 2 * np.pi, q), r * np.sqrt(rng.uniform(0, 1, q))
        shots.append(t.fused + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1))
    return np.vstack(shots)


def _count_misses(tracks: list[Track], estimates: list[np.ndarray], shots: np.ndarray,
                  first_shot: int, fov: float) -> None:
    """A round's shot whose FOV held a track's (pre-round) estimate well inside, but which gave
    the track no detection, is a miss."""
    for t, est in zip(tracks, estimates, strict=True):
        inside = np.flatnonzero(np.abs(shots - est).max(axis=1) <= 0.8 * fov / 2) + first_shot
        t.misses += len(set(inside.tolist()) - t.shots)


@register_search("ppm_search", PPMSearchConfig)
def ppm_probability_search(session: Any, cfg: PPMSearchConfig, rng: np.random.Generator) -> list[Track]:
    fov = session.fov_v
    tracks: list[Track] = []
    ppm: PPM | None = None
    session.wide_view()
    for rnd, n_round in enumerate(_round_sizes(cfg)):
        if getattr(session, "out_of_time", False):
            break
        with _planning(session, n_round, cfg.planner):
            ppm = ppm or PPM(session, cfg.gamma, cfg.explore, cfg.seg_threshold)
            focus = np.zeros((0, 2)) if rnd == 0 else _focus_shots(
                tracks, round(cfg.focus_frac * n_round), cfg, fov, rng)
            glob = ppm.sample(n_round - len(focus), rng, cfg.inhibit, cfg.assumed_p_detect)
            shots = _route(session, np.vstack([focus, glob]), cfg.planner)
        first_shot = session.shots_fired
        dets = session.fire(shots)
        fired = np.array(session.shot_v[first_shot:]).reshape(-1, 2)
        if len(fired) == 0:
            break
        old, old_est = list(tracks), [t.estimate.copy() for t in tracks]
        tracks = merge_detections(dets, cfg.merge_l1_v, cfg.fuse, tracks)
        # Only tracks that existed before the round can miss, so a new track is not charged for
        # the shots of the round that created it.
        alive = {id(t) for t in tracks}
        keep = [i for i, t in enumerate(old) if id(t) in alive]
        _count_misses([old[i] for i in keep], [old_est[i] for i in keep], fired, first_shot, fov)
        if cfg.inhibit:
            ppm.inhibit(fired, cfg.assumed_p_detect)
    if cfg.confirm:
        tracks = [t for t in tracks if len(t.shots) > t.misses]
    return tracks
