"""Load test: a crowd of simulated voters votes through a K-Sort arena server's HTTP API.

    python sweeps/bench_arena_load.py                          # 8 voters (2 Ray actors x 4), 5 rounds
    python sweeps/bench_arena_load.py --set actors=0           # the voters as threads of the driver, no Ray
    python sweeps/bench_arena_load.py --via-http http://127.0.0.1:8000 --set truth='["clean", ...]'

Paper: "K-Sort Arena" (Li et al., arXiv 2408.14468) runs as a web platform; this measures ours
(cluster/arena_app.py) on localhost. Our own design [ours]:
- Without `--via-http` the bench writes a procedural models folder (sims/arena_images.py) and
  starts `evfarm arena serve` on 127.0.0.1 with a free port and its store in the run directory,
  then stops it (the process it started, by pid). With `--via-http URL` it votes on that server;
  set `truth` to its model names best first (default: sorted names) and `store` to its store
  folder for the exact-store check.
- The crowd: `voters` concurrent sessions, spread over `actors` Ray actors
  (actors/arena_http_voter.py, profile voter_cpu_half; 0 = threads in the driver). Each session
  casts up to `votes_per_voter` votes per round, and a round stops at `seconds` (bounded count and
  time); a warm-up of `warmup_votes` per voter comes first, stored and checked but not timed.
  Every `resubmit_every`-th acknowledged vote is posted again with its token.
- Per round: votes/s (acknowledged distinct votes / wall time of the round) and p50/p99 latency
  of POST /api/vote and GET /api/match; over `rounds` (≥ 3) rounds each is a mean with a
  t-interval (methods/metrics/stats.mean_ci) and its noise floor (spread_floor: the rounds' own
  round-to-round spread).
- Exactness: the store's vote tokens must equal the set of acknowledged tokens (no lost vote, no
  duplicate, nothing unacknowledged); a resubmit must come back `duplicate`. The summary has
  `exact=1` only then. Rank MSE of the final board against the voters' truth is reported too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/bench_arena_load.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from cluster.bench_cli import BenchRun, Shorthand, run_bench, shorthands
from methods.errors import ConfigError
from methods.metrics.stats import mean_ci, spread_floor

PROFILE = "voter_cpu_half"


@dataclass(frozen=True)
class ArenaLoadConfig:
    via_http: str = ""  # an arena's URL; empty = start one on 127.0.0.1
    store: str = ""  # that arena's store folder, for the exact-store check with via_http
    truth: tuple[str, ...] = ()  # arena model names best first (via_http; default sorted names)
    k: int = 4
    voters: int = 8
    actors: int = 2  # Ray actors holding the voters; 0 = threads in the driver
    votes_per_voter: int = 40
    seconds: float = 30.0  # per round
    rounds: int = 5
    warmup_votes: int = 3  # per voter, before round 0 (stored and checked, not timed)
    resubmit_every: int = 10
    flip_prob: float = 0.0
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"ArenaLoadConfig version must be 1; received {self.version}.")
        counts = (self.voters, self.votes_per_voter, self.rounds)
        if min(counts) < 1 or min(self.actors, self.warmup_votes) < 0:
            raise ConfigError(f"voters, votes_per_voter, rounds ≥ 1 and actors, warmup_votes ≥ 0 expected; "
                              f"received {counts}, {self.actors}, {self.warmup_votes}.")
        if not 0 < self.seconds <= 600:
            raise ConfigError(f"seconds (per round) must be in (0, 600]; received {self.seconds}.")
        if self.via_http and not self.via_http.startswith("http://"):
            raise ConfigError(f"--via-http takes an http:// URL such as http://127.0.0.1:8000; "
                              f"received {self.via_http!r}.")


def start_server(models: Path, store: Path, k: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`evfarm arena serve` on 127.0.0.1, a free port; returns (process, URL) once it listens."""
    cmd = [sys.executable, "-m", "cluster.cli", "arena", "serve", "--models", str(models),
           "--store", str(store), "--port", "0", "--k", str(k), "--rate-limit", "1000000"]
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "arena listening on " in line:
            log.write_text("".join(lines))
            return proc, line.split("arena listening on ")[1].strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise ConfigError("The arena server did not start:\n" + "".join(lines))


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str, path: str) -> Any:
    import json
    import urllib.request

    with urllib.request.urlopen(url + path, timeout=30) as resp:  # noqa: S310 (an http:// URL we checked)
        return json.loads(resp.read())


