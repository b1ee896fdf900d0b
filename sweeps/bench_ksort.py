"""Benchmark: K-Sort Arena's votes-to-convergence against its baselines (pure Python, no Ray).

    python sweeps/bench_ksort.py                  # 5 seeds, noise 0 and 5 %, ~3–5 min on one core
    python sweeps/bench_ksort.py --seeds 3 --quick

Paper: "K-Sort Arena" (Li et al., arXiv 2408.14468), Table 1 and Figs. 3–6: 716 votes for K-Sort
K = 4 against 11,692 for Elo (16.3× fewer). Protocol (sims/arena.py): 50 models with shuffled true
ranks, flip noise 0 or 5 % (one random adjacent swap for K > 2), "converged" = the first vote after
which the rank MSE stays zero for `--window` consecutive votes. Elo uses Chatbot Arena's settings
(K-factor 4, base 10, scale 400, init 1000) with random pairs. A run that does not converge within
its horizon counts as +inf in the medians (so a median is a lower bound when shown as "inf").

Writes bench.json, run.json and convergence.png into results/bench_ksort/<run_id>/; the last line
is `summary: ksort_k4_median_votes=... elo_median_votes=... ratio=...` (noise 0).
"""
from __future__ import annotations

import argparse
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

from cluster.rundir import create_run_dir, environment_record, resolve_results_root, write_run_json
from methods.ksort import KSortConfig
from sims.arena import run_add_model, run_convergence


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


def bench(args: argparse.Namespace) -> dict[str, Any]:
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


def print_table(res: dict[str, Any], n_seeds: int, window: int) -> None:
    print(f"\nVotes to convergence (50 models, window {window}, {n_seeds} seeds; "
          f"inf = not within the horizon)")
    print(f"{'variant':<32} {'noise':>5} {'horizon':>7} {'conv':>5} {'median':>7}  per seed")
    for r in res["table"]:
        votes = ", ".join("-" if v is None else str(v) for v in r["votes"])
        print(f"{r['variant']:<32} {r['noise']:>5} {r['horizon']:>7} "
              f"{r['converged']:>2}/{n_seeds:<2} {fmt(r['median']):>7}  {votes}")
    if res["fig6"]:
        print("\nAdd a model to a converged board (true rank 31; settled = at rank 31 for 20 votes)")
        for r in res["fig6"]:
            votes = ", ".join("-" if v is None else str(v) for v in r["votes_to_settle"])
            print(f"{r['matchmaking']:<28} median={fmt(r['median']):>5}  per seed: {votes}  "
                  f"start ranks {r['start_rank']}")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05])
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="K-Sort and Elo only, Elo horizon 20k")
    p.add_argument("--out", default=None, help="results root (default ./results)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    root = resolve_results_root(args.out)
    run_dir = create_run_dir(root.path, "bench_ksort")
    print(f"run_dir: {run_dir} ({root.reason})", flush=True)
    t0 = time.perf_counter()
    res = bench(args)
    print_table(res, args.seeds, args.window)
    (run_dir / "bench.json").write_text(json.dumps(res, default=str))
    write_run_json(run_dir, {"sweep": "bench_ksort", "args": vars(args), **environment_record()})
    if not args.no_plot:
        plot(res, run_dir / "convergence.png")
    ks = next(r for r in res["table"] if r["variant"].startswith("ksort K=4 (similar)") and r["noise"] == 0)
    elo = next(r for r in res["table"] if r["variant"].startswith("elo") and r["noise"] == 0)
    ratio = elo["median"] / ks["median"]
    # a censored Elo median (no convergence within the horizon) still bounds the ratio from below
    bound = f" ratio_lower_bound={elo['horizon'] / ks['median']:.1f}" if math.isinf(ratio) else ""
    print(f"\nElo: K-factor 4, base 10, scale 400, init 1000, random pairs, horizon {elo['horizon']}; "
          f"window {args.window}; total {time.perf_counter() - t0:.0f} s")
    print(f"summary: ksort_k4_median_votes={fmt(ks['median'])} elo_median_votes={fmt(elo['median'])} "
          f"ratio={fmt(ratio) if math.isinf(ratio) else f'{ratio:.1f}'}{bound} "
          f"elo_converged={elo['converged']}/{args.seeds} window={args.window} seeds={args.seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
