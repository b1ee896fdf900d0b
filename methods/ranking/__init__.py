"""Rankers behind one interface: K-Sort Arena (methods/ksort.py) and its baselines, one per file.

Importing this package registers every ranker in `RANKERS`: "ksort", "elo", "bradley_terry",
"trueskill" and "openskill". Build one with `make_ranker(name, models, config)` (a config object)
or `RANKERS.create(name, **config)` (a flat dict of config fields; add models with `add_model`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from methods import ksort  # noqa: F401  (registers "ksort"; works in either import order)
from methods.ranking import bradley_terry, elo, openskill_lib, trueskill_lib  # noqa: F401  (register)
from methods.ranking.base import (
    RANKERS,
    BaseRanker,
    Outcome,
    Ranker,
    VoteError,
    register_ranker,
)

__all__ = ["RANKERS", "BaseRanker", "Outcome", "Ranker", "VoteError", "make_ranker",
           "register_ranker"]


def make_ranker(name: str, models: Iterable[str] = (), config: Any = None) -> BaseRanker:
    """A fresh ranker by registry name; `config=None` takes that ranker's defaults."""
    return RANKERS.get(name)(models=models, config=config)
