"""Voter actors and the arena owner: farm votes equal the pure runner's, one owner writes the state."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from actors.arena_voter import ArenaOwner, VoterPool
from cluster.resources import actor_options
from methods.ranking import make_ranker
from methods.ranking.base import VoteError
from sims.arena import run_convergence
from sims.voters import VoterConfig, VoterPopulation


def _voter_config(seed: int = 0, flip: float = 0.0, n: int = 12) -> dict:
    return {"n_models": n, "noise": "flip", "flip_prob": flip, "vote_mode": "rank", "seed": seed}


def _owner(ranker: str, k: int, vcfg: dict, **kw) -> ArenaOwner:
    pop = VoterPopulation(VoterConfig(**vcfg))  # the truth, read here only to score
    return ArenaOwner(make_ranker(ranker, pop.names), k, vcfg, pop.position,
                      np.random.default_rng([vcfg["seed"], 7]), **kw)


@pytest.fixture
def pools():
    """New voter pools, stopped after the test so that none holds CPUs of the shared cluster."""
    made: list[VoterPool] = []

    def make(n: int) -> VoterPool:
        made.append(VoterPool(uuid.uuid4().hex[:8], n, actor_options("voter_cpu_half")))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


def test_owner_through_voter_actors_reproduces_the_pure_runner(ray_local, pools):
    # noise 0: votes are deterministic, the matchmaking stream is (seed, 7) in both paths
    pure = run_convergence("ksort", 4, 0.0, 3, 1500, window=50, n_models=12)
    owner = _owner("ksort", 4, _voter_config(3), horizon=1500, window=50)
    rows = owner.run(pools(2))
    assert pure["votes_to_converge"] is not None
    assert owner.converged_at == pure["votes_to_converge"]
    boards = [r for r in rows if r["row_kind"] == "leaderboard"]
    assert [b["rank_mse"] for b in boards] == pure["curve"][: len(boards)]
    assert {r["row_kind"] for r in rows} == {"vote_batch", "leaderboard"}


def test_votes_do_not_depend_on_voter_actor_count_or_batch_split(ray_local, pools):
    vcfg = _voter_config(1, flip=0.3)  # noisy: every vote draws from its own stream
    one = _owner("elo", 2, vcfg, horizon=400, window=50, batch_votes=40)
    two = _owner("elo", 2, vcfg, horizon=400, window=50, batch_votes=40)
    single = _owner("elo", 2, vcfg, horizon=400, window=50, batch_votes=1)
    rows_one, rows_two = one.run(pools(1)), two.run(p3 := pools(3))  # 4 × 0.5 CPU: the cluster
    single.run(p3)
    votes = lambda rows: [r["ranks"] for r in rows if r["row_kind"] == "vote_batch"]  # noqa: E731
    assert votes(rows_one) == votes(rows_two)
    # random matchmaking does not read the state: batching changes nothing, vote for vote
    assert one.ranker.scores() == two.ranker.scores() == single.ranker.scores()
    assert one.n_votes == single.n_votes == 400


def test_voter_actors_never_hold_the_ranker(ray_local, pools):
    import ray

    pool = pools(2)
    owner = _owner("ksort", 4, _voter_config(2), horizon=120, window=200)
    owner.run(pool)
    infos = ray.get([h.info.remote() for h in pool.handles])
    assert all(i["attributes"] == ["_populations", "votes_cast"] for i in infos)
    assert sum(i["votes_cast"] for i in infos) == owner.n_votes == owner.ranker.n_votes == 120
    votes = ray.get(pool.handles[0].votes.remote(_voter_config(2), [["m00", "m01", "m02"]], 0))
    assert votes == [{"ranks": votes[0]["ranks"], "mode": "rank"}]  # plain data, no ranker state


def test_a_dead_voter_actor_is_replaced_and_the_votes_stay_the_same(ray_local, pools):
    import ray

    vcfg = _voter_config(4, flip=0.2)
    ref = _owner("ksort", 4, vcfg, horizon=300, window=500)
    pool = pools(2)
    ref.run(pool)
    hit = _owner("ksort", 4, vcfg, horizon=300, window=500)
    hit.run(pool, until=150)
    ray.kill(pool.handles[0], no_restart=True)
    hit.run(pool)
    assert hit.n_votes == ref.n_votes == 300
    assert hit.ranker.scores() == ref.ranker.scores()


def test_snapshot_restores_an_owner_that_continues_identically(ray_local, pools):
    import ray

    vcfg = _voter_config(5, flip=0.05)
    pool = pools(2)
    whole = _owner("ksort", 2, vcfg, horizon=400, window=60)
    whole_rows = whole.run(pool)
    first = _owner("ksort", 2, vcfg, horizon=400, window=60)
    rows = first.run(pool, until=170)
    # through the object store, as a chunk checkpoint travels (its arrays come back read-only)
    second = ArenaOwner.restore(ray.get(ray.put(first.snapshot())))
    rows += second.run(pool)
    assert rows == whole_rows and second.converged_at == whole.converged_at


def test_owner_rejects_k_larger_than_the_pool():
    with pytest.raises(VoteError, match="larger than the pool"):
        _owner("ksort", 13, _voter_config(), horizon=10)
