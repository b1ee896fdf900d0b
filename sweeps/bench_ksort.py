"""Benchmark: K-Sort Arena's votes-to-convergence against its baselines (pure Python, no Ray).

    python sweeps/bench_ksort.py                  # 5 seeds, noise 0 and 5 %, ~10 min on one core
    python sweeps/bench_ksort.py --seeds 3 --quick
    python sweeps/bench_ksort.py --seeds 2 --quick --set 'noise=[0.0]' --set window=20 --set plot=false
    python sweeps/bench_ksort.py --seeds 3 --quick --set horizon_scale=0.1 --set window=20   # seconds

Paper: "K-Sort Arena" (Li et al., arXiv 2408.14468), Table 1 and Figs. 3–6: 716 votes for K-Sort
K = 4 against 11,692 for Elo (16.3× fewer). Protocol (sims/arena.py): 50 models with shuffled true
ranks, flip noise 0 or 5 % (one random adjacent swap for K > 2), "converged" = the first vote after
which the rank MSE stays zero for `window` consecutive votes. Elo uses Chatbot Arena's settings
(K-factor 4, base 10, scale 400, init 1000) with random pairs. A run that does not converge within
its horizon counts as +inf in the medians (so a median is a lower bound when shown as "inf").

Common flags as for every sweep (`--config`, `--set`, `--out`, `--run-id`, `--dry-run`;
cluster/bench_cli.py); the knobs are the fields of `KSortBenchConfig` (`--seeds` and `--quick` are
shorthands). Writes bench.json, run.json, convergence.csv/.md, add_model.csv/.md, claims.csv/.md
and convergence.png into results/bench_ksort/<run_id>/; the last line is `summary:
ksort_k4_median_votes=... elo_median_votes=... ratio=...` (noise 0). With ≥ 2 seeds it adds, per
noise level, the votes K-Sort K=4 saves against Elo, paired by seed (same true ranking), as mean
and 95% t-interval with a verdict (`votes_saved`, `_lo`, `_hi`, `_verdict`; at noise 5 %
`votes_saved_noise5pct...`; `supported` only when the CI excludes 0). A run that does not converge
counts at its horizon there, so with censored Elo runs (`votes_saved_censored`) the difference is
a lower bound; when a K-Sort run is censored no interval is given.

The headline ratio decomposed (issue 18), all at noise 0 and on the same truths (seeds), so every
ratio is paired by seed: per-seed ratio r_s = votes_A(s)/votes_B(s), reported as the per-seed
range and the geometric mean with a 95 % t-interval of log r_s (methods/metrics/stats.py), a
censored run counted at its horizon (a censored numerator makes the ratio a lower bound "≥", a
censored denominator an upper bound "≤"; both censored: no ratio). The noise floor beside each
contrast is `spread_floor` of the denominator arm's log votes (seed-to-seed |log v_i − log v_j|).
- ratios.csv/.md: K-Sort K=4 against Elo per vote and per pairwise comparison (a tie-free rank
  vote carries K(K−1)/2 constraints, a best-of-K vote K−1; Elo's K=2 vote one).
- decomposition.csv/.md: the cells update rule (K-Sort's Bayesian update, Elo K-factor 4) ×
  matchmaking (UCB = K-Sort's pivot + UCB over the ranker's own scores; random = uniform random
  groups, `BaseRanker.propose_random`) × K (2, 4) × vote mode (rank, best), and each factor's
  ratio with the other three held fixed. [ours] Elo with UCB is K-Sort's matchmaker run on Elo
  ratings (scale 400), so its exploitation term dwarfs the α = 1 bonus: a fair reading of "UCB
  over this ranker's scores", not a tuned one. Elo on a K-vote applies the vote's pairwise
  constraints one after another (methods/ranking/elo.py).
- elo_criteria.csv/.md: Elo (random pairs) at K-factors `elo_k_factors` under the strict criterion
  (MSE = 0 for `window` votes) and looser ones (MSE ≤ 0.5, 1, 2 for `window` votes; the first vote
  with MSE = 0), all read from the same runs, against the paper's 11,692.
- kwise.csv/.md: K-Sort (pivot + UCB, rank votes) at K = `kwise_k` under the three readings of
  the K-wise variance update (methods/ksort.py: simultaneous [paper], sequential [inferred],
  damped [ours]): the first vote's variance factor from the prior (≤ 0 = σ² would go negative),
  votes whose raw σ² went ≤ 0 (held at the floor, counted), and votes to converge.
- best_mode.csv/.md: "best" votes (one winner of K) with a diagnosis, measured: constraints per
  vote, whether the capped MSE (bottom K−1 true models as one block, which best-of-K votes can
  never order) converges, how many true neighbours were never compared directly, and how many end
  reversed although they were compared directly (with noise 0 every such comparison was right),
  the board by μ alone (whether σ/η or μ is wrong), and the same under the other readings and τ > 0.
`horizon_scale` multiplies every horizon (for tests); `--quick` keeps its meaning for the first
table and runs the new tables at Elo horizon 20k with K-factors 4 and 16 only.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_ksort.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.errors import ConfigError
from methods.ksort import KWISE_READINGS, KSortConfig, prior_shrink
from methods.metrics.stats import Estimate, mean_ci, paired_difference, spread_floor
from methods.ranking.elo import EloConfig
from sims.arena import (
    constraints_per_vote,
    first_stable_below,
    first_touch,
    run_add_model,
    run_convergence,
)

PAPER_ELO, PAPER_KSORT = 11692, 716
PAPER_RATIO = PAPER_ELO / PAPER_KSORT  # 16.3, per vote


@dataclass(frozen=True)
class KSortBenchConfig:
    seeds: int = 5
    noise: tuple[float, ...] = (0.0, 0.05)  # flip-noise levels
    window: int = 200  # converged = rank MSE zero for this many consecutive votes
    quick: bool = False  # K-Sort and Elo only, Elo horizon 20k, no add-a-model part
    plot: bool = True
    decomposition: bool = True  # ratios, decomposition, Elo criteria, K-wise readings, best mode
    horizon_scale: float = 1.0  # multiplies every horizon (tests use 0.1 or less)
    elo_k_factors: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0)
    kwise_k: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"KSortBenchConfig version must be 1; received {self.version}.")
        if self.seeds < 1 or self.window < 1:
            raise ConfigError(f"seeds and window must be >= 1; received seeds={self.seeds}, "
                              f"window={self.window}.")
        if not self.noise or 0.0 not in self.noise or any(not 0.0 <= x < 0.5 for x in self.noise):
            raise ConfigError(f"noise must list flip-noise levels in [0, 0.5) including 0.0 (the summary "
                              f"reports noise 0); received {list(self.noise)}. Example: --set "
                              "'noise=[0.0, 0.05]'.")
        if not 0 < self.horizon_scale <= 10:
            raise ConfigError(f"horizon_scale must be in (0, 10]; received {self.horizon_scale}. "
                              "Example: --set horizon_scale=0.1 for a smoke run.")
        if not self.elo_k_factors or any(not k > 0 for k in self.elo_k_factors):
            raise ConfigError(f"elo_k_factors must list Elo K-factors > 0; received "
                              f"{list(self.elo_k_factors)}. Example: --set 'elo_k_factors=[4, 16]'.")
        if not self.kwise_k or any(int(k) != k or not 2 <= k <= 12 for k in self.kwise_k):
            raise ConfigError(f"kwise_k must list group sizes K in [2, 12]; received "
                              f"{list(self.kwise_k)}. Example: --set 'kwise_k=[2, 4, 6]'.")


@dataclass(frozen=True)
class Variant:
    label: str
    ranker: str
    K: int
    max_votes: int
    config: Any = None
    matchmaker: str = "native"
    eval_every: int = 1
    vote_mode: str = "rank"
    diagnostics: bool = False


def _h(votes: int, scale: float) -> int:
    return max(50, int(round(votes * scale)))


def variants(quick: bool, scale: float = 1.0) -> list[Variant]:
    h = _h(2500, scale)
    rows = [
        Variant("ksort K=2 (similar)", "ksort", 2, _h(4000, scale)),
        Variant("ksort K=4 (similar)", "ksort", 4, h),
        Variant("ksort K=6 (similar)", "ksort", 6, h),
        Variant("ksort K=6 (similar, WL gamma)", "ksort", 6, h, KSortConfig(gamma=True)),
        Variant("ksort K=4 (printed +|dS|)", "ksort", 4, h, KSortConfig(ucb_reading="printed")),
        Variant("ksort K=4 (random opponents)", "ksort", 4, h, KSortConfig(opponents="random")),
        Variant("elo K=2 (random pairs)", "elo", 2, _h(20000 if quick else 60000, scale)),
        Variant("bradley_terry K=2 (random)", "bradley_terry", 2, _h(8000, scale), eval_every=5),
        Variant("trueskill K=4 (random)", "trueskill", 4, h),
        Variant("trueskill K=4 (UCB)", "trueskill", 4, h, matchmaker="ucb"),
        Variant("openskill TMFull K=4 (UCB)", "openskill", 4, h, matchmaker="ucb"),
    ]
    if quick:
        rows = [r for r in rows if r.ranker in ("ksort", "elo")]
    return rows


class Runs:
    """Memoised convergence runs: a cell shared by several tables is run once per seed."""

    def __init__(self) -> None:
        self._memo: dict[tuple, dict[str, Any]] = {}
        self.seconds = 0.0

    def get(self, var: Variant, noise: float, seed: int, window: int) -> dict[str, Any]:
        key = (var.ranker, var.K, var.max_votes, var.config, var.matchmaker, var.eval_every,
               var.vote_mode, var.diagnostics, noise, seed, window)
        if key not in self._memo:
            t0 = time.perf_counter()
            self._memo[key] = run_convergence(var.ranker, var.K, noise, seed, var.max_votes, window,
                                              config=var.config, matchmaker=var.matchmaker,
                                              eval_every=var.eval_every, vote_mode=var.vote_mode,
                                              diagnostics=var.diagnostics)
            self.seconds += time.perf_counter() - t0
        return self._memo[key]

    def all(self, var: Variant, noise: float, seeds: list[int], window: int) -> list[dict[str, Any]]:
        return [self.get(var, noise, s, window) for s in seeds]


def median_votes(values: list[int | None]) -> float:
    return float(np.median([math.inf if v is None else v for v in values]))


def fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.0f}"


def bench(args: KSortBenchConfig, store: Runs | None = None) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    store = store or Runs()
    table: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list]] = {}
    for var in variants(args.quick, args.horizon_scale):
        for noise in args.noise:
            t0 = time.perf_counter()
            runs = store.all(var, noise, seeds, args.window)
            row = {"variant": var.label, "noise": noise, "horizon": var.max_votes,
                   "eval_every": var.eval_every, "votes": [r["votes_to_converge"] for r in runs],
                   "converged": sum(r["votes_to_converge"] is not None for r in runs),
                   "median": median_votes([r["votes_to_converge"] for r in runs]),
                   "final_mse": [r["final_mse"] for r in runs],
                   "seconds": round(time.perf_counter() - t0, 1)}
            table.append(row)
            step = max(1, len(runs[0]["votes"]) // 5000)  # keep bench.json small
            curves[f"{var.label} noise={noise}"] = {"votes": runs[0]["votes"][::step],
                                                    "mse": runs[0]["curve"][::step]}
            print(f"  {row['variant']:<32} noise={noise:<4} median={fmt(row['median']):>6} "
                  f"converged={row['converged']}/{len(seeds)} votes={row['votes']} "
                  f"({row['seconds']} s)", flush=True)
    fig6 = []
    if not args.quick:
        for pivot, opp in (("fewest", "ucb"), ("random", "ucb"), ("random", "random")):
            runs = [run_add_model("ksort", 4, s, pivot=pivot, opponents=opp, max_new_votes=300,
                                  warmup_max_votes=_h(3000, args.horizon_scale), window=args.window)
                    for s in seeds]
            fig6.append({"matchmaking": f"{pivot} pivot + {opp}",
                         "votes_to_settle": [r["votes_to_settle"] for r in runs],
                         "median": median_votes([r["votes_to_settle"] for r in runs]),
                         "start_rank": [r["start_rank"] for r in runs]})
    return {"table": table, "curves": curves, "fig6": fig6}


def convergence_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"variant": r["variant"], "noise": r["noise"], "horizon": r["horizon"],
             "converged": f"{r['converged']}/{len(r['votes'])}", "median": fmt(r["median"]),
             "per_seed": ", ".join("-" if v is None else str(v) for v in r["votes"])} for r in res["table"]]


def add_model_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"matchmaking": r["matchmaking"], "median": fmt(r["median"]),
             "per_seed": ", ".join("-" if v is None else str(v) for v in r["votes_to_settle"]),
             "start_ranks": ", ".join(map(str, r["start_rank"]))} for r in res["fig6"]]


def pick(res: dict[str, Any], prefix: str, noise: float) -> dict[str, Any]:
    return next(r for r in res["table"] if r["variant"].startswith(prefix) and r["noise"] == noise)


def votes_saved(ks: dict[str, Any], elo: dict[str, Any]):
    """Paired by seed: Elo's votes minus K-Sort K=4's, a censored run counted at its horizon.

    Returns (Estimate or None, number of censored Elo runs). None when a K-Sort run is censored
    (then the difference would not even be a bound) or there are fewer than 2 seeds.
    """
    if len(ks["votes"]) < 2 or any(v is None for v in ks["votes"]):
        return None, 0
    elo_votes = [elo["horizon"] if v is None else v for v in elo["votes"]]
    censored = sum(v is None for v in elo["votes"])
    return paired_difference(np.array(elo_votes, float), np.array(ks["votes"], float)), censored


def plot(res: dict[str, Any], path: Path) -> None:
    from methods.plotting import new_figure, save_figure

    fig, ax = new_figure(figsize=(7, 4))
    for label, curve in res["curves"].items():
        if label.endswith(" noise=0.0") and ("ksort" in label or "elo" in label):
            style = "-" if "ksort" in label else "--"
            ax.plot(curve["votes"], curve["mse"], style, lw=1, label=label.removesuffix(" noise=0.0"))
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("votes")
    ax.set_ylabel("rank MSE (seed 0, noise 0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


# --- the headline decomposed (issue 18) --------------------------------------------------------
@dataclass(frozen=True)
class Ratio:
    """Per-seed ratios num/den (censored runs at their horizon) and their geometric-mean CI."""

    per_seed: list[float]
    bound: str  # "" (both sides converged on every seed), ">=", "<=" or "none"
    geo: Estimate | None
    floor: Estimate | None
    num_censored: int
    den_censored: int

    @property
    def lo(self) -> float:
        return min(self.per_seed) if self.per_seed else math.nan

    @property
    def hi(self) -> float:
        return max(self.per_seed) if self.per_seed else math.nan


def _counted(runs: list[dict[str, Any]], var: Variant) -> tuple[np.ndarray, int]:
    v = [var.max_votes if r["votes_to_converge"] is None else r["votes_to_converge"] for r in runs]
    return np.array(v, float), sum(r["votes_to_converge"] is None for r in runs)


def seed_ratio(num: list[dict[str, Any]], num_var: Variant, den: list[dict[str, Any]],
               den_var: Variant, num_unit: float = 1.0, den_unit: float = 1.0) -> Ratio:
    """num/den votes (each times its unit, e.g. constraints per vote), paired by seed."""
    a, ca = _counted(num, num_var)
    b, cb = _counted(den, den_var)
    a, b = a * num_unit, b * den_unit
    bound = "none" if (ca and cb) else ">=" if ca else "<=" if cb else ""
    logs = np.log(a) - np.log(b)
    geo = floor = None
    if len(logs) >= 2 and bound != "none":
        est = mean_ci(logs)
        geo = Estimate(math.exp(est.value), math.exp(est.lo), math.exp(est.hi), est.n, est.level,
                       "geometric mean, t of log ratio")
        # seed-to-seed spread of the denominator arm; none when it has censored runs (a spread of
        # horizons is no noise floor)
        floor = spread_floor(np.log(b)) if not cb else None
    return Ratio([float(x) for x in np.exp(logs)], bound, geo, floor, ca, cb)


def ratio_cells(r: Ratio) -> dict[str, Any]:
    b = "" if r.bound in ("", "none") else r.bound + " "
    if r.bound == "none":
        return {"ratio_geo": "n/a (both censored)", "ci95": "-", "per_seed_range": "-",
                "noise_floor_x": "-", "verdict": "-"}
    geo = "-" if r.geo is None else f"{b}{r.geo.value:.2f}"
    ci = "-" if r.geo is None else f"[{r.geo.lo:.2f}, {r.geo.hi:.2f}]"
    floor = "-" if r.floor is None else f"{math.exp(r.floor.hi):.2f}"
    verdict = "-"
    if r.geo is not None:
        log_lo, log_hi = math.log(r.geo.lo), math.log(r.geo.hi)
        above_floor = r.floor is None or abs(math.log(r.geo.value)) > r.floor.hi
        # a lower bound can only support "> 1", an upper bound only "< 1"
        side_ok = {"": log_lo > 0 or log_hi < 0, ">=": log_lo > 0, "<=": log_hi < 0}[r.bound]
        if side_ok and above_floor:
            verdict = "supported" + (" (> 1, a lower bound)" if r.bound == ">=" else
                                     " (< 1, an upper bound)" if r.bound == "<=" else "")
        elif r.bound:
            verdict = "bound only"
        else:
            verdict = "not distinguishable"
    return {"ratio_geo": geo, "ci95": ci, "per_seed_range": f"{b}{r.lo:.2f}–{r.hi:.2f}",
            "noise_floor_x": floor, "verdict": verdict}


def _votes_text(runs: list[dict[str, Any]]) -> str:
    return ", ".join("-" if r["votes_to_converge"] is None else str(r["votes_to_converge"]) for r in runs)


def ratio_rows(args: KSortBenchConfig, store: Runs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """K-Sort K=4 against Elo K=2, per vote and per pairwise comparison, at every noise level."""
    seeds = list(range(args.seeds))
    by_label = {v.label: v for v in variants(args.quick, args.horizon_scale)}
    ks_var, elo_var = by_label["ksort K=4 (similar)"], by_label["elo K=2 (random pairs)"]
    rows, keys = [], {}
    for noise in args.noise:
        ks, elo = store.all(ks_var, noise, seeds, args.window), store.all(elo_var, noise, seeds, args.window)
        for unit, ks_unit, paper in (("vote", 1, PAPER_RATIO),
                                     ("pairwise comparison", constraints_per_vote(4, "rank"),
                                      PAPER_ELO / (PAPER_KSORT * constraints_per_vote(4, "rank")))):
            r = seed_ratio(elo, elo_var, ks, ks_var, 1.0, float(ks_unit))
            rows.append({"noise": noise, "per": unit, "elo_votes": _votes_text(elo),
                         "ksort_k4_votes": _votes_text(ks), "constraints_per_ksort_vote": ks_unit,
                         **ratio_cells(r), "censored_elo": r.num_censored,
                         "censored_ksort": r.den_censored, "paper": f"{paper:.1f}"})
            if noise == 0.0 and r.geo is not None:
                name = "ratio_per_vote" if unit == "vote" else "ratio_per_comparison"
                keys.update({f"{name}_geo": round(r.geo.value, 2), f"{name}_lo": round(r.geo.lo, 2),
                             f"{name}_hi": round(r.geo.hi, 2), f"{name}_bound": r.bound or "exact",
                             f"{name}_seed_min": round(r.lo, 2), f"{name}_seed_max": round(r.hi, 2)})
    return rows, keys


def cells(scale: float, quick: bool) -> dict[tuple[str, str, int, str], Variant]:
    """The decomposition grid: (rule, matchmaking, K, vote mode) -> Variant, all at noise 0."""
    elo_h = _h(20000 if quick else 60000, scale)
    elo4_h = _h(20000 if quick else 30000, scale)
    out = {}
    for rule in ("ksort", "elo"):
        for mm in ("ucb", "random"):
            for k, mode in ((2, "rank"), (4, "rank"), (4, "best")):
                if rule == "ksort":
                    h = {"ucb": 4000 if k == 2 else 2500 if mode == "rank" else 8000,
                         "random": 40000 if k == 2 else 20000 if mode == "rank" else 8000}[mm]
                    h = _h(min(h, 10000) if quick else h, scale)
                    matchmaker = "native" if mm == "ucb" else "random"
                else:
                    h = elo_h if k == 2 else elo4_h
                    matchmaker = mm
                label = f"{rule} K={k} {mode} ({mm})"
                out[(rule, mm, k, mode)] = Variant(label, rule, k, h, matchmaker=matchmaker,
                                                   vote_mode=mode)
    return out


# (key, factor, numerator cell, denominator cell): ratio > 1 = the denominator's choice needs fewer votes
CONTRASTS = [
    ("rule_k2_random", "update rule: Elo / K-Sort", ("elo", "random", 2, "rank"),
     ("ksort", "random", 2, "rank")),
    ("rule_k2_ucb", "update rule: Elo / K-Sort", ("elo", "ucb", 2, "rank"), ("ksort", "ucb", 2, "rank")),
    ("rule_k4_random", "update rule: Elo / K-Sort", ("elo", "random", 4, "rank"),
     ("ksort", "random", 4, "rank")),
    ("rule_k4_ucb", "update rule: Elo / K-Sort", ("elo", "ucb", 4, "rank"), ("ksort", "ucb", 4, "rank")),
    ("rule_k4best_random", "update rule: Elo / K-Sort", ("elo", "random", 4, "best"),
     ("ksort", "random", 4, "best")),
    ("mm_ksort_k2", "matchmaking: random / UCB", ("ksort", "random", 2, "rank"), ("ksort", "ucb", 2, "rank")),
    ("mm_ksort_k4", "matchmaking: random / UCB", ("ksort", "random", 4, "rank"), ("ksort", "ucb", 4, "rank")),
    ("mm_ksort_k4best", "matchmaking: random / UCB", ("ksort", "random", 4, "best"),
     ("ksort", "ucb", 4, "best")),
    ("mm_elo_k2", "matchmaking: random / UCB", ("elo", "random", 2, "rank"), ("elo", "ucb", 2, "rank")),
    ("mm_elo_k4", "matchmaking: random / UCB", ("elo", "random", 4, "rank"), ("elo", "ucb", 4, "rank")),
    ("k_ksort_ucb", "K: K=2 / K=4", ("ksort", "ucb", 2, "rank"), ("ksort", "ucb", 4, "rank")),
    ("k_ksort_random", "K: K=2 / K=4", ("ksort", "random", 2, "rank"), ("ksort", "random", 4, "rank")),
    ("k_elo_random", "K: K=2 / K=4", ("elo", "random", 2, "rank"), ("elo", "random", 4, "rank")),
    ("k_elo_ucb", "K: K=2 / K=4", ("elo", "ucb", 2, "rank"), ("elo", "ucb", 4, "rank")),
    ("mode_ksort_ucb", "vote mode: best / rank", ("ksort", "ucb", 4, "best"), ("ksort", "ucb", 4, "rank")),
    ("mode_ksort_random", "vote mode: best / rank", ("ksort", "random", 4, "best"),
     ("ksort", "random", 4, "rank")),
    ("mode_elo_random", "vote mode: best / rank", ("elo", "random", 4, "best"), ("elo", "random", 4, "rank")),
]


def _cell_name(c: tuple[str, str, int, str]) -> str:
    return f"{c[0]} {c[1]} K={c[2]} {c[3]}"


def decomposition(args: KSortBenchConfig, store: Runs
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    seeds = list(range(args.seeds))
    grid = cells(args.horizon_scale, args.quick)
    runs = {c: store.all(v, 0.0, seeds, args.window) for c, v in grid.items()}
    cell_rows = [{"cell": _cell_name(c), "horizon": v.max_votes,
                  "converged": f"{sum(r['votes_to_converge'] is not None for r in runs[c])}/{len(seeds)}",
                  "median_votes": fmt(median_votes([r["votes_to_converge"] for r in runs[c]])),
                  "per_seed": _votes_text(runs[c]),
                  "constraints_per_vote": constraints_per_vote(c[2], c[3]),
                  "final_mse_mean": round(float(np.mean([r["final_mse"] for r in runs[c]])), 3)}
                 for c, v in grid.items()]
    rows, keys = [], {}
    for key, factor, num, den in CONTRASTS:
        fixed = [f"{name}={a}" for name, a, b in zip(("rule", "matchmaking", "K", "mode"), num, den,
                                                     strict=True) if a == b]
        per_vote = seed_ratio(runs[num], grid[num], runs[den], grid[den])
        cn, cd = constraints_per_vote(num[2], num[3]), constraints_per_vote(den[2], den[3])
        per_cmp = seed_ratio(runs[num], grid[num], runs[den], grid[den], float(cn), float(cd))
        row = {"contrast": key, "factor": factor, "held_fixed": ", ".join(fixed),
               "numerator": _cell_name(num), "denominator": _cell_name(den)}
        row.update(ratio_cells(per_vote))
        if (cn, cd) != (1, 1) and cn != cd:
            pc = ratio_cells(per_cmp)
            row.update({"per_comparison_geo": pc["ratio_geo"], "per_comparison_ci95": pc["ci95"]})
        else:
            row.update({"per_comparison_geo": "= per vote", "per_comparison_ci95": "-"})
        rows.append(row)
        if per_vote.geo is not None:
            keys[f"decomp_{key}"] = round(per_vote.geo.value, 2)
            if per_vote.bound:
                keys[f"decomp_{key}_bound"] = "lower" if per_vote.bound == ">=" else "upper"
    return cell_rows, rows, keys


ELO_CRITERIA = (("strict: MSE=0 for window", 0.0, "window"), ("MSE<=0.5 for window", 0.5, "window"),
                ("MSE<=1.0 for window", 1.0, "window"), ("MSE<=2.0 for window", 2.0, "window"),
                ("first MSE=0", 0.0, "touch"))


def elo_criteria(args: KSortBenchConfig, store: Runs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Elo (random pairs, noise 0) under strict and looser convergence criteria, same runs."""
    seeds = list(range(args.seeds))
    h = _h(20000 if args.quick else 60000, args.horizon_scale)
    kfs = [k for k in args.elo_k_factors if not args.quick or k in (4.0, 16.0)]
    kfs = kfs or list(args.elo_k_factors[:1])
    rows, keys, matches = [], {}, []
    for kf in kfs:
        cfg = None if kf == 4.0 else EloConfig(k_factor=kf)
        var = Variant("elo K=2 (random pairs)" if cfg is None else f"elo kf={kf:g}", "elo", 2, h, cfg)
        runs = store.all(var, 0.0, seeds, args.window)
        for name, thr, kind in ELO_CRITERIA:
            got = [first_stable_below(np.array(r["curve"]), np.array(r["votes"]), args.window, thr)
                   if kind == "window" else first_touch(np.array(r["curve"]), np.array(r["votes"]), thr)
                   for r in runs]
            finite = [g for g in got if g is not None]
            med = median_votes(got)
            in_range = bool(finite) and len(finite) == len(got) and min(finite) <= PAPER_ELO <= max(finite)
            near = not math.isinf(med) and abs(med - PAPER_ELO) <= 0.25 * PAPER_ELO
            if in_range or near:
                matches.append(f"kf{kf:g}:{name.split(':')[0].split(' ')[0]}")
            rows.append({"k_factor": kf, "criterion": name, "horizon": h,
                         "converged": f"{len(finite)}/{len(got)}", "median": fmt(med),
                         "per_seed": ", ".join("-" if g is None else str(g) for g in got),
                         "paper_11692_in_seed_range": in_range,
                         "median_within_25pct_of_11692": near})
    keys["elo_criteria_matching_11692"] = ",".join(matches) if matches else "none"
    strict = [r for r in rows if r["criterion"].startswith("strict")]
    keys["elo_strict_best_median"] = min((r["median"] for r in strict),
                                         key=lambda x: math.inf if x == "inf" else float(x))
    return rows, keys