def make_crowd(cfg: ArenaLoadConfig, url: str, truth: list[str]) -> list[Any]:
    """The voters: one in-process HttpVoter (actors=0) or `actors` Ray actors, started once."""
    from actors.arena_http_voter import HttpArenaVoter, HttpVoter

    vc = {"noise": "flip", "flip_prob": cfg.flip_prob, "vote_mode": "rank"}
    if cfg.actors == 0:
        return [HttpVoter(url, truth, {**vc, "seed": cfg.seed * 10}, cfg.voters, "t")]
    import ray

    from cluster.resources import actor_options

    n_act = min(cfg.actors, cfg.voters)
    sizes = [cfg.voters // n_act + (i < cfg.voters % n_act) for i in range(n_act)]
    handles = [HttpArenaVoter.options(**actor_options(PROFILE)).remote(
        url, truth, {**vc, "seed": cfg.seed * 10 + a}, sizes[a], f"a{a}") for a in range(n_act)]
    ray.get([h.__ray_ready__.remote() for h in handles])  # actor start-up is not load
    return handles


def crowd_round(cfg: ArenaLoadConfig, crowd: list[Any], n_votes: int, name: str) -> tuple[list[dict], float]:
    """One round of every voter (sessions named after the round); returns (records, wall seconds)."""
    t0 = time.perf_counter()
    if cfg.actors == 0:
        records = crowd[0].run(n_votes, cfg.seconds, cfg.resubmit_every, name)
        return records, time.perf_counter() - t0
    import ray

    parts = ray.get([h.run.remote(n_votes, cfg.seconds, cfg.resubmit_every, name) for h in crowd])
    return [r for p in parts for r in p], time.perf_counter() - t0


def round_stats(records: list[dict], wall: float) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == 200]
    first = [r for r in ok if not r.get("resubmit")]
    vote_ms = np.array([r["vote_s"] for r in ok]) * 1e3
    match_ms = np.array([r["match_s"] for r in first]) * 1e3
    return {"acked": len({r["token"] for r in ok}), "posts": len(records),
            "errors": sum(r["status"] != 200 for r in records),
            "resubmits": sum(bool(r.get("resubmit")) for r in ok),
            "resubmits_not_duplicate": sum(bool(r.get("resubmit")) and not r["duplicate"] for r in ok),
            "wall_s": wall, "votes_per_s": len({r["token"] for r in ok}) / wall,
            "vote_p50_ms": float(np.percentile(vote_ms, 50)),
            "vote_p99_ms": float(np.percentile(vote_ms, 99)),
            "match_p50_ms": float(np.percentile(match_ms, 50)),
            "match_p99_ms": float(np.percentile(match_ms, 99))}


