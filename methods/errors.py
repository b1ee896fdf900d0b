"""Typed exceptions shared by every package of evfarm.

Each error message says what was expected, what was received and what to do (house rule 6).
`EvfarmUserError` and its subclasses are bad input from a person: command-line entry points turn
them into a one-paragraph message and exit status 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EvfarmError(Exception):
    """Base class of every error evfarm raises on purpose."""


class EvfarmUserError(EvfarmError):
    """Bad input from a person (config, flag, path): exit status 2, nothing written is touched."""


class ConfigError(EvfarmUserError, ValueError):
    """A configuration value or key is invalid."""


class UnknownNameError(EvfarmUserError, LookupError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(EvfarmError):
    """Two extensions registered under one name (a programming error, caught at import)."""


class EntryTypeError(EvfarmError, TypeError):
    """An object registered in a registry is not of that registry's entry type (caught at import)."""


class CheckpointError(EvfarmUserError):
    """A checkpoint or data file is missing, corrupted or of the wrong kind."""


class ResultsError(EvfarmUserError):
    """A results directory is not an evfarm run, or is unreadable."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The up to `n` choices nearest to `name` (difflib ratio at least 0.4), closest first, ties by name.

    >>> closest("ab", ["aa", "ad", "ac", "abc"])
    ['abc', 'aa', 'ac']
    """
    scored = [(difflib.SequenceMatcher(None, c, name).ratio(), c) for c in set(choices)]
    return [c for r, c in sorted(scored, key=lambda t: (-t[0], t[1])) if r >= 0.4][:n]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A sentence suggesting the closest choices, or listing all of them when none is close."""
    choices = sorted(choices)
    near = closest(name, choices)
    if near:
        return f"Did you mean {', '.join(repr(c) for c in near)}?"
    return f"Valid choices: {', '.join(choices) or '(none registered)'}."
