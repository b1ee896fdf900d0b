"""Simulated arena voters that vote through a K-Sort arena server's HTTP API (a crowd for load tests).

Paper: "K-Sort Arena" (Li et al., arXiv 2408.14468): people ask the platform for K images, rank
them and submit. Here the people are `sims.voters.VoterPopulation` voters: they see only what the
page sees (the K model names of a match and a prompt) and rank by their hidden truth. Our own
design [ours]:

- `HttpVoter(url, truth, voter_config, sessions)` runs `sessions` concurrent voters (one thread and
  one keep-alive `http.client` connection each, standard library only): GET /api/match, then POST
  /api/vote with a token unique to (session, vote number). `HttpArenaVoter` is the same class as a
  Ray actor, so a crowd is actors × sessions.
- The arena's model names map onto the population's hidden ranking through `truth` (arena names,
  best first): the population's i-th best model is `truth[i]`. The population never sees a
  leaderboard.
- Every POST is timed; a connection error is retried once with the same token (a resubmission the
  server must count once); with `resubmit_every` = n every n-th acknowledged vote is posted again
  on purpose. Records come back as plain dicts; the driver checks the store against them.
"""
from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import ray

from sims.voters import VoterConfig, VoterPopulation


class _Connection:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnect on the next request
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            raise
        return resp.status, json.loads(payload or b"null")


class HttpVoter:
    """`sessions` concurrent simulated voters of one population, voting over HTTP."""

    def __init__(self, url: str, truth: Sequence[str], voter_config: dict[str, Any], sessions: int = 1,
                 prefix: str = "voter", timeout: float = 30.0) -> None:
        self.url, self.sessions, self.prefix, self.timeout = url.rstrip("/"), sessions, prefix, timeout
        self.population = VoterPopulation(VoterConfig(**{**voter_config, "n_models": len(truth)}))
        hidden = self.population.true_ranking()
        self.to_population = {name: hidden[i] for i, name in enumerate(truth)}
        self._lock = threading.Lock()  # the population's vote stream is not thread-safe

    def _one_session(self, s: int, n_votes: int, deadline: float, resubmit_every: int, prefix: str
                     ) -> list[dict]:
        conn = _Connection(self.url, self.timeout)
        session = f"{prefix}-{s}"
        records: list[dict] = []
        for i in range(n_votes):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            status, match = conn.request("GET", "/api/match")
            t_match = time.perf_counter() - t0
            if status != 200:
                records.append({"token": None, "status": status, "match_s": t_match, "vote_s": None})
                continue
            with self._lock:
                outcome = self.population.vote([self.to_population[m] for m in match["models"]])
            body = {"token": f"{session}-{i}", "session": session, "prompt": match["prompt"],
                    "models": match["models"], "ranks": list(outcome.ranks), "mode": outcome.mode}
            records.append(self._post(conn, body, t_match, retry=True))
            if resubmit_every and records[-1]["status"] == 200 and (i + 1) % resubmit_every == 0:
                again = self._post(conn, body, 0.0, retry=True)
                records.append({**again, "resubmit": True})
        conn.conn.close()
        return records

    def _post(self, conn: _Connection, body: dict, t_match: float, retry: bool) -> dict:
        t0 = time.perf_counter()
        try:
            status, out = conn.request("POST", "/api/vote", body)
        except (OSError, http.client.HTTPException) as exc:
            if retry:
                rec = self._post(conn, body, t_match, retry=False)
                return {**rec, "retried": True}
            return {"token": body["token"], "status": -1, "match_s": t_match, "vote_s": None,
                    "error": str(exc)}
        rec = {"token": body["token"], "status": status, "match_s": t_match,
               "vote_s": time.perf_counter() - t0}
        if status == 200:
            rec.update(seq=out["seq"], duplicate=out["duplicate"])
        return rec

    def run(self, n_votes: int, seconds: float, resubmit_every: int = 0, round_name: str = "") -> list[dict]:
        """Every session casts up to `n_votes` votes, stopping at `seconds`; returns one record per POST.

        Sessions are named `<prefix>[<round_name>]-<i>`: a new round name gives fresh vote tokens."""
        deadline = time.monotonic() + seconds
        prefix = f"{self.prefix}{round_name}"
        with ThreadPoolExecutor(self.sessions) as pool:
            parts = pool.map(lambda s: self._one_session(s, n_votes, deadline, resubmit_every, prefix),
                             range(self.sessions))
            return [r for part in parts for r in part]


HttpArenaVoter = ray.remote(HttpVoter)
