"""Contract test over every registered ranker, plus per-baseline checks (methods/ranking/)."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.ranking import RANKERS, BaseRanker, Outcome, Ranker, VoteError, make_ranker
from methods.ranking.bradley_terry import BradleyTerryConfig, fit_bradley_terry
from methods.ranking.elo import EloConfig, EloRanker, elo_expected
from methods.ranking.openskill_lib import OpenSkillConfig
from methods.ranking.trueskill_lib import TrueSkillConfig

NAMES = ["a", "b", "c", "d", "e"]


def test_registry_holds_ksort_and_every_baseline():
    assert set(RANKERS.names()) == {"ksort", "elo", "bradley_terry", "trueskill", "openskill"}
    with pytest.raises(UnknownNameError, match="elo"):
        RANKERS.get("elo_rating")


@pytest.mark.parametrize("name", RANKERS.names())
def test_ranker_contract(name):
    r = make_ranker(name, NAMES)
    assert isinstance(r, Ranker) and isinstance(r, BaseRanker)
    assert set(r.scores()) == set(NAMES) and sorted(r.ranking()) == sorted(NAMES)
    rng = np.random.default_rng(0)
    for k in (2, 3, 4):
        match = r.propose_match(k, rng)
        assert len(match) == k and len(set(match)) == k and set(match) <= set(NAMES)
    # "a" always wins, "e" always loses: the ranking must show it, in both vote modes
    for _ in range(15):
        r.update(["a", "c", "e"], Outcome.full_ranking([0, 1, 2]))
        r.update(["b", "a", "d", "e"], Outcome.best_of(4, 1))
        r.update(["e", "c"], Outcome.full_ranking([1, 0]))
    ranking = r.ranking()
    assert ranking[0] == "a" and ranking[-1] == "e"
    assert r.n_votes == 45 and r.comparisons()["a"] == 15 * (2 + 3)
    # ties and a declared tie are accepted
    r.update(["b", "c", "d"], Outcome.full_ranking([0, 0, 1]))
    r.update(["b", "c", "d"], Outcome.best_of(3, None))
    # a model added later joins the leaderboard and can be matched and rated
    r.add_model("f")
    assert "f" in r.scores() and r.comparisons()["f"] == 0
    r.update(["f", "a"], Outcome.full_ranking([0, 1]))
    assert all(np.isfinite(v) for v in r.scores().values())
    assert set(r.state()) >= {"scores", "comparisons"}


@pytest.mark.parametrize("name", RANKERS.names())
@pytest.mark.parametrize("models, outcome, err", [
    (["a", "nope"], Outcome.full_ranking([0, 1]), UnknownNameError),
    (["a", "a"], Outcome.full_ranking([0, 1]), VoteError),
    (["a", "b", "c"], Outcome.full_ranking([0, 1]), VoteError),
    (["a", "b"], (0, 1), VoteError),
])
def test_bad_vote_leaves_leaderboard_unchanged(name, models, outcome, err):
    r = make_ranker(name, NAMES)
    r.update(["a", "b"], Outcome.full_ranking([0, 1]))
    before, meet = r.scores(), r.meetings()
    with pytest.raises(err):
        r.update(models, outcome)
    assert r.scores() == before
    np.testing.assert_array_equal(r.meetings(), meet)


@pytest.mark.parametrize("name", RANKERS.names())
def test_k_larger_than_pool_is_an_error(name):
    r = make_ranker(name, ["a", "b", "c"])
    with pytest.raises(VoteError, match="larger than the pool"):
        r.propose_match(4, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        make_ranker(name, NAMES, config=object())


def test_elo_matches_chatbot_arena_settings():
    cfg = EloConfig()
    assert (cfg.k_factor, cfg.base, cfg.scale, cfg.init) == (4.0, 10.0, 400.0, 1000.0)
    r = EloRanker(["a", "b"])
    r.update(["a", "b"], Outcome.full_ranking([0, 1]))
    assert r.scores() == {"a": pytest.approx(1002.0), "b": pytest.approx(998.0)}
    e = elo_expected(1002.0, 998.0)
    r.update(["b", "a"], Outcome.full_ranking([0, 0]))  # a tie counts 0.5
    assert r.scores()["a"] == pytest.approx(1002.0 + 4 * (0.5 - e))
    assert elo_expected(1400.0, 1000.0) == pytest.approx(10 / 11)


def test_bradley_terry_recovers_strength_order():
    rng = np.random.default_rng(0)
    true_r = np.array([0.6, 0.3, 0.0, -0.3, -0.6])  # log10-odds units
    wins = np.zeros((5, 5))
    for _ in range(3000):
        i, j = rng.choice(5, 2, replace=False)
        p = 1 / (1 + 10 ** (true_r[j] - true_r[i]))
        if rng.random() < p:
            wins[i, j] += 1
        else:
            wins[j, i] += 1
    r = fit_bradley_terry(wins, l2=0.0)
    np.testing.assert_allclose(r, true_r - true_r.mean(), atol=0.08)


def test_bradley_terry_bootstrap_intervals_cover_the_estimate():
    r = make_ranker("bradley_terry", NAMES)
    rng = np.random.default_rng(1)
    strength = {"a": 4, "b": 3, "c": 2, "d": 1, "e": 0}
    for _ in range(300):
        x, y = rng.choice(NAMES, 2, replace=False)
        p = 1 / (1 + 10 ** ((strength[y] - strength[x]) / 4))
        r.update([x, y], Outcome.full_ranking([0, 1] if rng.random() < p else [1, 0]))
    ci = r.confidence_intervals(rounds=40, seed=0)
    scores = r.scores()
    for m in NAMES:
        lo, hi = ci[m]
        assert lo < hi and lo - 1e-6 <= scores[m] <= hi + 1e-6
    assert ci["a"][0] > ci["e"][1]  # 300 votes separate the best from the worst
    with pytest.raises(VoteError):
        make_ranker("bradley_terry", NAMES).confidence_intervals(rounds=10)


def test_baseline_configs_validate():
    for cls, bad in ((EloConfig, {"k_factor": 0}), (BradleyTerryConfig, {"l2": -1.0}),
                     (TrueSkillConfig, {"draw_probability": 1.0}),
                     (OpenSkillConfig, {"model": "PlackettLuse"})):
        with pytest.raises(ConfigError):
            cls(**bad)
        assert cls().to_dict()["version"] == 1


def test_trueskill_ranker_uses_the_library_free_for_all_update():
    trueskill = pytest.importorskip("trueskill")
    r = make_ranker("trueskill", ["a", "b", "c"])
    r.update(["c", "a", "b"], Outcome.full_ranking([0, 1, 2]))
    env = trueskill.TrueSkill(mu=25, sigma=25 / 3, beta=25 / 6, tau=25 / 300, draw_probability=0)
    (c,), (a,), (b,) = env.rate([(env.create_rating(),)] * 3, ranks=[0, 1, 2])
    assert r.scores()["c"] == pytest.approx(c.mu - 3 * c.sigma)
    assert r.scores()["b"] == pytest.approx(b.mu - 3 * b.sigma)


def test_bradley_terry_newton_and_lbfgs_reach_the_same_optimum():
    from methods.ranking.bradley_terry import bt_negloglik

    rng = np.random.default_rng(3)
    wins = rng.poisson(2.0, size=(8, 8)).astype(float)
    np.fill_diagonal(wins, 0.0)
    wins[0, 1:] += 5  # a strong model, nearly separable
    a = fit_bradley_terry(wins, 1e-4, solver="newton")
    b = fit_bradley_terry(wins, 1e-4, maxiter=1000, solver="lbfgs")
    assert bt_negloglik(a, wins, 1e-4)[0] <= bt_negloglik(b, wins, 1e-4)[0] + 1e-6
    np.testing.assert_allclose(a, b, atol=1e-3)
    with pytest.raises(ConfigError):
        BradleyTerryConfig(solver="sgd")
