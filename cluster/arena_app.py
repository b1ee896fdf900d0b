"""K-Sort Arena as a web app: people rank K images of K of the farm's models for one prompt.

    evfarm arena serve --models FOLDER [--k 4] [--port 8000] [--host 127.0.0.1] [--store DIR]

Paper: "K-Sort Arena: Efficient and Reliable Benchmarking for Generative Models via K-wise Human
Preferences" (Li et al., arXiv 2408.14468). The engine is methods/ksort.py; this module is the
platform around it.

Follows the paper [paper]: one prompt's K images side by side; two vote modes, rank all K
("rank") or pick the best ("best"); K-wise Bayesian update (Eqs. 9–10) after each vote; the next
K from the pivot + UCB matchmaker (Eqs. 11–14); a leaderboard of μ, σ and the conservative score
μ − 3σ; a model added while the arena runs enters at (μ0, σ0) with no comparisons, so the
fewest-comparisons pivot picks it first (the paper's new-model procedure, Fig. 6).

Our own design [ours]:
- FastAPI + uvicorn, not Gradio (the original's): the page is one small HTML + JS file and a JSON
  API, which simulated voters (sweeps/bench_arena_load.py) and a browser use alike; FastAPI validates
  request bodies (pydantic) and TestClient tests the app in process; Gradio would add a large
  dependency, its own queue and websocket protocol, and no plain API for the load test.
- Models folder: `FOLDER/<model>/<prompt_id>.png`; the arena's prompts are those every model has.
  Names are 1-64 of letters, digits, `_ . -`; anything else in the folder is ignored.
- Durable votes in `cluster/arena_store.py` (SQLite WAL); on start the engine is the replay of
  the store, so a killed server loses nothing it acknowledged. One lock orders "store the vote,
  then update the engine", so the in-memory state is always the replay of the store.
- A vote names the prompt and the K models shown; the server checks they are K distinct known
  models that all have that prompt, and a strict order (rank mode) or one winner (best mode).
  The display order is shuffled so the matchmaker's pivot is not always on the left.
- Bradley–Terry (methods/ranking/bradley_terry.py) is fitted on the same votes, with bootstrap
  95 % intervals (`bootstrap_rounds` rounds, cached per vote count).
- Per-session rate limit: at most `rate_limit` votes per `rate_window_s` seconds (429 beyond).
- Admin: adding a model needs `Authorization: Bearer <token>`; the token comes from
  EVFARM_ARENA_ADMIN_TOKEN or is generated and written (mode 600) to the store folder.
- Files: the app writes only inside the store folder and reads images only through the
  catalogue scanned from the models folder, each path resolved and checked to lie inside it.
"""
from __future__ import annotations

import collections
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cluster.arena_store import NAME_RE, ArenaStore, ArenaStoreError, TokenConflictError, check_name
from methods.errors import ConfigError, EvfarmUserError
from methods.ksort import KSortConfig, KSortRanker
from methods.ranking.base import VoteError
from methods.ranking.bradley_terry import BradleyTerryRanker

ADMIN_ENV = "EVFARM_ARENA_ADMIN_TOKEN"


@dataclass(frozen=True)
class ArenaAppConfig:
    """Knobs of one arena server (see the module docstring)."""

    version: int = 1
    k: int = 4
    rate_limit: int = 30
    rate_window_s: float = 60.0
    bootstrap_rounds: int = 200
    seed: int = 0
    ksort: KSortConfig = field(default_factory=KSortConfig)

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"ArenaAppConfig version 1 expected, got {self.version}.")
        if not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"--k must be an integer ≥ 2 (the paper uses 4), got {self.k!r}.")
        if self.rate_limit < 1 or not self.rate_window_s > 0 or self.bootstrap_rounds < 2:
            raise ConfigError(f"rate_limit ≥ 1, rate_window_s > 0 and bootstrap_rounds ≥ 2 expected; got "
                              f"{self.rate_limit}, {self.rate_window_s}, {self.bootstrap_rounds}.")


class VoteIn(BaseModel):
    """POST /api/vote: the K models shown (display order), one rank each (0 = best), the mode."""

    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(max_length=64)
    session: str = Field(max_length=64)
    prompt: str = Field(max_length=64)
    models: list[str] = Field(max_length=64)
    ranks: list[int] = Field(max_length=64)
    mode: str = "rank"


class ModelIn(BaseModel):
    """POST /api/admin/models: the folder name of a model to admit."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=64)


class RateLimited(EvfarmUserError):
    """A session voted more than the rate limit allows."""


class AdminRequired(EvfarmUserError):
    """A missing or wrong admin token."""


def scan_models(folder: str | Path) -> dict[str, dict[str, Path]]:
    """{model: {prompt_id: path}} of `folder/<model>/<prompt_id>.png` (invalid names are ignored)."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--models must be a folder laid out <model>/<prompt_id>.png; {root} is not a "
                          f"folder. Make one with `evfarm arena samples --out {root}`.")
    out: dict[str, dict[str, Path]] = {}
    for mdir in sorted(root.iterdir()):
        if not (mdir.is_dir() and NAME_RE.match(mdir.name)):
            continue
        imgs = {p.stem: p for p in sorted(mdir.glob("*.png")) if p.is_file() and NAME_RE.match(p.stem)}
        if imgs:
            out[mdir.name] = imgs
    return out