def kwise(args: KSortBenchConfig, store: Runs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """K-Sort (pivot + UCB, rank votes, noise 0) at K = kwise_k under the three readings."""
    seeds = list(range(args.seeds))
    labels = {"simultaneous": "[paper]", "sequential": "[inferred]", "damped": "[ours]"}
    rows, keys = [], {}
    first_negative = {}
    for reading in KWISE_READINGS:
        cfg = KSortConfig(kwise_update=reading)
        for k in args.kwise_k:
            h = _h(4000 if k == 2 else 2500, args.horizon_scale)
            var = Variant(f"ksort K={k} ({reading})", "ksort", int(k), h,
                          None if reading == "simultaneous" else cfg)
            runs = store.all(var, 0.0, seeds, args.window)
            shrink = prior_shrink(int(k), cfg)
            if shrink <= 0 and reading not in first_negative:
                first_negative[reading] = int(k)
            neg = sum(r["negative_variance_votes"] for r in runs)
            total = sum(r["n_votes"] for r in runs)
            med = median_votes([r["votes_to_converge"] for r in runs])
            rows.append({"K": int(k), "reading": f"{reading} {labels[reading]}",
                         "first_vote_var_factor": round(shrink, 3),
                         "negative_at_first_vote": shrink <= 0,
                         "votes_with_raw_var<=0": f"{neg}/{total}",
                         "converged": f"{sum(r['votes_to_converge'] is not None for r in runs)}/{len(runs)}",
                         "median": fmt(med), "per_seed": _votes_text(runs),
                         "final_mse_mean": round(float(np.mean([r["final_mse"] for r in runs])), 3)})
            keys[f"kwise_{reading}_k{int(k)}_median"] = fmt(med)
    for reading in KWISE_READINGS:
        keys[f"kwise_{reading}_negative_from_k"] = first_negative.get(reading, "none")
    return rows, {k: v for k, v in keys.items() if "_k6_" in k or k.endswith("_from_k")}


def best_mode(args: KSortBenchConfig, store: Runs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Best-of-K votes, with the measurements that tell where their convergence fails."""
    seeds = list(range(args.seeds))
    h = _h(8000, args.horizon_scale)
    tau = 25.0 / 300.0
    rows_def = [
        ("K=4 rank (reference)", 4, "rank", None, "native"),
        ("K=4 best", 4, "best", None, "native"),
        ("K=4 best, sequential reading", 4, "best", KSortConfig(kwise_update="sequential"), "native"),
        (f"K=4 best, tau={tau:.3g}", 4, "best", KSortConfig(tau=tau), "native"),
        ("K=4 best, random groups", 4, "best", None, "random"),
        ("K=3 best", 3, "best", None, "native"),
        ("K=2 best (= rank)", 2, "best", None, "native"),
    ]
    rows, keys = [], {}
    for label, k, mode, cfg, mm in rows_def:
        var = Variant(f"ksort {label}", "ksort", k, h if mode == "best" else _h(2500, args.horizon_scale),
                      cfg, matchmaker=mm, vote_mode=mode, diagnostics=True)
        runs = store.all(var, 0.0, seeds, args.window)
        swapped = sum(len(r["swapped_neighbours"]) for r in runs)
        compared = sum(sum(1 for d in r["swapped_neighbours_direct"] if d > 0) for r in runs)
        direct = [d for r in runs for d in r["swapped_neighbours_direct"] if d > 0]
        never = [len(r["adjacent_pairs_never"]) for r in runs]
        row = {"variant": label, "horizon": var.max_votes,
               "constraints_per_vote": constraints_per_vote(k, mode),
               "bits_per_vote": round(math.log2(k if mode == "best" else math.factorial(k)), 2),
               "converged": f"{sum(r['votes_to_converge'] is not None for r in runs)}/{len(runs)}",
               "median": fmt(median_votes([r["votes_to_converge"] for r in runs])),
               "capped_converged": f"{sum(r['capped_votes_to_converge'] is not None for r in runs)}"
                                   f"/{len(runs)}",
               "final_mse_mean": round(float(np.mean([r["final_mse"] for r in runs])), 3),
               "final_mse_by_mu_mean": round(float(np.mean([r["final_mse_mu"] for r in runs])), 3),
               "min_mse_mean": round(float(np.mean([min(r["curve"]) for r in runs])), 3),
               "neighbours_never_compared_mean": round(float(np.mean(never)), 1),
               "reversed_neighbours": swapped,
               "reversed_but_compared": compared,
               "compared_times_median": float(np.median(direct)) if direct else "-",
               "bottom_block_error_share": round(float(np.mean([r["bottom_error_share"] for r in runs])), 2)}
        rows.append(row)
        if label == "K=4 best":
            keys.update(best_converged=row["converged"], best_capped_converged=row["capped_converged"],
                        best_reversed_neighbours=swapped, best_reversed_but_compared=compared,
                        best_final_mse_mean=row["final_mse_mean"],
                        best_final_mse_by_mu_mean=row["final_mse_by_mu_mean"])
    return rows, keys


def body(run: BenchRun) -> dict[str, Any]:
    cfg: KSortBenchConfig = run.config
    t0 = time.perf_counter()
    store = Runs()
    res = bench(cfg, store)
    run.table("convergence", convergence_rows(res), f"Votes to convergence (50 models, window {cfg.window}, "
              f"{cfg.seeds} seeds; inf = not within the horizon)")
    if res["fig6"]:
        run.table("add_model", add_model_rows(res),
                  "Add a model to a converged board (true rank 31; settled = at rank 31 for 20 votes)")
    run.path("bench.json").write_text(json.dumps(res, default=str))
    if cfg.plot:
        plot(res, run.path("convergence.png"))
    ks, elo = pick(res, "ksort K=4 (similar)", 0.0), pick(res, "elo", 0.0)
    ratio = elo["median"] / ks["median"]
    print(f"\nElo: K-factor 4, base 10, scale 400, init 1000, random pairs, horizon {elo['horizon']}; "
          f"window {cfg.window}; total {time.perf_counter() - t0:.0f} s")
    summary: dict[str, Any] = {
        "ksort_k4_median_votes": fmt(ks["median"]), "elo_median_votes": fmt(elo["median"]),
        "ratio": fmt(ratio) if math.isinf(ratio) else f"{ratio:.1f}",
    }
    if math.isinf(ratio):  # a censored Elo median (no convergence within the horizon) still bounds the ratio
        summary["ratio_lower_bound"] = f"{elo['horizon'] / ks['median']:.1f}"
    summary.update(elo_converged=f"{elo['converged']}/{cfg.seeds}", window=cfg.window, seeds=cfg.seeds)
    if cfg.seeds < 2:
        print("one seed: no intervals, no claims (run --seeds 2 or more)")
    for noise in cfg.noise:
        ks_n, elo_n = pick(res, "ksort K=4 (similar)", noise), pick(res, "elo", noise)
        est, censored = votes_saved(ks_n, elo_n)
        if est is None:
            continue
        name = "votes_saved" + ("" if noise == 0 else f"_noise{noise * 100:g}pct")
        what = f"K-Sort K=4 needs fewer votes than Elo at noise {noise:g}" + (
            f" ({censored} Elo runs censored at {elo_n['horizon']}: a lower bound)" if censored else "")
        summary.update(run.claim(name, est, what=what))
        summary[f"{name}_censored"] = censored
    if cfg.decomposition:
        summary.update(decomposed(run, cfg, store, res))
    return summary


def decomposed(run: BenchRun, cfg: KSortBenchConfig, store: Runs, res: dict[str, Any]) -> dict[str, Any]:
    """The issue-18 tables: ratios, decomposition, Elo criteria, K-wise readings, best mode."""
    keys: dict[str, Any] = {}
    t0 = time.perf_counter()
    rows, k = ratio_rows(cfg, store)
    keys.update(k)
    run.table("ratios", rows, "K-Sort K=4 vs Elo K=2: per vote and per pairwise comparison, paired "
              f"by seed ({cfg.seeds} seeds; geometric mean, 95% t-CI of log ratio; >= = Elo censored)")
    cell_rows, rows, k = decomposition(cfg, store)
    keys.update(k)
    run.table("decomposition_cells", cell_rows, "Decomposition cells (noise 0): votes to converge")
    run.table("decomposition", rows, "Decomposition: each factor's ratio with the other three held "
              "fixed (numerator votes / denominator votes, paired by seed)")
    rows, k = elo_criteria(cfg, store)
    keys.update(k)
    run.table("elo_criteria", rows, f"Elo (random pairs, noise 0) under convergence criteria; paper: "
              f"{PAPER_ELO:,} votes")
    rows, k = kwise(cfg, store)
    keys.update(k)
    run.table("kwise", rows, "K-wise variance update readings (K-Sort, pivot + UCB, rank votes, noise 0)")
    rows, k = best_mode(cfg, store)
    keys.update(k)
    run.table("best_mode", rows, "Best-of-K votes: convergence and diagnosis (noise 0)")
    res["decomposition_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"decomposition tables: {time.perf_counter() - t0:.0f} s (runs in total {store.seconds:.0f} s)",
          flush=True)
    return keys


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv,
        bench="bench_ksort",
        description=__doc__.splitlines()[0],
        config_cls=KSortBenchConfig,
        body=body,
        **shorthands(Shorthand("--seeds", "seeds", int, "number of seeds (true rankings)"),
                     Shorthand("--quick", "quick", const=True, help="K-Sort and Elo only, Elo horizon 20k")),
    )


if __name__ == "__main__":
    sys.exit(main())
