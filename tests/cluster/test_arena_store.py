"""The arena's SQLite vote store: idempotent votes, validation, replay, Parquet round trip, kill."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cluster.arena_store import ArenaStore, ArenaStoreError, TokenConflictError
from methods.ksort import KSortRanker
from methods.ranking.base import Outcome, VoteError

MODELS = ["fp", "w8a8", "w4a4", "cached"]


def store_with_models(tmp_path, name="s"):
    store = ArenaStore(tmp_path / name)
    for m in MODELS:
        store.add_model(m)
    return store


def test_vote_is_stored_once_per_token(tmp_path):
    store = store_with_models(tmp_path)
    row, new = store.record_vote("t1", "sess", "p0", MODELS, [2, 0, 1, 3], "rank", k=4)
    again, new2 = store.record_vote("t1", "sess", "p0", MODELS, [2, 0, 1, 3], "rank", k=4)
    assert new and not new2 and again.seq == row.seq and store.count() == 1
    with pytest.raises(TokenConflictError, match="already used"):
        store.record_vote("t1", "sess", "p0", MODELS, [0, 1, 2, 3], "rank", k=4)
    assert store.count() == 1


@pytest.mark.parametrize("models, ranks, mode, match", [
    (["fp", "w8a8", "w4a4", "nope"], [0, 1, 2, 3], "rank", "Unknown model"),
    (["fp", "w8a8", "w4a4"], [0, 1, 2], "rank", "K=4"),
    (MODELS, [0, 0, 1, 2], "rank", "duplicate or missing"),
    (MODELS, [0, 1, 2], "rank", "One rank per model"),
    (["fp", "fp", "w4a4", "cached"], [0, 1, 2, 3], "rank", "distinct"),
    (MODELS, [0, 0, 1, 1], "best", "exactly one 0"),
    (MODELS, [0, 1, 2, 3], "draw", "mode"),
    (["../etc", "w8a8", "w4a4", "cached"], [0, 1, 2, 3], "rank", "model must be"),
])
def test_bad_votes_are_refused_and_nothing_is_stored(tmp_path, models, ranks, mode, match):
    store = store_with_models(tmp_path)
    with pytest.raises(VoteError, match=match):
        store.record_vote("tok", "sess", "p0", models, ranks, mode, k=4)
    assert store.count() == 0 and store.tokens() == set()


def test_replay_rebuilds_the_ranker_exactly_including_a_model_added_midway(tmp_path):
    store = store_with_models(tmp_path)
    live = KSortRanker(MODELS)
    rng = np.random.default_rng(0)
    for i in range(30):
        if i == 12:  # the paper's new-model procedure: it enters mid-arena at mu0, sigma0
            store.add_model("new")
            live.add_model("new")
        match = list(live.propose_match(4, rng))
        ranks = rng.permutation(4).tolist()
        store.record_vote(f"t{i}", "s", "p0", match, ranks, "rank", k=4)
        live.update(match, Outcome.full_ranking(ranks))
    store.close()
    again = ArenaStore(tmp_path / "s")
    rebuilt = KSortRanker()
    assert again.replay(rebuilt) == 30
    assert rebuilt.models == live.models
    np.testing.assert_array_equal(rebuilt.mu, live.mu)
    np.testing.assert_array_equal(rebuilt.sigma, live.sigma)
    np.testing.assert_array_equal(rebuilt.meetings(), live.meetings())
    assert again.model_entries()[-1] == ("new", 12)


def test_parquet_round_trip_is_idempotent_and_adds_models(tmp_path):
    src = store_with_models(tmp_path, "a")
    src.record_vote("t1", "s", "p0", MODELS, [3, 2, 1, 0], "rank", k=4)
    src.record_vote("t2", "s", "p1", MODELS, [1, 0, 1, 1], "best", k=4)
    assert src.export_parquet(tmp_path / "votes.parquet") == 2
    dst = ArenaStore(tmp_path / "b")
    assert dst.import_parquet(tmp_path / "votes.parquet") == (2, 0)
    assert dst.import_parquet(tmp_path / "votes.parquet") == (0, 2)
    assert [v.payload() for v in dst.votes()] == [v.payload() for v in src.votes()]
    assert set(dst.models()) == set(MODELS)
    a, b = KSortRanker(), KSortRanker()
    src.replay(a)
    dst.replay(b)
    assert a.scores() == pytest.approx(b.scores())


def test_import_with_one_bad_row_writes_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"token": ["a", "b"], "session": ["s", "s"], "prompt": ["p", "p"],
                      "models": [["x", "y"], ["x", "y"]], "ranks": [[0, 1], [0, 0]],
                      "mode": ["rank", "rank"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    store = ArenaStore(tmp_path / "s")
    with pytest.raises(VoteError, match="row 1"):
        store.import_parquet(tmp_path / "bad.parquet")
    assert store.count() == 0 and store.models() == []
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ArenaStoreError, match="Parquet"):
        store.import_parquet(tmp_path / "junk.parquet")


def test_a_file_in_place_of_the_store_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArenaStoreError, match="folder"):
        ArenaStore(tmp_path / "f")


def test_acknowledged_votes_survive_sigkill(tmp_path):
    """A writer killed with SIGKILL right after its commits returned loses none of them."""
    script = textwrap.dedent(f"""
        import os, sys
        from cluster.arena_store import ArenaStore
        s = ArenaStore({str(tmp_path / "k")!r})
        for m in {MODELS!r}:
            s.add_model(m)
        for i in range(50):
            s.record_vote(f"t{{i}}", "s", "p0", {MODELS!r}, [0, 1, 2, 3], "rank", k=4)
            print(i, flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=os.getcwd(), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acked = len(proc.stdout.split())
    assert acked == 50 and ArenaStore(tmp_path / "k").count() == acked
