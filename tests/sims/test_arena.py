"""K-Sort Arena's convergence protocol and add-a-model experiment (sims/arena.py)."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.ksort import KSortConfig
from sims.arena import (
    capped_mse,
    constraints_per_vote,
    estimated_positions,
    first_stable_below,
    first_stable_zero,
    first_touch,
    rank_mse,
    run_add_model,
    run_convergence,
)
from sims.voters import VoterConfig, VoterPopulation


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


# --- looser criteria, constraints per vote, best-mode diagnostics (issue 18) -------------------
def test_first_stable_below_and_first_touch():
    mse = np.array([3.0, 0.8, 0.4, 1.2, 1.0, 0.0, 0.5, 0.0, 0.0])
    votes = np.arange(1, 10)
    assert first_stable_below(mse, votes, 3, 1.0) == 5  # 1.0, 0.0, 0.5, ... all ≤ 1 (≤, not <)
    assert first_stable_below(mse, votes, 2, 1.0) == 2  # 0.8, 0.4
    assert first_stable_below(mse, votes, 2, 0.0) == 8
    assert first_stable_below(mse, votes, 3, 0.0) is None
    assert first_stable_below(mse, votes, 3, 0.0) == first_stable_zero(mse, votes, 3)
    assert first_touch(mse, votes) == 6 and first_touch(mse, votes, 1.0) == 2
    assert first_touch(mse, votes, -1.0) is None


@pytest.mark.parametrize("k", [2, 3, 4, 6])
@pytest.mark.parametrize("mode", ["rank", "best"])
def test_every_simulated_vote_carries_the_stated_constraints(k, mode):
    voters = VoterPopulation(VoterConfig(n_models=10, flip_prob=0.3, vote_mode=mode, seed=3))
    rng = np.random.default_rng(0)
    for _ in range(30):
        match = [voters.names[i] for i in rng.choice(10, size=k, replace=False)]
        d = voters.vote(match).constraint_matrix()
        assert int((d > 0).sum()) == constraints_per_vote(k, mode)
    assert constraints_per_vote(4, "rank") == 6 and constraints_per_vote(4, "best") == 3
    with pytest.raises(ConfigError):
        constraints_per_vote(1)
    with pytest.raises(ConfigError):
        constraints_per_vote(4, "pairs")


def test_capped_mse_merges_the_bottom_block():
    true = np.array([0, 1, 2, 3, 4])
    bottom_shuffled = np.array([5.0, 4.0, 1.0, 3.0, 2.0])  # places 0, 1 right; 2–4 scrambled
    assert rank_mse(bottom_shuffled, true) > 0
    assert capped_mse(bottom_shuffled, true, cap=2) == 0.0
    assert capped_mse(bottom_shuffled, true, cap=3) > 0
    top_swapped = np.array([4.0, 5.0, 3.0, 2.0, 1.0])
    assert capped_mse(top_swapped, true, cap=2) == pytest.approx(2 / 5)


def test_best_votes_never_compare_the_bottom_neighbours():
    """No K-group lets one of the bottom K−1 models win, so best mode never orders them."""
    k, n = 4, 20
    best = run_convergence("ksort", k, 0.0, seed=0, max_votes=600, window=50, n_models=n,
                           vote_mode="best", diagnostics=True)
    rank = run_convergence("ksort", k, 0.0, seed=0, max_votes=600, window=50, n_models=n,
                           diagnostics=True)
    assert best["vote_mode"] == "best" and best["cap"] == n - (k - 1)
    assert {n - 3, n - 2} <= set(best["adjacent_pairs_never"])
    assert rank["adjacent_pairs_never"] == [] and rank["adjacent_pairs_compared"] == n - 1
    for out in (best, rank):  # reversed neighbours are exactly what keeps the MSE above zero
        assert (out["final_mse"] == 0) == (out["swapped_neighbours"] == [])
        assert len(out["swapped_neighbours_direct"]) == len(out["swapped_neighbours"])
        assert len(out["capped_curve"]) == len(out["curve"])
        assert all(c <= m for c, m in zip(out["capped_curve"], out["curve"], strict=True))
