"""The durable vote store of a K-Sort arena: one SQLite file in WAL mode, a row per vote.

Paper: "K-Sort Arena" (Li et al., arXiv 2408.14468): a platform where people rank K images of K
models for one prompt. The paper says nothing about storage; everything here is our design
[ours]:

- Why SQLite in WAL mode: one file in the store folder, in the standard library, transactional;
  `synchronous=FULL` makes a commit durable before the vote is acknowledged, so a killed server
  (SIGKILL, power loss) loses nothing it answered; WAL lets the leaderboard read while a vote is
  written. One arena server is the only writer (a lock serialises writes inside the process).
- A vote row: `seq` (the order votes were applied), `token` (the client's idempotency key,
  UNIQUE: a resubmitted vote counts once), `session`, `prompt`, `models` and `ranks` (JSON lists,
  ranks 0 = best, in "rank" or "best" mode as `methods.ranking.base.Outcome`), `k`, `created`
  (unix seconds) and `source` ("web", "import", ...).
- Models are rows too (`name`, `after_seq` = the number of votes stored when it entered), so a
  replay adds each model at the point where it joined: a model added while the arena runs
  (the paper's new-model procedure: it enters at μ0, σ0 with zero comparisons, so the fewest-
  comparisons pivot picks it at once) has the same state after a restart as before.
- `replay(ranker)` rebuilds any ranker from the rows in `seq` order; the server calls it on start.
- Parquet export/import (pyarrow) carries the rows with their tokens, so importing the same file
  twice, or a file that overlaps the store, adds each vote once. Every imported row is validated
  like a posted vote before anything is written; one bad row refuses the whole file.
- A resubmitted token with a *different* payload is refused (`TokenConflictError`), never
  silently merged.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods.errors import EvfarmUserError
from methods.ranking.base import BaseRanker, Outcome, VoteError

STORE_FILE = "arena.sqlite"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # model, prompt, session, token names
SCHEMA_VERSION = 1
PARQUET_COLUMNS = ("seq", "token", "session", "prompt", "models", "ranks", "mode", "k", "created", "source")


class ArenaStoreError(EvfarmUserError):
    """The store folder or an imported file cannot be used as an arena store."""


class TokenConflictError(VoteError):
    """A vote token already stored with a different payload."""


def check_name(kind: str, value: Any) -> str:
    """A model / prompt / session / token name: 1-64 of letters, digits, `_ . -`, no leading dot."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise VoteError(f"{kind} must be 1-64 characters of letters, digits, '_', '.', '-' starting with a "
                        f"letter or digit; got {value!r}.")
    return value


@dataclass(frozen=True)
class VoteRow:
    seq: int
    token: str
    session: str
    prompt: str
    models: tuple[str, ...]
    ranks: tuple[int, ...]
    mode: str
    created: float
    source: str

    @property
    def k(self) -> int:
        return len(self.models)

    def outcome(self) -> Outcome:
        return Outcome(self.ranks, self.mode)

    def payload(self) -> tuple:
        """What must match for a resubmission under the same token to count as the same vote."""
        return (self.session, self.prompt, self.models, self.ranks, self.mode)


def validate_vote(models: Sequence[str], ranks: Sequence[int], mode: str, known: Iterable[str],
                  k: int | None = None) -> Outcome:
    """The vote's Outcome, or a VoteError saying what is wrong (nothing is stored on error).

    Over the web a "rank" vote is a strict order (a permutation of 0..K-1): the page has no tie
    control, so equal ranks mean a broken client; "best" is one 0 and 1 elsewhere.
    """
    models = [check_name("model", m) for m in models]
    known = set(known)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise VoteError(f"Unknown model(s) {unknown}; the arena has {sorted(known)}.")
    if len(set(models)) != len(models):
        raise VoteError(f"A vote shows distinct models; got duplicates in {models}.")
    if k is not None and len(models) != k:
        raise VoteError(f"This arena shows K={k} models per vote; got {len(models)} ({models}).")
    if len(ranks) != len(models):
        raise VoteError(f"One rank per model expected: {len(models)} models, got {len(ranks)} ranks.")
    if any(not isinstance(r, int) or isinstance(r, bool) for r in ranks):
        raise VoteError(f"Ranks must be integers (0 = best); got {list(ranks)}.")
    if mode == "rank" and sorted(ranks) != list(range(len(models))):
        raise VoteError(f"A 'rank' vote orders the K models 0 (best) .. {len(models) - 1} with each rank "
                        f"once; got {list(ranks)} (duplicate or missing ranks).")
    return Outcome(tuple(ranks), mode)  # checks the mode and the "best" shape