class Arena:
    """The arena's state: catalogue, store, K-Sort engine, Bradley–Terry, rate limits."""

    def __init__(self, models_dir: str | Path, store_dir: str | Path,
                 config: ArenaAppConfig | None = None, admin_token: str | None = None) -> None:
        self.config = config or ArenaAppConfig()
        self.models_root = Path(models_dir).resolve()
        self.catalogue = scan_models(self.models_root)
        if len(self.catalogue) < self.config.k:
            raise ConfigError(f"The arena shows K={self.config.k} models per vote but {self.models_root} "
                              f"holds "
                              f"{len(self.catalogue)} model folder(s) with PNGs ({sorted(self.catalogue)}); "
                              f"add models or lower --k.")
        self.prompts = sorted(set.intersection(*(set(v) for v in self.catalogue.values())))
        if not self.prompts:
            raise ConfigError(f"No prompt id has an image in every model folder of {self.models_root}; "
                              f"each model needs <prompt_id>.png for the same prompts.")
        self.store = ArenaStore(store_dir)
        stored = self.store.models()
        gone = [m for m in stored if m not in self.catalogue]
        if gone:
            raise ArenaStoreError(f"The store {self.store.folder} has votes for model(s) {gone} that "
                                  f"{self.models_root} lacks; restore their folders or use a new --store.")
        for name in sorted(self.catalogue):
            if name not in stored:
                self.store.add_model(name)
        self.ksort = KSortRanker(config=self.config.ksort)
        self.bt = BradleyTerryRanker()
        self._lock = threading.Lock()
        self.replayed = self.store.replay(self.ksort, self.bt)
        self.appearances = collections.Counter(m for v in self.store.votes() for m in v.models)
        self.rng = np.random.default_rng(self.config.seed)
        self._recent: dict[str, collections.deque] = {}
        self._ci_cache: tuple[int, dict] = (-1, {})
        self.admin_token = admin_token or os.environ.get(ADMIN_ENV) or self._stored_admin_token()

    def _stored_admin_token(self) -> str:
        path = self.store.folder / "admin_token"
        if path.is_file():
            return path.read_text().strip()
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        return token

    # --- matchmaking and voting --------------------------------------------------------------
    def match(self) -> dict[str, Any]:
        """The next K models (pivot + UCB) and a prompt they share, in a shuffled display order."""
        with self._lock:
            models = list(self.ksort.propose_match(self.config.k, self.rng))
            prompt = self.prompts[int(self.rng.integers(len(self.prompts)))]
            order = self.rng.permutation(len(models))
        shown = [models[i] for i in order]
        return {"prompt": prompt, "k": self.config.k, "models": shown,
                "images": [f"/images/{m}/{prompt}.png" for m in shown]}

    def _check_rate(self, session: str, now: float) -> None:
        recent = self._recent.setdefault(session, collections.deque())
        while recent and now - recent[0] > self.config.rate_window_s:
            recent.popleft()
        if len(recent) >= self.config.rate_limit:
            raise RateLimited(f"Session {session!r} sent {len(recent)} votes in the last "
                              f"{self.config.rate_window_s:g} s; the limit is {self.config.rate_limit}. "
                              f"Wait and vote again.")
        if len(self._recent) > 100_000:  # bound memory: forget idle sessions
            for s in [s for s, d in self._recent.items() if not d]:
                del self._recent[s]

    def vote(self, token: str, session: str, prompt: str, models: list[str], ranks: list[int],
             mode: str) -> dict[str, Any]:
        """Validate, store durably, then update the engine; a known token is acknowledged again."""
        check_name("session", session)
        check_name("prompt", prompt)
        lacking = [m for m in models if m in self.catalogue and prompt not in self.catalogue[m]]
        if prompt not in self.prompts or lacking:
            raise VoteError(f"Prompt {prompt!r} is not one every shown model has an image for "
                            f"(the arena's first prompts: {self.prompts[:5]}).")
        with self._lock:
            now = time.monotonic()
            existing = self.store.votes_by_token(token)
            if existing is None:
                self._check_rate(session, now)
            row, new = self.store.record_vote(token, session, prompt, models, ranks, mode, k=self.config.k)
            if new:
                self.ksort.update(row.models, row.outcome())
                self.bt.update(row.models, row.outcome())
                self.appearances.update(row.models)
                self._recent[session].append(now)
            n = self.ksort.n_votes
        return {"seq": row.seq, "duplicate": not new, "n_votes": n}

    # --- admission ---------------------------------------------------------------------------
    def check_admin(self, authorization: str | None) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given, self.admin_token):
            raise AdminRequired("Adding a model needs the admin token: send 'Authorization: Bearer <token>' "
                                f"(the token is in {ADMIN_ENV} or <store>/admin_token).")

    def add_model(self, name: str) -> dict[str, Any]:
        """Admit `models_root/<name>/` (it must have every arena prompt) at (μ0, σ0), no comparisons."""
        check_name("model", name)
        with self._lock:
            if name in self.ksort.models:
                raise VoteError(f"Model {name!r} is already in the arena.")
            imgs = scan_models(self.models_root).get(name, {})
            missing = [p for p in self.prompts if p not in imgs]
            if missing:
                raise VoteError(f"Model {name!r} needs <prompt_id>.png in {self.models_root / name} "
                                f"for every arena prompt; missing {missing[:5]} ({len(missing)} in all).")
            self.store.add_model(name)
            self.catalogue[name] = imgs
            self.ksort.add_model(name)
            self.bt.add_model(name)
        return {"model": name, "models": len(self.catalogue)}

    # --- reading -----------------------------------------------------------------------------
    def image_path(self, model: str, filename: str) -> Path | None:
        """The catalogued file for /images/<model>/<filename>, or None (never a path from the request)."""
        if not filename.endswith(".png"):
            return None
        path = self.catalogue.get(model, {}).get(filename[: -len(".png")])
        if path is None:
            return None
        real = path.resolve()
        return real if real.is_relative_to(self.models_root) and real.is_file() else None

    def _intervals(self) -> dict[str, tuple[float, float]]:
        n = self.bt.n_votes
        if n == 0:
            return {}
        if self._ci_cache[0] != n:
            self._ci_cache = (n, self.bt.confidence_intervals(self.config.bootstrap_rounds, self.config.seed))
        return self._ci_cache[1]

    def leaderboard(self) -> dict[str, Any]:
        with self._lock:
            mu, sigma = self.ksort.mu.copy(), self.ksort.sigma.copy()
            names, score = self.ksort.models, self.ksort.score_array()
            bt = self.bt.scores() if self.bt.n_votes else {}
            ci = self._intervals()
            n = self.ksort.n_votes
        rows = [{"model": m, "mu": float(mu[i]), "sigma": float(sigma[i]), "score": float(score[i]),
                 "votes": int(self.appearances.get(m, 0)), "bt": bt.get(m),
                 "bt_lo": ci.get(m, (None, None))[0], "bt_hi": ci.get(m, (None, None))[1]}
                for i, m in enumerate(names)]
        rows.sort(key=lambda r: -r["score"])
        for place, r in enumerate(rows, 1):
            r["rank"] = place
        return {"n_votes": n, "k": self.config.k, "eta": self.config.ksort.eta, "rows": rows}

    def info(self) -> dict[str, Any]:
        return {"models": len(self.catalogue), "prompts": len(self.prompts), "k": self.config.k,
                "n_votes": self.ksort.n_votes, "replayed": self.replayed, "store": str(self.store.folder),
                "config": asdict(self.config)}


