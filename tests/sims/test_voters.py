"""Simulated voter populations (sims/voters.py)."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.ranking import Outcome, VoteError
from sims.voters import VoterConfig, VoterPopulation, model_names


def _votes(pop, matches):
    return [pop.vote(m).ranks for m in matches]


def test_voters_are_deterministic_by_seed():
    cfg = VoterConfig(n_models=20, noise="thurstone", thurstone_sd=2.0, bias_sd=0.5,
                      adversarial_share=0.1, careless_share=0.1, seed=3)
    a, b = VoterPopulation(cfg), VoterPopulation(cfg)
    np.testing.assert_array_equal(a.position, b.position)
    rng = np.random.default_rng(0)
    matches = [tuple(rng.choice(a.names, 4, replace=False)) for _ in range(50)]
    assert _votes(a, matches) == _votes(b, matches)
    assert a.vote_batch(matches, 5) == b.vote_batch(matches, 5) == a.vote_batch(matches, 5)
    assert a.vote_batch(matches, 5) != a.vote_batch(matches, 6)
    other = VoterPopulation(VoterConfig(n_models=20, seed=4))
    assert not np.array_equal(a.position, other.position)


def test_noise_free_votes_follow_the_hidden_truth():
    pop = VoterPopulation(VoterConfig(n_models=10, noise="none", seed=0))
    truth = pop.true_ranking()
    assert sorted(truth) == model_names(10) and truth != model_names(10)  # shuffled
    match = (truth[5], truth[0], truth[9], truth[2])
    assert pop.vote(match) == Outcome.full_ranking([2, 0, 3, 1])
    best = VoterPopulation(VoterConfig(n_models=10, noise="none", vote_mode="best", seed=0))
    assert best.vote(match) == Outcome.best_of(4, 1)


def test_flip_noise_rate_for_pairs_and_adjacent_swap_rule_for_k_gt_2():
    pop = VoterPopulation(VoterConfig(n_models=10, noise="flip", flip_prob=0.2, seed=1))
    truth = pop.true_ranking()
    flips = sum(pop.vote((truth[0], truth[7])).ranks == (1, 0) for _ in range(4000))
    assert 0.17 < flips / 4000 < 0.23
    always = VoterPopulation(VoterConfig(n_models=10, noise="flip", flip_prob=1.0, seed=1))
    for _ in range(50):
        ranks = np.array(always.vote(tuple(truth[:5])).ranks)
        moved = np.flatnonzero(ranks != np.arange(5))
        assert len(moved) == 2 and moved[1] == moved[0] + 1  # exactly one adjacent swap


def test_thurstone_noise_confuses_neighbours_more_than_distant_models():
    pop = VoterPopulation(VoterConfig(n_models=20, noise="thurstone", thurstone_sd=1.5, seed=2))
    t = pop.true_ranking()
    near = sum(pop.vote((t[5], t[6])).ranks == (1, 0) for _ in range(2000))
    far = sum(pop.vote((t[5], t[15])).ranks == (1, 0) for _ in range(2000))
    assert near > 300 and far < 10


def test_adversarial_and_careless_voters():
    adv = VoterPopulation(VoterConfig(n_models=8, noise="none", adversarial_share=1.0, seed=0))
    t = adv.true_ranking()
    assert adv.vote((t[0], t[1], t[2])) == Outcome.full_ranking([2, 1, 0])
    care = VoterPopulation(VoterConfig(n_models=8, noise="none", careless_share=1.0, seed=0))
    seen = {care.vote((t[0], t[1], t[2])).ranks for _ in range(200)}
    assert len(seen) == 6  # every order of three shows up
    mixed = VoterPopulation(VoterConfig(n_models=8, adversarial_share=0.3, careless_share=0.2,
                                        n_voters=100, seed=0))
    kinds = list(mixed.kinds)
    assert kinds.count("adversarial") == 30 and kinds.count("careless") == 20


def test_voter_bias_is_a_fixed_taste_per_voter():
    pop = VoterPopulation(VoterConfig(n_models=6, noise="none", bias_sd=3.0, n_voters=1, seed=0))
    t = pop.true_ranking()
    votes = {pop.vote((t[2], t[3])).ranks for _ in range(20)}
    assert len(votes) == 1  # one voter, no noise: the same (possibly biased) answer every time


def test_add_model_inserts_into_the_truth():
    pop = VoterPopulation(VoterConfig(n_models=5, noise="none", seed=0))
    before = pop.true_ranking()
    pop.add_model("new", 2)
    assert pop.true_ranking() == before[:2] + ["new"] + before[2:]
    assert pop.vote((before[1], "new", before[2])) == Outcome.full_ranking([0, 1, 2])
    with pytest.raises(VoteError):
        pop.add_model("new", 0)


def test_bad_input_is_rejected():
    pop = VoterPopulation(VoterConfig(n_models=5, seed=0))
    with pytest.raises(UnknownNameError, match="m0"):
        pop.vote(("m00", "m99"))
    with pytest.raises(VoteError):
        pop.vote(("m00", "m00"))
    for bad in ({"flip_prob": 1.5}, {"noise": "gaussian"}, {"n_models": 1},
                {"adversarial_share": 0.6, "careless_share": 0.6}, {"vote_mode": "top2"}):
        with pytest.raises(ConfigError):
            VoterConfig(**bad)
    assert VoterConfig().to_dict()["version"] == 1
