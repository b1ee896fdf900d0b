"""K-Sort Arena's convergence protocol and add-a-model experiment (sims/arena.py)."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.ksort import KSortConfig
from sims.arena import (
    estimated_positions,
    first_stable_zero,
    rank_mse,
    run_add_model,
    run_convergence,
)
from sims.voters import VoterConfig


def test_rank_mse_and_positions():
    assert estimated_positions(np.array([1.0, 3.0, 2.0])).tolist() == [2, 0, 1]
    assert rank_mse(np.array([3.0, 2.0, 1.0]), np.array([0, 1, 2])) == 0.0
    assert rank_mse(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 2])) == pytest.approx(8 / 3)


def test_first_stable_zero_window():
    mse = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    votes = np.arange(1, 9)
    assert first_stable_zero(mse, votes, 3) == 5
    assert first_stable_zero(mse, votes, 2) == 2
    assert first_stable_zero(mse, votes, 5) is None


def test_convergence_run_is_deterministic_and_reports_the_protocol():
    a = run_convergence("ksort", 4, 0.05, seed=1, max_votes=2500, window=200)
    b = run_convergence("ksort", 4, 0.05, seed=1, max_votes=2500, window=200)
    assert a["curve"] == b["curve"] and a["votes_to_converge"] == b["votes_to_converge"]
    conv = a["votes_to_converge"]
    assert conv is not None
    curve = np.array(a["curve"])
    assert np.all(curve[conv - 1:conv - 1 + 200] == 0) and curve[conv - 2] > 0
    assert a["n_votes"] == conv + 199  # the run stops once the window is complete


def test_ksort_converges_where_elo_does_not():
    ks = run_convergence("ksort", 4, 0.0, seed=0, max_votes=2500, window=200)
    elo = run_convergence("elo", 2, 0.0, seed=0, max_votes=2500, window=200)
    assert ks["votes_to_converge"] is not None
    assert elo["votes_to_converge"] is None and elo["final_mse"] > 0


def test_printed_ucb_reading_does_not_converge():
    out = run_convergence("ksort", 4, 0.0, seed=0, max_votes=2000, window=200,
                          config=KSortConfig(ucb_reading="printed"))
    assert out["votes_to_converge"] is None


def test_adversarial_voters_slow_convergence():
    def votes(adv):
        got = []
        for seed in range(3):
            vc = VoterConfig(n_models=50, adversarial_share=adv, seed=seed)
            v = run_convergence("ksort", 4, 0.0, seed, 2000, 200, voter_config=vc)["votes_to_converge"]
            got.append(np.inf if v is None else v)
        return np.median(got)

    assert votes(0.1) > votes(0.0)


def test_added_model_settles_quickly_with_fewest_pivot_and_ucb():
    out = run_add_model("ksort", 4, seed=0, new_true_rank=31, max_new_votes=150)
    assert out["start_rank"] > 40 and out["true_rank"] == 31
    assert out["votes_to_settle"] is not None and out["votes_to_settle"] <= 50
    assert out["new_rank"][out["votes_to_settle"]] == 31


def test_bad_arguments():
    with pytest.raises(ConfigError):
        run_convergence("ksort", 4, 1.5, 0, 10)
    with pytest.raises(ConfigError):
        run_convergence("ksort", 4, 0.0, 0, 10, matchmaker="swiss")
    with pytest.raises(ConfigError):
        run_add_model(new_true_rank=60)
