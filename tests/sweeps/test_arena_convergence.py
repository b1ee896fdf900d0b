"""arena_convergence end to end: votes and leaderboards land in Parquet, grids repeat by seed."""
from __future__ import annotations

import json

import pytest

from actors.arena_task import ArenaTaskConfig
from cluster.results import read_table
from methods.errors import ConfigError
from sweeps import arena_convergence as ac

TINY = ["--set", 'arms=["ksort:4", "elo:2"]', "--set", "noises=[0.0, 0.1]",
        "--set", "replicates=1", "--set", "task.n_models=10", "--set", "task.window=30",
        "--set", "task.max_votes=400", "--set", "task.horizons={elo=1500}", "--set", "task.board_every=20",
        "--set", "task.random_batch_votes=100"]


def _run(tmp_path, run_id, *extra):
    rc = ac.main(["--out", str(tmp_path), "--run-id", run_id, "--no-progress", *TINY, *extra])
    table = read_table(tmp_path / "arena_convergence" / run_id).to_pylist()
    return rc, table


def _by_trial(rows, kind):
    out: dict[tuple, list] = {}
    for r in rows:
        if r["row_kind"] == kind:
            out.setdefault((r["arm"], r["noise"], r["replicate"]), []).append(r)
    return out


def test_tiny_grid_lands_votes_and_leaderboards_and_repeats_by_seed(ray_local, tmp_path, capsys):
    rc, rows = _run(tmp_path, "a")
    out = capsys.readouterr().out
    assert rc == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("summary: ") and "ksort_k4_median_votes=" in last and "ratio=" in last
    assert (tmp_path / "arena_convergence" / "a" / "convergence_curves.png").stat().st_size > 0

    trials = {k: v[0] for k, v in _by_trial(rows, "trial").items()}
    votes, boards = _by_trial(rows, "vote_batch"), _by_trial(rows, "leaderboard")
    assert len(trials) == 4 and all(t["state"] == "COMPLETE" for t in trials.values())
    for key, t in trials.items():
        # every applied vote is in the vote rows, and the last board is the trial's final state
        assert sum(r["batch_size"] for r in votes[key]) == t["n_votes"]
        assert sum(len(json.loads(r["ranks"])) for r in votes[key]) == t["n_votes"]
        last_board = max(boards[key], key=lambda r: r["step"])
        assert last_board["votes_total"] == t["n_votes"] and last_board["rank_mse"] == t["final_mse"]
        assert len(json.loads(last_board["ranking"])) == 10
        if t["votes_to_converge"] is not None:  # the MSE is zero from there to the end
            tail = [b["rank_mse"] for b in boards[key] if b["votes_total"] >= t["votes_to_converge"]]
            assert tail and all(m == 0 for m in tail)
    assert trials[("ksort:4", 0.0, 0)]["votes_to_converge"] is not None

    # same grid again, each trial cut into 3 chunks (arena checkpoints between them): same rows
    rc2, rows2 = _run(tmp_path, "b", "--set", "study.n_chunks=3")
    assert rc2 == 0
    trials2 = {k: v[0] for k, v in _by_trial(rows2, "trial").items()}
    assert {k: (t["votes_to_converge"], t["n_votes"], t["final_mse"]) for k, t in trials.items()} == \
           {k: (t["votes_to_converge"], t["n_votes"], t["final_mse"]) for k, t in trials2.items()}
    pick = lambda rs: sorted((r["step"], r["matches"], r["ranks"]) for r in rs)  # noqa: E731
    assert all(pick(votes[k]) == pick(_by_trial(rows2, "vote_batch")[k]) for k in trials)


@pytest.mark.slow  # ~8-12 s on a loaded 2-core machine; the grid test covers the farm path
def test_optuna_mode_tunes_alpha_and_flip_probability(ray_local, tmp_path, capsys):
    rc = ac.main(["--out", str(tmp_path), "--run-id", "t", "--no-progress", "--sampler", "tpe",
                  "--max-trials", "3", "--set", "task.n_models=8", "--set", "task.window=20",
                  "--set", "task.max_votes=300", "--set", "task.tune_replicates=1"])
    out = capsys.readouterr().out
    assert rc == 0 and "best_votes=" in out.strip().splitlines()[-1]
    trials = [r for r in read_table(tmp_path / "arena_convergence" / "t").to_pylist()
              if r["row_kind"] == "trial"]
    assert len(trials) == 3
    assert all(0 <= t["alpha"] <= 3 and 0 <= t["flip_prob"] <= 0.2 for t in trials)
    assert all(1 <= t["votes"] <= 300 for t in trials)


def test_bad_config_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="ranker:K"):
        ac.ArenaConvergenceConfig(arms=("ksort",))
    with pytest.raises(ConfigError, match="tune must name"):
        ac.ArenaConvergenceConfig(tune=("gamma_ray",))
    with pytest.raises(ConfigError, match="tune_arm"):
        ac.ArenaConvergenceConfig(task=ArenaTaskConfig(tune_arm="elo:2"), tune=("alpha",))
    rc = ac.main(["--out", str(tmp_path), "--set", 'arms=["elk:2"]'])
    assert rc == 2 and "elo" in capsys.readouterr().err
    # what every trial shares is the task's config, validated there and set under `task.`
    with pytest.raises(ConfigError, match="window=0"):
        ArenaTaskConfig(window=0)
    rc = ac.main(["--out", str(tmp_path), "--set", "n_models=10"])
    assert rc == 2 and "task.n_models" in capsys.readouterr().err
    # the run owns the voter pool and the seed: a config that sets them would be overwritten silently
    rc = ac.main(["--out", str(tmp_path), "--set", 'task.pool_id="mine"', "--set", "task.study_seed=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "task.pool_id, task.study_seed: set by the sweep" in err and "study.seed" in err
    assert not (tmp_path / "arena_convergence").exists()
