"""The HTTP load test: a tiny crowd votes through a real server; the store holds exactly the acked votes."""
from __future__ import annotations

import pytest

from cluster.arena_store import ArenaStore
from sweeps import bench_arena_load as arena_load

TINY = ["--set", "voters=3", "--set", "votes_per_voter=5", "--set", "rounds=2", "--set", "warmup_votes=1",
        "--set", "seconds=30", "--set", "resubmit_every=2"]


def run(tmp_path, run_id, actors):
    args = ["--out", str(tmp_path), "--run-id", run_id, "--no-progress", "--set", actors, *TINY]
    return arena_load.main(args)


def summary(out: str) -> dict[str, str]:
    last = out.strip().splitlines()[-1]
    assert last.startswith("summary: ")
    return dict(kv.split("=", 1) for kv in last.removeprefix("summary: ").split())


def test_threads_crowd_is_exact_and_converges(tmp_path, capsys):
    rc = run(tmp_path, "t", "actors=0")
    s = summary(capsys.readouterr().out)
    assert rc == 0 and s["exact"] == "1"
    assert s["acked"] == s["stored"] == str(3 * 5 * 2 + 3 * 1)  # every vote acknowledged, each once
    assert float(s["votes_per_s"]) > 0 and float(s["vote_p99_ms"]) >= float(s["vote_p50_ms"]) > 0
    store = ArenaStore(tmp_path / "bench_arena_load" / "t" / "store")
    assert store.count() == 33 and (tmp_path / "bench_arena_load" / "t" / "rounds.csv").is_file()


def test_a_lost_vote_makes_the_run_not_exact(tmp_path, capsys, monkeypatch):
    real = ArenaStore.tokens
    monkeypatch.setattr(ArenaStore, "tokens", lambda self: set(sorted(real(self))[1:]))
    rc = run(tmp_path, "x", "actors=0")
    assert rc == 0 and summary(capsys.readouterr().out)["exact"] == "0"


def test_ray_actor_crowd(ray_local, tmp_path, capsys):
    rc = run(tmp_path, "r", "actors=2")
    s = summary(capsys.readouterr().out)
    assert rc == 0 and s["exact"] == "1" and s["acked"] == "33"


@pytest.mark.parametrize("flag", [["--via-http", "ftp://127.0.0.1:1"], ["--set", "rounds=0"]])
def test_bad_input_exits_2(tmp_path, flag):
    assert arena_load.main(["--out", str(tmp_path), *flag]) == 2
