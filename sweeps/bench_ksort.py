"""Benchmark: K-Sort Arena's votes-to-convergence against its baselines (pure Python, no Ray).

    python sweeps/bench_ksort.py                  # 5 seeds, noise 0 and 5 %, ~3–5 min on one core
    python sweeps/bench_ksort.py --seeds 3 --quick
    python sweeps/bench_ksort.py --seeds 2 --quick --set 'noise=[0.0]' --set window=20 --set plot=false

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
from methods.ksort import KSortConfig
from methods.metrics.stats import paired_difference
from sims.arena import run_add_model, run_convergence


@dataclass(frozen=True)
class KSortBenchConfig:
    seeds: int = 5
    noise: tuple[float, ...] = (0.0, 0.05)  # flip-noise levels
    window: int = 200  # converged = rank MSE zero for this many consecutive votes
    quick: bool = False  # K-Sort and Elo only, Elo horizon 20k, no add-a-model part
    plot: bool = True
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


@dataclass(frozen=True)
class Variant:
    label: str
    ranker: str
    K: int
    max_votes: int
    config: Any = None
    matchmaker: str = "native"
    eval_every: int = 1


def variants(quick: bool) -> list[Variant]:
    h = 2500
    rows = [
        Variant("ksort K=2 (similar)", "ksort", 2, 4000),
        Variant("ksort K=4 (similar)", "ksort", 4, h),
        Variant("ksort K=6 (similar)", "ksort", 6, h),
        Variant("ksort K=6 (similar, WL gamma)", "ksort", 6, h, KSortConfig(gamma=True)),
        Variant("ksort K=4 (printed +|dS|)", "ksort", 4, h, KSortConfig(ucb_reading="printed")),
        Variant("ksort K=4 (random opponents)", "ksort", 4, h, KSortConfig(opponents="random")),
        Variant("elo K=2 (random pairs)", "elo", 2, 20000 if quick else 60000),
        Variant("bradley_terry K=2 (random)", "bradley_terry", 2, 8000, eval_every=5),
        Variant("trueskill K=4 (random)", "trueskill", 4, h),
        Variant("trueskill K=4 (UCB)", "trueskill", 4, h, matchmaker="ucb"),
        Variant("openskill TMFull K=4 (UCB)", "openskill", 4, h, matchmaker="ucb"),
    ]
    if quick:
        rows = [r for r in rows if r.ranker in ("ksort", "elo")]
    return rows


def median_votes(values: list[int | None]) -> float:
    return float(np.median([math.inf if v is None else v for v in values]))


def fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.0f}"


def bench(args: KSortBenchConfig) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    table: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list]] = {}
    for var in variants(args.quick):
        for noise in args.noise:
            t0 = time.perf_counter()
            runs = [run_convergence(var.ranker, var.K, noise, s, var.max_votes, args.window,
                                    config=var.config, matchmaker=var.matchmaker,
                                    eval_every=var.eval_every) for s in seeds]
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
            runs = [run_add_model("ksort", 4, s, pivot=pivot, opponents=opp, max_new_votes=300)
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


def body(run: BenchRun) -> dict[str, Any]:
    cfg: KSortBenchConfig = run.config
    t0 = time.perf_counter()
    res = bench(cfg)
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
    return summary


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