def create_app(arena: Arena):
    """The FastAPI app over one Arena: pages, JSON API, images; errors as 4xx with the message."""
    from fastapi import FastAPI, Header, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    from cluster.arena_pages import ARENA_CSS, ARENA_JS, LEADERBOARD_HTML, VOTE_HTML

    app = FastAPI(title="evfarm K-Sort arena", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.arena = arena

    status_of = {RateLimited: 429, AdminRequired: 401, TokenConflictError: 409}

    @app.exception_handler(EvfarmUserError)
    async def _user_error(request: Request, exc: EvfarmUserError) -> JSONResponse:
        code = next((c for t, c in status_of.items() if isinstance(exc, t)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/", response_class=HTMLResponse)
    def vote_page() -> str:
        return VOTE_HTML

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page() -> str:
        return LEADERBOARD_HTML

    @app.get("/arena.js")
    def script() -> Response:
        return Response(ARENA_JS, media_type="text/javascript")

    @app.get("/arena.css")
    def style() -> Response:
        return Response(ARENA_CSS, media_type="text/css")

    @app.get("/api/match")
    def api_match() -> dict:
        return arena.match()

    @app.post("/api/vote")
    def api_vote(body: VoteIn) -> dict:
        return arena.vote(body.token, body.session, body.prompt, body.models, body.ranks, body.mode)

    @app.get("/api/leaderboard")
    def api_leaderboard() -> dict:
        return arena.leaderboard()

    @app.get("/api/info")
    def api_info() -> dict:
        return arena.info()

    @app.post("/api/admin/models")
    def api_add_model(body: ModelIn, authorization: str | None = Header(default=None)) -> dict:
        arena.check_admin(authorization)
        return arena.add_model(body.name)

    @app.get("/images/{model}/{filename}")
    def image(model: str, filename: str) -> Response:
        path = arena.image_path(model, filename)
        if path is None:
            return JSONResponse({"detail": f"No image {model}/{filename} in the arena's models folder."},
                                status_code=404)
        return FileResponse(path, media_type="image/png")

    return app
