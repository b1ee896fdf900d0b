"""The arena web app: votes, idempotent resubmits, 4xx validation, admission, files, restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cluster.arena_app import Arena, ArenaAppConfig, create_app
from cluster.cli import main as evfarm
from sims.arena_images import procedural_images, write_folder

MODELS = {"clean": 0.0, "light": 0.1, "noisy": 0.2, "blurred": 0.15, "worst": 0.35}
TOKEN = "admin-secret-for-tests"


@pytest.fixture()
def folders(tmp_path):
    models = tmp_path / "models"
    write_folder(models, procedural_images(MODELS, n_prompts=3, size=12))
    return models, tmp_path / "store"


def client_for(models, store, **cfg):
    arena = Arena(models, store, ArenaAppConfig(**cfg), admin_token=TOKEN)
    return arena, TestClient(create_app(arena))


def vote_body(match, token, ranks=None, session="s1", mode="rank"):
    ranks = list(range(match["k"])) if ranks is None else ranks
    return {"token": token, "session": session, "prompt": match["prompt"], "models": match["models"],
            "ranks": ranks, "mode": mode}


def test_a_vote_moves_the_leaderboard_and_a_resubmit_counts_once(folders):
    arena, c = client_for(*folders)
    match = c.get("/api/match").json()
    assert match["k"] == 4 and len(set(match["models"])) == 4
    assert all(c.get(u).status_code == 200 for u in match["images"])
    r = c.post("/api/vote", json=vote_body(match, "tok-1"))
    assert r.status_code == 200 and r.json() == {"seq": 1, "duplicate": False, "n_votes": 1}
    again = c.post("/api/vote", json=vote_body(match, "tok-1"))
    assert again.json() == {"seq": 1, "duplicate": True, "n_votes": 1}
    conflict = c.post("/api/vote", json=vote_body(match, "tok-1", ranks=[3, 2, 1, 0]))
    assert conflict.status_code == 409 and "already used" in conflict.json()["detail"]
    board = {r["model"]: r for r in c.get("/api/leaderboard").json()["rows"]}
    first, last = match["models"][0], match["models"][-1]
    assert board[first]["mu"] > 25 > board[last]["mu"]  # ranked 0 moves up, ranked 3 moves down
    assert board[first]["votes"] == 1 and arena.store.count() == 1
    assert board[first]["bt_lo"] <= board[first]["bt"] <= board[first]["bt_hi"]


@pytest.mark.parametrize("change, status, text", [
    ({"models": ["clean", "light", "noisy", "nope"]}, 400, "Unknown model"),
    ({"models": ["clean", "light", "noisy"], "ranks": [0, 1, 2]}, 400, "K=4"),
    ({"ranks": [0, 0, 1, 2]}, 400, "duplicate or missing"),
    ({"ranks": [0, 1, 2, 3], "mode": "best"}, 400, "exactly one 0"),
    ({"prompt": "prompt999"}, 400, "Prompt"),
    ({"session": "../../etc"}, 400, "session"),
    ({"ranks": [0, 1, "2", 3]}, 422, ""),
    ({"extra": 1}, 422, ""),
])
def test_bad_votes_get_4xx_and_nothing_is_stored(folders, change, status, text):
    arena, c = client_for(*folders)
    body = {**vote_body(c.get("/api/match").json(), "bad-1"), **change}
    body["models"] = body["models"] if "models" in change else ["clean", "light", "noisy", "worst"]
    r = c.post("/api/vote", json=body)
    assert r.status_code == status and text in str(r.json()["detail"])
    assert arena.store.count() == 0 and c.get("/api/leaderboard").json()["n_votes"] == 0


def test_best_mode_vote(folders):
    arena, c = client_for(*folders)
    match = c.get("/api/match").json()
    r = c.post("/api/vote", json=vote_body(match, "b1", ranks=[1, 0, 1, 1], mode="best"))
    assert r.status_code == 200
    board = {r["model"]: r for r in c.get("/api/leaderboard").json()["rows"]}
    assert board[match["models"][1]]["mu"] > 25 and board[match["models"][0]]["mu"] < 25


def test_rate_limit_per_session(folders):
    arena, c = client_for(*folders, rate_limit=3, rate_window_s=600)
    m = c.get("/api/match").json()
    codes = [c.post("/api/vote", json=vote_body(m, f"r{i}")).status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    assert c.post("/api/vote", json=vote_body(m, "r0")).json()["duplicate"]  # a resubmit is still acked
    assert c.post("/api/vote", json=vote_body(m, "other", session="s2")).status_code == 200
    assert arena.store.count() == 4


def test_admin_adds_a_model_that_enters_at_mu0_and_is_matched_next(folders):
    models, store = folders
    arena, c = client_for(models, store)
    for i in range(6):
        c.post("/api/vote", json=vote_body(c.get("/api/match").json(), f"v{i}"))
    write_folder(models, {"newcomer": procedural_images({"x": 0.05, "y": 0.1}, n_prompts=3, size=12)["x"]})
    assert c.post("/api/admin/models", json={"name": "newcomer"}).status_code == 401
    wrong = c.post("/api/admin/models", json={"name": "newcomer"}, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    ok = c.post("/api/admin/models", json={"name": "newcomer"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    row = next(r for r in c.get("/api/leaderboard").json()["rows"] if r["model"] == "newcomer")
    assert (row["mu"], row["sigma"], row["votes"]) == (25.0, 25.0 / 3.0, 0)
    assert "newcomer" in c.get("/api/match").json()["models"]  # fewest comparisons = the pivot
    bad = c.post("/api/admin/models", json={"name": "ghost"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400 and "prompt" in bad.json()["detail"]


def test_images_only_from_the_catalogue_inside_the_models_folder(folders, tmp_path):
    models, store = folders
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not for you")
    (models / "clean" / "leak.png").symlink_to(secret)
    arena, c = client_for(models, store)
    assert c.get("/images/clean/prompt000.png").status_code == 200
    for url in ("/images/clean/leak.png", "/images/clean/..%2F..%2Fsecret.png",
                "/images/..%2Fsecret.png/x.png", "/images/clean/prompt000.txt", "/images/nope/prompt000.png"):
        assert c.get(url).status_code == 404, url


def test_requests_write_only_inside_the_store_folder(folders, tmp_path):
    models, store = folders

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if store not in p.parents and p != store}

    before = snapshot()
    arena, c = client_for(models, store)
    for i in range(5):
        c.post("/api/vote", json=vote_body(c.get("/api/match").json(), f"w{i}"))
    c.get("/api/leaderboard")
    c.post("/api/vote", json={"token": "../../x", "session": "s", "prompt": "p", "models": [], "ranks": []})
    assert snapshot() == before


def test_restart_replays_the_same_engine_state(folders):
    models, store = folders
    arena, c = client_for(models, store)
    rng = np.random.default_rng(3)
    for i in range(25):
        m = c.get("/api/match").json()
        c.post("/api/vote", json=vote_body(m, f"x{i}", ranks=rng.permutation(4).tolist()))
    again = Arena(models, store, ArenaAppConfig(), admin_token=TOKEN)
    assert again.replayed == 25
    np.testing.assert_array_equal(again.ksort.mu, arena.ksort.mu)
    np.testing.assert_array_equal(again.ksort.sigma, arena.ksort.sigma)
    assert again.leaderboard()["rows"] == arena.leaderboard()["rows"]


def start_server(models: Path, store: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EVFARM_ARENA_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "arena", "serve", "--models", str(models),
                             "--store", str(store), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "arena listening on " in line:
            return proc, line.split("arena listening on ")[1].strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stdout.read()}")


def test_killed_server_keeps_every_acknowledged_vote(folders):
    import httpx

    models, store = folders
    proc, url = start_server(models, store)
    try:
        acked = []
        for i in range(8):
            m = httpx.get(f"{url}/api/match").json()
            r = httpx.post(f"{url}/api/vote", json=vote_body(m, f"k{i}"))
            assert r.status_code == 200
            acked.append((f"k{i}", m))
        board_before = httpx.get(f"{url}/api/leaderboard").json()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    proc, url = start_server(models, store)
    try:
        board_after = httpx.get(f"{url}/api/leaderboard").json()
        assert board_after == board_before and board_after["n_votes"] == 8
        token, m = acked[3]
        assert httpx.post(f"{url}/api/vote", json=vote_body(m, token)).json()["duplicate"]
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_cli_export_import_and_bad_input(folders, tmp_path, capsys):
    models, store = folders
    arena, c = client_for(models, store)
    for i in range(4):
        c.post("/api/vote", json=vote_body(c.get("/api/match").json(), f"e{i}"))
    out = tmp_path / "votes.parquet"
    assert evfarm(["arena", "export", "--store", str(store), "--out", str(out)]) == 0
    assert evfarm(["arena", "import", "--store", str(tmp_path / "other"), str(out), str(out)]) == 0
    assert "4 votes added" in capsys.readouterr().out
    assert Arena(models, tmp_path / "other", admin_token=TOKEN).replayed == 4
    assert evfarm(["arena", "serve", "--models", str(tmp_path / "missing")]) == 2
    serve = ["arena", "serve", "--models", str(models), "--store", str(store)]
    assert evfarm([*serve, "--host", "8.8.8.8"]) == 2
    assert evfarm([*serve, "--k", "9"]) == 2
    assert evfarm(["arena", "export", "--store", str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a folder" in err and "loopback" in err and "K=9" in err