class ArenaStore:
    """Votes and models of one arena in `folder/arena.sqlite` (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ArenaStoreError(f"The arena store must be a folder; {self.folder} is a file. "
                                  f"Pass a folder path with --store.")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / STORE_FILE
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise ArenaStoreError(f"{self.path} is not a readable arena store ({exc}); point --store "
                                  f"at an empty folder or at a folder written by `evfarm arena`.") from exc

    def _create(self) -> None:
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS models (
                name TEXT PRIMARY KEY, after_seq INTEGER NOT NULL, added REAL NOT NULL,
                ord INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS votes (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT NOT NULL UNIQUE,
                session TEXT NOT NULL, prompt TEXT NOT NULL, models TEXT NOT NULL,
                ranks TEXT NOT NULL, mode TEXT NOT NULL, k INTEGER NOT NULL,
                created REAL NOT NULL, source TEXT NOT NULL);
            """
        )
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ArenaStoreError(f"{self.path} has store schema {row[0]}, this evfarm reads "
                                  f"{SCHEMA_VERSION}; export it with the evfarm that wrote it.")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- models ------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names in the order they entered."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM models ORDER BY ord")]

    def model_entries(self) -> list[tuple[str, int]]:
        """(name, after_seq) in entry order: the model joined after vote `after_seq`."""
        with self._lock:
            return [(r[0], r[1]) for r in self._db.execute("SELECT name, after_seq FROM models ORDER BY ord")]

    def add_model(self, name: str) -> bool:
        """Register a model (entering after the votes stored so far); False if it was there."""
        check_name("model", name)
        with self._lock:
            return self._add_model_locked(name)

    def _add_model_locked(self, name: str) -> bool:
        if self._db.execute("SELECT 1 FROM models WHERE name=?", (name,)).fetchone():
            return False
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM votes").fetchone()[0]
        ord_ = self._db.execute("SELECT COALESCE(MAX(ord), 0) + 1 FROM models").fetchone()[0]
        self._db.execute("INSERT INTO models VALUES (?, ?, ?, ?)", (name, seq, time.time(), ord_))
        return True

    # --- votes -------------------------------------------------------------------------------
    def record_vote(self, token: str, session: str, prompt: str, models: Sequence[str],
                    ranks: Sequence[int], mode: str, *, k: int | None = None, source: str = "web",
                    created: float | None = None) -> tuple[VoteRow, bool]:
        """Validate and store one vote durably; returns (row, new). A known token returns the
        stored row with new=False (idempotent), or raises TokenConflictError if the payload differs."""
        check_name("token", token)
        check_name("session", session)
        check_name("prompt", prompt)
        with self._lock:
            outcome = validate_vote(models, ranks, mode, self._known_locked(), k)
            want = (session, prompt, tuple(models), tuple(outcome.ranks), outcome.mode)
            old = self._by_token_locked(token)
            if old is not None:
                return self._same_or_conflict(old, want), False
            ts = time.time() if created is None else float(created)
            cur = self._db.execute(
                "INSERT INTO votes (token, session, prompt, models, ranks, mode, k, created, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token, session, prompt, json.dumps(list(models)), json.dumps(list(outcome.ranks)),
                 outcome.mode, len(models), ts, source))
            return VoteRow(int(cur.lastrowid), token, *want, ts, source), True

    @staticmethod
    def _same_or_conflict(old: VoteRow, want: tuple) -> VoteRow:
        if old.payload() != want:
            raise TokenConflictError(f"Vote token {old.token!r} was already used for another vote "
                                     f"(vote #{old.seq}); send a fresh token for a new vote.")
        return old

    def _known_locked(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM models")]

    def _by_token_locked(self, token: str) -> VoteRow | None:
        row = self._db.execute("SELECT * FROM votes WHERE token=?", (token,)).fetchone()
        return None if row is None else _row(row)

    def votes_by_token(self, token: str) -> VoteRow | None:
        with self._lock:
            return self._by_token_locked(token)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def votes(self, after_seq: int = 0) -> list[VoteRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM votes WHERE seq > ? ORDER BY seq", (after_seq,)).fetchall()
        return [_row(r) for r in rows]

    def tokens(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT token FROM votes")}

    # --- rebuilding a ranker -----------------------------------------------------------------
    def replay(self, *rankers: BaseRanker) -> int:
        """Apply every stored vote in order to fresh rankers, adding models where they entered.

        Returns the number of votes replayed. The rankers must start without models.
        """
        entries, votes = self.model_entries(), self.votes()
        i = 0
        for vote in votes:
            while i < len(entries) and entries[i][1] < vote.seq:
                for r in rankers:
                    r.add_model(entries[i][0])
                i += 1
            for r in rankers:
                r.update(vote.models, vote.outcome())
        for name, _ in entries[i:]:
            for r in rankers:
                r.add_model(name)
        return len(votes)

    # --- Parquet -----------------------------------------------------------------------------
    def export_parquet(self, path: str | Path) -> int:
        """Write every vote to `path` (Parquet, written to a temp file then renamed); returns the count."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.votes()
        table = pa.table({
            "seq": pa.array([r.seq for r in rows], pa.int64()),
            "token": pa.array([r.token for r in rows], pa.string()),
            "session": pa.array([r.session for r in rows], pa.string()),
            "prompt": pa.array([r.prompt for r in rows], pa.string()),
            "models": pa.array([list(r.models) for r in rows], pa.list_(pa.string())),
            "ranks": pa.array([list(r.ranks) for r in rows], pa.list_(pa.int64())),
            "mode": pa.array([r.mode for r in rows], pa.string()),
            "k": pa.array([r.k for r in rows], pa.int64()),
            "created": pa.array([r.created for r in rows], pa.float64()),
            "source": pa.array([r.source for r in rows], pa.string()),
        }, metadata={"evfarm.arena_store_schema": str(SCHEMA_VERSION)})
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        return len(rows)

    def import_parquet(self, path: str | Path, *, add_models: bool = True) -> tuple[int, int]:
        """Replay a Parquet file of votes into this store; returns (added, already present).

        All rows are validated first (names, K, ranks); one bad row refuses the file and nothing
        is written. Models the file names but the store lacks are added (entering before the
        first vote that names them) when `add_models`, else refused as unknown.
        """
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise ArenaStoreError(f"Cannot read {path} as Parquet ({exc}); pass a file written by "
                                  f"`evfarm arena export`.") from exc
        needed = ("token", "session", "prompt", "models", "ranks", "mode")
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise ArenaStoreError(f"{path} lacks the vote column(s) {missing}; expected the columns "
                                  f"of `evfarm arena export`: {list(PARQUET_COLUMNS)}.")
        rows = table.to_pylist()
        if "seq" in table.column_names:
            rows.sort(key=lambda r: r["seq"])
        with self._lock:
            known = set(self._known_locked())
            new_models = [m for r in rows for m in (r["models"] or []) if m not in known]
            if new_models and not add_models:
                raise VoteError(f"{path} names model(s) {sorted(set(new_models))} that this store lacks.")
            seen: dict[str, tuple] = {}
            for n, r in enumerate(rows):
                try:
                    for key in ("token", "session", "prompt"):
                        check_name(key, r[key])
                    outcome = validate_vote(r["models"] or [], r["ranks"] or [], r["mode"],
                                            known | set(new_models))
                except VoteError as exc:
                    raise VoteError(f"{path}, row {n}: {exc} Nothing was imported.") from None
                want = (r["session"], r["prompt"], tuple(r["models"]), outcome.ranks, outcome.mode)
                if seen.setdefault(r["token"], want) != want:
                    raise TokenConflictError(f"{path}: token {r['token']!r} names two different votes.")
            added = present = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    for m in r["models"]:
                        self._add_model_locked(m)
                    old = self._by_token_locked(r["token"])
                    if old is not None:
                        self._same_or_conflict(old, seen[r["token"]])
                        present += 1
                        continue
                    self._db.execute(
                        "INSERT INTO votes (token, session, prompt, models, ranks, mode, k, created, source) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r["token"], r["session"], r["prompt"], json.dumps(list(r["models"])),
                         json.dumps(list(r["ranks"])), r["mode"], len(r["models"]),
                         float(r.get("created") or time.time()), "import"))
                    added += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added, present


def _row(r: tuple) -> VoteRow:
    seq, token, session, prompt, models, ranks, mode, _k, created, source = r
    return VoteRow(int(seq), token, session, prompt, tuple(json.loads(models)),
                   tuple(int(x) for x in json.loads(ranks)), mode, float(created), source)
