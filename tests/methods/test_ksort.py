"""K-Sort Arena's Bayesian update and matchmaking (methods/ksort.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.ksort import (
    KSortConfig,
    KSortRanker,
    kwise_update,
    pairwise_update,
    prior_shrink,
    propose_ucb,
    search_space,
    v_func,
    w_func,
)
from methods.ranking import Outcome, VoteError
from sims.arena import run_convergence

trueskill = pytest.importorskip("trueskill")

BETA = 25.0 / 6.0


@pytest.mark.parametrize("mw, sw, ml, sl", [
    (25.0, 25 / 3, 25.0, 25 / 3),   # equal players
    (30.0, 4.0, 20.0, 6.0),         # the favourite wins
    (18.0, 2.0, 33.0, 7.5),         # an upset
    (10.0, 1.0, 45.0, 1.0),         # a large upset: V(t) for very negative t must stay finite
])
def test_two_player_update_equals_trueskill_rate_1vs1(mw, sw, ml, sl):
    env = trueskill.TrueSkill(mu=25.0, sigma=25 / 3, beta=BETA, tau=0.0, draw_probability=0.0)
    tw, tl = env.rate_1vs1(env.create_rating(mw, sw), env.create_rating(ml, sl))
    (mu_w, s_w), (mu_l, s_l) = pairwise_update((mw, sw), (ml, sl), BETA)
    # trueskill's own erfc approximation is good to ~1e-7 relative
    assert mu_w == pytest.approx(tw.mu, rel=1e-5)
    assert s_w == pytest.approx(tw.sigma, rel=1e-5)
    assert mu_l == pytest.approx(tl.mu, rel=1e-5)
    assert s_l == pytest.approx(tl.sigma, rel=1e-5)


def test_pairwise_closed_form():
    mw, sw, ml, sl = 27.0, 5.0, 24.0, 7.0
    c = math.sqrt(2 * BETA**2 + sw**2 + sl**2)
    t = (mw - ml) / c
    v = math.exp(-t * t / 2) / math.sqrt(2 * math.pi) / (0.5 * math.erfc(-t / math.sqrt(2)))
    w = v * (v + t)
    (mu_w, s_w), (mu_l, s_l) = pairwise_update((mw, sw), (ml, sl), BETA)
    assert mu_w == pytest.approx(mw + sw**2 / c * v)
    assert mu_l == pytest.approx(ml - sl**2 / c * v)
    assert s_w**2 == pytest.approx(sw**2 * (1 - sw**2 / c**2 * w))
    assert s_l**2 == pytest.approx(sl**2 * (1 - sl**2 / c**2 * w))


def test_v_and_w_are_finite_and_in_range_for_extreme_t():
    t = np.array([-40.0, -10.0, 0.0, 10.0, 40.0])
    v, w = v_func(t), w_func(t)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(w))
    assert np.all((w >= 0) & (w <= 1))
    assert v[0] == pytest.approx(40.0, rel=1e-2)  # V(t) → −t as t → −∞


def test_kwise_with_k2_equals_pairwise():
    r = KSortRanker(["a", "b"])
    r.mu[:] = [26.0, 23.0]
    r.sigma[:] = [6.0, 3.0]
    (mu_b, s_b), (mu_a, s_a) = pairwise_update((23.0, 3.0), (26.0, 6.0), BETA, r.config.sigma_floor)
    r.update(["a", "b"], Outcome.full_ranking([1, 0]))
    np.testing.assert_allclose(r.mu, [mu_a, mu_b])
    np.testing.assert_allclose(r.sigma, [s_a, s_b])
    r2 = KSortRanker(["a", "b"])
    r2.mu[:], r2.sigma[:] = [26.0, 23.0], [6.0, 3.0]
    r2.update(["a", "b"], Outcome.best_of(2, 1))  # "best" and "rank" agree for K = 2
    np.testing.assert_allclose(r2.mu, r.mu)
    np.testing.assert_allclose(r2.sigma, r.sigma)


def test_kwise_update_sums_pairwise_terms_from_pre_vote_values():
    """Eqs. 9–10 for three models, written out term by term (an independent implementation)."""
    mu = np.array([24.0, 27.0, 22.0])
    sg = np.array([5.0, 4.0, 6.0])
    ranks = [1, 0, 2]
    new_mu, new_sg = kwise_update(mu, sg, Outcome.full_ranking(ranks).constraint_matrix(), BETA, 0.0)
    for i in range(3):
        dmu, dvar = 0.0, 0.0
        for q in range(3):
            if q == i:
                continue
            c = math.sqrt(2 * BETA**2 + sg[i] ** 2 + sg[q] ** 2)
            sign = 1.0 if ranks[i] < ranks[q] else -1.0
            t = sign * (mu[i] - mu[q]) / c
            dmu += sign * float(v_func(t)) / c
            dvar += float(w_func(t)) / c**2
        assert new_mu[i] == pytest.approx(mu[i] + sg[i] ** 2 * dmu)
        assert new_sg[i] ** 2 == pytest.approx(sg[i] ** 2 * (1 - sg[i] ** 2 * dvar))


def test_winner_mu_rises_and_losers_fall():
    names = ["a", "b", "c", "d"]
    r = KSortRanker(names)
    r.mu[:] = [20.0, 30.0, 25.0, 28.0]  # the winner "a" is the weakest: still must rise
    before = r.mu.copy()
    r.update(names, Outcome.best_of(4, 0))
    assert r.mu[0] > before[0]
    assert np.all(r.mu[1:] < before[1:])
    r = KSortRanker(names)
    r.update(names, Outcome.full_ranking([3, 0, 1, 2]))
    assert r.mu[1] > 25.0 and r.mu[0] < 25.0
    assert r.mu[1] > r.mu[2] > r.mu[3] > r.mu[0]
    assert np.all(r.sigma < r.config.sigma0)


def test_ties_carry_no_constraint():
    names = ["a", "b", "c"]
    r = KSortRanker(names)
    r.update(names, Outcome.best_of(3, None))
    np.testing.assert_array_equal(r.mu, [25.0] * 3)
    r.update(names, Outcome.full_ranking([0, 1, 1]))
    assert r.mu[1] == pytest.approx(r.mu[2])


@pytest.mark.parametrize("k", [4, 6, 8])
def test_sigma_never_below_floor(k):
    cfg = KSortConfig(floor_frac=0.05)
    names = [f"m{i}" for i in range(12)]
    r = KSortRanker(names, cfg)
    rng = np.random.default_rng(0)
    for _ in range(200):
        match = r.propose_match(k, rng)
        r.update(match, Outcome.full_ranking(rng.permutation(k).tolist()))
        assert r.sigma.min() >= cfg.sigma_floor - 1e-12
    if k >= 6:  # Eq. 10 alone would make σ² negative here: the floor is what holds it
        assert r.sigma.min() == pytest.approx(cfg.sigma_floor)


def test_gamma_damping_keeps_sigma_above_floor_for_k6():
    d = Outcome.full_ranking(list(range(6))).constraint_matrix()
    mu, sg = np.full(6, 25.0), np.full(6, 25 / 3)
    _, plain = kwise_update(mu, sg, d, BETA, 0.01 * 25 / 3)
    _, damped = kwise_update(mu, sg, d, BETA, 0.01 * 25 / 3, gamma=True)
    assert plain.min() == pytest.approx(0.01 * 25 / 3)  # collapsed onto the floor in one vote
    assert damped.min() > 0.3 * 25 / 3


def test_ucb_pivot_is_least_compared_model():
    names = [f"m{i}" for i in range(8)]
    r = KSortRanker(names)
    rng = np.random.default_rng(1)
    for _ in range(30):
        counts = r.comparisons()
        fewest = min(counts.values())
        match = r.propose_match(4, rng)
        assert counts[match[0]] == fewest
        assert len(set(match)) == 4  # never paired with itself
        r.update(match, Outcome.full_ranking([0, 1, 2, 3]))


def test_ucb_balances_participation():
    names = [f"m{i:02d}" for i in range(20)]
    r = KSortRanker(names)
    rng = np.random.default_rng(2)
    played = dict.fromkeys(names, 0)
    for _ in range(200):
        match = r.propose_match(4, rng)
        for m in match:
            played[m] += 1
        r.update(match, Outcome.full_ranking(rng.permutation(4).tolist()))
    assert min(played.values()) >= 0.6 * max(played.values())


def test_ucb_readings_pick_similar_or_dissimilar_opponents():
    names = ["p", "near", "mid", "far"]
    rng = np.random.default_rng(0)
    for reading, expected in (("similar", "near"), ("printed", "far")):
        r = KSortRanker(names, KSortConfig(ucb_reading=reading, alpha=0.0))
        r.mu[:] = [25.0, 25.5, 30.0, 45.0]
        # everyone has met equally often, so only the exploitation term decides; the other
        # models also met each other more, so "p" has the fewest comparisons and is the pivot
        r._meet[:] = [[0, 5, 5, 5], [5, 0, 9, 9], [5, 9, 0, 9], [5, 9, 9, 0]]
        assert r.propose_match(2, rng) == ("p", expected)


def test_unmet_opponents_come_first():
    names = ["p", "a", "b", "c"]
    r = KSortRanker(names)
    r._meet[:] = [[0, 3, 3, 0], [3, 0, 9, 9], [3, 9, 0, 9], [0, 9, 9, 0]]
    assert propose_ucb(r, 2, np.random.default_rng(0)) == ("p", "c")


@pytest.mark.parametrize("models, outcome, err", [
    (["a", "zz"], Outcome.full_ranking([0, 1]), UnknownNameError),
    (["a", "a"], Outcome.full_ranking([0, 1]), VoteError),
    (["a", "b", "c"], Outcome.full_ranking([0, 1]), VoteError),
])
def test_bad_votes_leave_leaderboard_unchanged(models, outcome, err):
    r = KSortRanker(["a", "b", "c"])
    r.update(["a", "b"], Outcome.full_ranking([0, 1]))
    before = (r.mu.copy(), r.sigma.copy(), r.meetings(), r.n_votes)
    with pytest.raises(err):
        r.update(models, outcome)
    np.testing.assert_array_equal(r.mu, before[0])
    np.testing.assert_array_equal(r.sigma, before[1])
    np.testing.assert_array_equal(r.meetings(), before[2])
    assert r.n_votes == before[3]


def test_bad_outcomes_and_k_are_rejected():
    with pytest.raises(VoteError, match="exactly one 0"):
        Outcome((0, 0, 1), "best")
    with pytest.raises(VoteError):
        Outcome.full_ranking([0, -1])
    r = KSortRanker(["a", "b", "c"])
    with pytest.raises(VoteError, match="larger than the pool"):
        r.propose_match(4, np.random.default_rng(0))
    with pytest.raises(VoteError, match="already"):
        r.add_model("a")


def test_config_validation_and_dict():
    assert KSortConfig().to_dict()["ucb_reading"] == "similar"
    for bad in ({"beta": 0.0}, {"floor_frac": 0.0}, {"ucb_reading": "plus"}, {"version": 2},
                {"pivot": "oldest"}):
        with pytest.raises(ConfigError):
            KSortConfig(**bad)
    space = search_space()
    assert space["alpha"][0] == "float" and space["ucb_reading"][0] == "categorical"


def test_noise_free_votes_converge_to_true_ranking():
    out = run_convergence("ksort", K=4, noise=0.0, seed=0, max_votes=2500, window=200)
    assert out["votes_to_converge"] is not None and out["votes_to_converge"] < 1500
    assert out["final_mse"] == 0.0
    assert out["curve"][0] > 0


def test_added_model_starts_near_the_bottom():
    r = KSortRanker(["a", "b"])
    r.update(["a", "b"], Outcome.full_ranking([0, 1]))
    r.add_model("new")
    assert r.comparisons()["new"] == 0
    assert r.scores()["new"] == pytest.approx(25.0 - 3 * 25 / 3)
    assert r.propose_match(2, np.random.default_rng(0))[0] == "new"  # the pivot


# --- the three readings of the K-wise variance update (issue 18) ------------------------------
def test_kwise_reading_config():
    assert KSortConfig().reading == "simultaneous"
    assert KSortConfig(gamma=True).reading == "damped"  # the older spelling still means damped
    assert KSortConfig(kwise_update="sequential").reading == "sequential"
    with pytest.raises(ConfigError, match="kwise_update"):
        KSortConfig(kwise_update="parallel")
    with pytest.raises(ConfigError, match="gamma"):
        KSortConfig(gamma=True, kwise_update="sequential")


def test_damped_reading_is_the_older_gamma_flag():
    d = Outcome.full_ranking([2, 0, 3, 1]).constraint_matrix()
    mu, sg = np.array([24.0, 27.0, 22.0, 26.0]), np.array([5.0, 4.0, 6.0, 3.0])
    a = kwise_update(mu, sg, d, BETA, 0.0, gamma=True)
    b = kwise_update(mu, sg, d, BETA, 0.0, reading="damped")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_sequential_reading_chains_two_player_updates():
    """K = 3, ranks (b, a, c): 1st–2nd, then 1st–3rd, then 2nd–3rd, each from the last state."""
    mu = np.array([24.0, 27.0, 22.0])
    sg = np.array([5.0, 4.0, 6.0])
    ranks = [1, 0, 2]  # b first, a second, c third
    new_mu, new_sg = kwise_update(mu, sg, Outcome.full_ranking(ranks).constraint_matrix(), BETA, 0.0,
                                  reading="sequential")
    s = {i: (float(mu[i]), float(sg[i])) for i in range(3)}
    for w, lo in ((1, 0), (1, 2), (0, 2)):
        s[w], s[lo] = pairwise_update(s[w], s[lo], BETA)
    np.testing.assert_allclose(new_mu, [s[i][0] for i in range(3)], rtol=1e-12)
    np.testing.assert_allclose(new_sg, [s[i][1] for i in range(3)], rtol=1e-12)
    # and for K = 2 the sequential and simultaneous readings are the same update
    d2 = Outcome.full_ranking([1, 0]).constraint_matrix()
    a = kwise_update(mu[:2], sg[:2], d2, BETA, 0.0)
    b = kwise_update(mu[:2], sg[:2], d2, BETA, 0.0, reading="sequential")
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


@pytest.mark.parametrize("k", range(2, 9))
def test_first_vote_variance_factor_from_the_prior(k):
    """Closed form from the prior (t = 0, W(0) = 2/π): simultaneous 1 − (K−1)·σ0²W/c², damped the
    same with each term times σ0/c; negative from K = 5 and K = 8; sequential never."""
    s0, w0 = 25 / 3, 2 / math.pi
    c2 = 2 * BETA**2 + 2 * s0**2
    simultaneous = 1 - (k - 1) * s0**2 * w0 / c2
    damped = 1 - (k - 1) * s0**2 * w0 / c2 * s0 / math.sqrt(c2)
    assert prior_shrink(k) == pytest.approx(simultaneous, rel=1e-9)
    assert prior_shrink(k, KSortConfig(kwise_update="damped")) == pytest.approx(damped, rel=1e-9)
    assert (prior_shrink(k) <= 0) == (k >= 5)
    assert (prior_shrink(k, KSortConfig(kwise_update="damped")) <= 0) == (k >= 8)
    assert 0 < prior_shrink(k, KSortConfig(kwise_update="sequential")) < 1


def test_negative_variance_is_counted_not_raised():
    names = [f"m{i}" for i in range(6)]
    r = KSortRanker(names)  # simultaneous: a K = 6 full ranking from the prior goes negative
    r.update(names, Outcome.full_ranking(list(range(6))))
    assert r.negative_variance_votes == 1 and r.floored_votes == 1
    assert r.sigma.min() == pytest.approx(r.config.sigma_floor)
    assert r.state()["negative_variance_votes"] == 1
    seq = KSortRanker(names, KSortConfig(kwise_update="sequential"))
    seq.update(names, Outcome.full_ranking(list(range(6))))
    assert seq.negative_variance_votes == 0 and seq.sigma.min() > 0.3 * seq.config.sigma0
    assert seq.mu[0] > seq.mu[1] > seq.mu[5]
    four = KSortRanker(names[:4])
    four.update(names[:4], Outcome.full_ranking([0, 1, 2, 3]))
    assert four.negative_variance_votes == 0
    # a high floor: K = 4 lands on it (factor 0.236 < 0.9²) without going negative
    high = KSortRanker(names[:4], KSortConfig(floor_frac=0.9))
    high.update(names[:4], Outcome.full_ranking([0, 1, 2, 3]))
    assert high.negative_variance_votes == 0 and high.floored_votes == 1
    # the factor is scale-free: σ0 = 1, β = 0.5 puts K = 5's first vote just below zero (−0.019)
    small = KSortRanker(names[:5], KSortConfig(mu0=0.0, sigma0=1.0, beta=0.5))
    small.update(names[:5], Outcome.full_ranking([0, 1, 2, 3, 4]))
    assert small.negative_variance_votes == 1


def test_sequential_reading_converges_at_k6_where_simultaneous_freezes():
    seq = run_convergence("ksort", 6, 0.0, seed=0, max_votes=1200, window=200,
                          config=KSortConfig(kwise_update="sequential"))
    sim = run_convergence("ksort", 6, 0.0, seed=0, max_votes=1200, window=200)
    assert seq["votes_to_converge"] is not None and seq["negative_variance_votes"] == 0
    assert sim["votes_to_converge"] is None and sim["negative_variance_votes"] > 0
