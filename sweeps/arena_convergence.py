"""K-Sort Arena's convergence experiment through the farm: arm (ranker, K) × noise × replicate.

    python sweeps/arena_convergence.py                # 7 arms × 2 noises × 3 replicates (3–4 min, 2 cores)
    python sweeps/arena_convergence.py --quick        # K-Sort K=4 vs Elo, noise 0, 3 replicates (1–2 min)
    python sweeps/arena_convergence.py --sampler tpe --max-trials 20   # tune α and the noise model
    python sweeps/arena_convergence.py --quick --set task.n_models=20 --set task.window=100

Grid flags (`arms`, `noises`, `replicates`, `tune`) are top-level `--set` keys; what every trial
shares (the ArenaTaskConfig of actors/arena_task.py) is set under `task.`.

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468), §4, Table 1 (716 votes for K-Sort K = 4 against 11,692
for Elo, 16.3× fewer) and Figs. 3–4. Follows the paper: 50 simulated models with shuffled true
ranks, 0 % and 5 % inconsistency noise, rank MSE against the truth, "converged" = the first vote
after which the MSE stays zero for a window (the paper states none; we use `task.window` = 200
votes).

Our own design [inferred]:
- Each grid trial is one convergence run of the task `actors/arena_task.py`: an `ArenaOwner`
  (actors/arena_voter.py) on an evaluator actor owns the ranker and asks the run's shared
  `ArenaVoter` actors for votes. Rows "vote_batch" (matches and votes) and "leaderboard" (rank
  MSE, top-k overlap, the board every `task.board_every` votes) land in the run's Parquet; a
  trial row carries the votes to convergence.
- An arm is "ranker:K" (any registered ranker, any K); the default arms are K-Sort at K = 2, 4, 6
  and each baseline at the K of the reference re-simulation (Elo and Bradley–Terry pairwise, as in
  Table 1; TrueSkill and OpenSkill at K = 4). Baselines use their native random matchmaking.
- Truth seed of replicate r = r + 1000·study.seed (base seed 0: the truths of
  sweeps/bench_ksort.py); matchmaking draws from (truth seed, 7) as in sims/arena.py. With noise 0
  the votes are deterministic, so the farm reproduces the pure runner vote for vote.
- Batches: K-Sort's pivot + UCB reads the current state, and matches proposed from a stale state
  repeat (measured, seeds 0–4, K = 4, noise 0: 1 vote/batch converges at 557–1,099 votes, 2/batch
  at 619–1,468 or never, 4/batch 1 of 5 within 3,000), so `task.batch_votes` = 1 for it. Random
  matchmaking does not read the state: `task.random_batch_votes` votes per batch change nothing.
- Horizons: `task.max_votes` (2,500) for every ranker, except those in `task.horizons` (Elo
  60,000, Bradley–Terry 6,000, scored every `task.bt_eval_every` = 5 votes because its scores
  refit). A run that does not converge counts as +inf in the medians and as its horizon in the
  Optuna objective.
- Elo settings: Chatbot Arena's online Elo (K-factor 4, base 10, scale 400, init 1000), random pairs.
- Optuna mode (any sampler but grid): one arm (`task.tune_arm`), the parameters named in `tune`
  taken from K-Sort's and the voters' search spaces (default α and the flip probability), each trial
  the mean votes to convergence over `task.tune_replicates` fixed truths (common random numbers).
- Resources: on 2 CPUs the owners (profile voter_cpu_half, 0.5 CPU) and 2 voter actors (0.5 CPU)
  fill the machine; the owner waits while the voters vote, so nothing is oversubscribed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/arena_convergence.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from actors.arena_task import ArenaTaskConfig, parse_arm
from actors.task import task_factory
from cluster.resources import actor_options
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import format_table, run_sweep
from methods import ksort
from methods.errors import ConfigError
from sims import voters as voters_mod

SWEEP = "arena_convergence"
#: task fields the sweep fills in per run (build_spec); a config that sets them is refused
RUN_OWNED = ("pool_id", "voter_options", "study_seed")
VOTER_PROFILE = "voter_cpu_half"  # the shared voter actors' profile, resolved here for the pool
DEFAULT_ARMS = ("ksort:2", "ksort:4", "ksort:6", "elo:2", "bradley_terry:2", "trueskill:4",
                "openskill:4")
QUICK = ['arms=["ksort:4", "elo:2"]', "noises=[0.0]", "replicates=3"]


def tune_space(tune: tuple[str, ...]) -> dict[str, tuple]:
    """The named parameters from K-Sort's and the voters' search spaces."""
    known = {**ksort.search_space(), **voters_mod.search_space()}
    unknown = [t for t in tune if t not in known]
    if unknown or not tune:
        raise ConfigError(f"tune must name parameters from {sorted(known)}, got {list(tune)}.")
    return {t: known[t] for t in tune}


@dataclass(frozen=True)
class ArenaConvergenceConfig:
    """The grid (arms × noises × replicates) or the Optuna `tune` space over one `task`.

    `task` is what every trial shares (actors/arena_task.py: n_models, window, horizons, batching,
    tune_arm, ...), set with `--set task.<field>=...`; build_spec fills in the run's voter pool and
    the study seed.
    """

    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="voter_cpu_half")
    task: ArenaTaskConfig = field(default_factory=ArenaTaskConfig)
    arms: tuple[str, ...] = DEFAULT_ARMS
    noises: tuple[float, ...] = (0.0, 0.05)
    replicates: int = 3
    tune: tuple[str, ...] = ("alpha", "flip_prob")
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"{SWEEP} config version 1 expected, got {self.version}.")
        default = ArenaTaskConfig()
        run_owned = [k for k in RUN_OWNED if getattr(self.task, k) != getattr(default, k)]
        if run_owned:
            raise ConfigError(
                f"task.{', task.'.join(run_owned)}: set by the sweep for each run (the voter pool's "
                f"name and options, the seed from study.seed); leave these out, and use "
                f"--set study.seed=N for the seed."
            )
        for arm in self.arms:
            parse_arm(arm)
        if self.replicates < 1 or not self.arms or not self.noises:
            raise ConfigError(f"replicates must be ≥ 1 and arms/noises non-empty; got "
                              f"replicates={self.replicates!r}, arms={list(self.arms)}, "
                              f"noises={list(self.noises)}.")
        if any(not 0.0 <= p <= 1.0 for p in self.noises):
            raise ConfigError(f"noises are flip probabilities in [0, 1], got {list(self.noises)}.")
        tune_space(self.tune)
        tune_arm = self.task.tune_arm
        if parse_arm(tune_arm)[0] != "ksort" and set(self.tune) & set(ksort.search_space()):
            raise ConfigError(f"tune names K-Sort parameters {list(self.tune)} but task.tune_arm is "
                              f"{tune_arm!r}; tune voter parameters only, or use a ksort arm.")


def task_config(cfg: ArenaConvergenceConfig, pool_id: str, voter_options: dict[str, Any]) -> ArenaTaskConfig:
    """The sweep's task config with the run's voter pool and study seed filled in."""
    return replace(cfg.task, pool_id=pool_id, voter_options=dict(voter_options),
                   study_seed=cfg.study.seed)


# --- the sweep -------------------------------------------------------------------------------
def build_spec(cfg: ArenaConvergenceConfig) -> StudySpec:
    if cfg.study.sampler == "grid":
        space: dict[str, tuple] = {"arm": ("categorical", list(cfg.arms)),
                                   "noise": ("categorical", list(cfg.noises)),
                                   "replicate": ("categorical", list(range(cfg.replicates)))}
    else:
        if cfg.study.n_trials is None:
            raise ConfigError(f"sampler {cfg.study.sampler!r} needs a trial budget: pass "
                              f"--max-trials N (or --set study.n_trials=N).")
        space = tune_space(cfg.tune)
    return StudySpec(sweep=SWEEP, objectives=("votes",), directions=("minimize",), space=space,
                     task_factory=task_factory("arena_convergence", task_config(
                         cfg, uuid.uuid4().hex[:10], actor_options(VOTER_PROFILE))),
                     study=cfg.study)


def _rows(run_dir: Path, kind: str, columns: list[str]) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    from cluster.results import read_table

    table = read_table(run_dir)
    if "row_kind" not in table.column_names:
        return []
    table = table.filter(pc.equal(table["row_kind"], kind))
    return table.select([c for c in columns if c in table.column_names]).to_pylist()


def median_votes(values: list[float | None]) -> float:
    return float(np.median([math.inf if v is None else v for v in values])) if values else math.nan


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else "nan" if math.isnan(x) else f"{x:.0f}"


def convergence_table(trials: list[dict[str, Any]], cfg: ArenaConvergenceConfig) -> list[dict]:
    """One line per (arm, noise): median votes over replicates (+inf when a run did not converge)."""
    out = []
    for arm in cfg.arms:
        for noise in cfg.noises:
            runs = sorted((t for t in trials if t["arm"] == arm and t["noise"] == noise),
                          key=lambda t: t["replicate"])
            if not runs:
                continue
            votes = [t["votes_to_converge"] for t in runs]
            out.append({"arm": arm, "noise": noise, "horizon": runs[0]["horizon"],
                        "batch": runs[0]["batch_votes"],
                        "converged": f"{sum(v is not None for v in votes)}/{len(votes)}",
                        "median_votes": _fmt(median_votes(votes)),
                        "per_replicate": " ".join("-" if v is None else f"{v:.0f}" for v in votes),
                        "final_mse": float(np.mean([t["final_mse"] for t in runs]))})
    return out


def plot_curves(run_dir: Path, cfg: ArenaConvergenceConfig, boards: list[dict]) -> Path:
    """Rank MSE against votes, replicate 0, one panel per noise level."""
    from methods.plotting import new_figure, save_figure

    fig, axes = new_figure(1, len(cfg.noises), figsize=(6 * len(cfg.noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], cfg.noises, strict=True):
        for arm in cfg.arms:
            pts = sorted((b["votes_total"], b["rank_mse"]) for b in boards
                         if b["arm"] == arm and b["noise"] == noise and b["replicate"] == 0
                         and b["rank_mse"] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if "ksort" in arm else "--",
                        lw=1, label=arm)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_ylim(bottom=0.0)
        ax.set_xlabel("votes")
        ax.set_ylabel("rank MSE against the truth")
        ax.set_title(f"{cfg.task.n_models} models, noise {noise:g}, replicate 0")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, run_dir / "convergence_curves.png", dpi=120)


def report(run_dir: Path, cfg: ArenaConvergenceConfig, outcome: Any) -> dict[str, Any]:
    cols = ["arm", "noise", "replicate", "state", "votes", "votes_to_converge", "horizon",
            "batch_votes", "final_mse", "converged", "votes_per_run", *cfg.tune]
    trials = [t for t in _rows(run_dir, "trial", cols) if t["state"] == "COMPLETE"]
    if not trials:
        return {}
    if cfg.study.sampler != "grid":
        print(format_table(sorted(({k: t.get(k) for k in (*cfg.tune, "votes", "converged",
                                                        "votes_per_run")} for t in trials),
                                  key=lambda r: r["votes"])))
        return {"tune_arm": cfg.task.tune_arm, "tune_replicates": cfg.task.tune_replicates}
    table = convergence_table(trials, cfg)
    print(f"\nVotes to convergence ({cfg.task.n_models} models, MSE zero for {cfg.task.window} votes; "
          f"inf = not within the horizon)")
    print(format_table(table))
    (run_dir / "convergence_table.json").write_text(json.dumps(table, indent=1))
    boards = _rows(run_dir, "leaderboard", ["arm", "noise", "replicate", "votes_total", "rank_mse"])
    plot = plot_curves(run_dir, cfg, boards)
    print(f"plot: {plot}")
    print(f"Elo: K-factor 4, base 10, scale 400, init 1000, random pairs, horizon "
          f"{cfg.task.horizon('elo')}; window {cfg.task.window}")
    extras: dict[str, Any] = {"window": cfg.task.window, "replicates": cfg.replicates}
    noise0 = min(cfg.noises)

    def med(arm: str) -> float:
        return median_votes([t["votes_to_converge"] for t in trials
                             if t["arm"] == arm and t["noise"] == noise0])

    ks, elo = med("ksort:4"), med("elo:2")
    if not math.isnan(ks):
        extras["ksort_k4_median_votes"] = _fmt(ks)
    if not math.isnan(elo):
        extras["elo_median_votes"] = _fmt(elo)
    if not (math.isnan(ks) or math.isnan(elo)):
        ratio = elo / ks
        extras["ratio"] = "inf" if math.isinf(ratio) else f"{ratio:.1f}"
        if math.isinf(elo) and not math.isinf(ks):  # a censored Elo median still bounds the ratio
            extras["ratio_lower_bound"] = f"{cfg.task.horizon('elo') / ks:.1f}"
    return extras


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="K-Sort K=4 against Elo at noise 0 only, 3 replicates (1-2 minutes on 2 cores)")


def _config_from_args(args: argparse.Namespace) -> list[str]:
    out = list(QUICK) if args.quick else []
    if args.sampler not in (None, "grid") and args.max_trials is None:
        out.append("study.n_trials=16")  # an Optuna study needs a budget; 16 unless told
    return out


def main(argv: list[str] | None = None) -> int:
    return run_sweep(argv, sweep=SWEEP, description=__doc__.splitlines()[0],
                     config_cls=ArenaConvergenceConfig, build_spec=build_spec, report=report,
                     add_arguments=_add_arguments, config_from_args=_config_from_args)


if __name__ == "__main__":
    sys.exit(main())