def body(run: BenchRun) -> dict[str, Any]:
    cfg: ArenaLoadConfig = run.config
    from cluster.arena_store import ArenaStore
    from sims.arena import rank_mse
    from sims.arena_images import demo_true_order, procedural_images, write_folder

    proc, store_dir = None, Path(cfg.store) if cfg.store else None
    if cfg.via_http:
        url = cfg.via_http.rstrip("/")
        names = sorted(r["model"] for r in _get(url, "/api/leaderboard")["rows"])
        truth = list(cfg.truth) or names
        if sorted(truth) != names:
            raise ConfigError(f"truth must list the arena's models {names}; received {list(truth)}.")
    else:
        models = run.run_dir / "models"
        write_folder(models, procedural_images(n_prompts=6, size=32, seed=cfg.seed), upscale=2)
        truth, store_dir = demo_true_order(), run.run_dir / "store"
        proc, url = start_server(models, store_dir, cfg.k, run.path("server.log"))
    where = "threads" if cfg.actors == 0 else f"{cfg.actors} actors"
    print(f"arena at {url}; {cfg.voters} voters ({where}), "
          f"{cfg.rounds} rounds of ≤ {cfg.votes_per_voter} votes each, ≤ {cfg.seconds:g} s", flush=True)
    owned_ray, crowd = False, []
    try:
        if cfg.actors:
            import ray

            from cluster.connect import connect

            owned_ray = not ray.is_initialized()
            connect(num_cpus=run.num_cpus or 2, local=True, log_to_driver=False)
        start_votes = _get(url, "/api/info")["n_votes"]
        rows, acked = [], set()
        crowd = make_crowd(cfg, url, truth)
        if cfg.warmup_votes:  # connections, first requests and (Ray) worker start-up are not load
            records, _ = crowd_round(cfg, crowd, cfg.warmup_votes, "w")
            acked |= {r["token"] for r in records if r["status"] == 200}
        for rnd in range(cfg.rounds):
            records, wall = crowd_round(cfg, crowd, cfg.votes_per_voter, f"r{rnd}")
            acked |= {r["token"] for r in records if r["status"] == 200}
            rows.append({"round": rnd, **round_stats(records, wall)})
        board = _get(url, "/api/leaderboard")
        info = _get(url, "/api/info")
    finally:
        if proc is not None:
            stop_server(proc)
        if cfg.actors and crowd:
            import ray

            for h in crowd:
                ray.kill(h)
        if owned_ray:
            import ray

            ray.shutdown()
    shown = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    run.table("rounds", shown,
              "Per round: acknowledged votes, votes/s, POST /api/vote and GET /api/match latency (ms)")
    stored = ArenaStore(store_dir).tokens() if store_dir is not None else None
    if stored is None:  # a remote arena without --set store: only the server's count is checked
        exact_store = True
    elif cfg.via_http:  # that store may hold earlier votes: every acknowledged one must be there
        exact_store = acked <= stored
    else:
        exact_store = stored == acked
    counted = info["n_votes"] - start_votes == len(acked)
    dup_ok = all(r["resubmits_not_duplicate"] == 0 for r in rows)
    exact = int(bool(exact_store and counted and dup_ok))
    pos = {m: i for i, m in enumerate(truth)}
    scores = np.array([r["score"] for r in board["rows"]])
    mse = rank_mse(scores, np.array([pos[r["model"]] for r in board["rows"]]))
    summary: dict[str, Any] = {"acked": len(acked), "stored": len(stored) if stored is not None else "n/a",
                               "exact": exact, "final_rank_mse": round(mse, 3), "voters": cfg.voters}
    print(f"\nacknowledged {len(acked)} distinct votes; store holds "
          f"{'?' if stored is None else len(stored)}; server counted {info['n_votes'] - start_votes}; "
          f"resubmits all duplicate: {dup_ok} -> exact={exact}; final rank MSE vs the voters' truth "
          f"{mse:.3f}")
    for key in ("votes_per_s", "vote_p50_ms", "vote_p99_ms", "match_p50_ms"):
        vals = [r[key] for r in rows]
        if len(vals) >= 2:
            est, floor = mean_ci(vals), spread_floor(vals)
            floor_txt = "" if floor is None else f", round-to-round noise floor {floor.hi:.3g}"
            print(f"{key}: {est} over {len(vals)} rounds{floor_txt}")
            summary.update({key: round(est.value, 2), f"{key}_lo": round(est.lo, 2),
                            f"{key}_hi": round(est.hi, 2)})
        else:
            summary[key] = round(vals[0], 2)
    if not exact:
        print("NOT EXACT: the store and the acknowledged votes differ (see rounds.csv)", file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        argv, bench="bench_arena_load", description=__doc__.splitlines()[0], config_cls=ArenaLoadConfig,
        body=body,
        **shorthands(Shorthand("--via-http", "via_http", str, "vote on this arena URL, not a new one"),
                     Shorthand("--voters", "voters", int, "concurrent voter sessions")),
    )


if __name__ == "__main__":
    sys.exit(main())
