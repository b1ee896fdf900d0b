"""Name → extension registries (house rule 1, after timm's `register_model`).

A duplicate name is an error (timm only warns); an unknown name lists the nearest valid names.

>>> reg = Registry("toy")
>>> @reg.register("double")
... def double(x):
...     return 2 * x
>>> reg.get("double")(3)
6
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from methods.errors import DuplicateNameError, UnknownNameError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A dictionary of named extensions of one kind ("method", "zoo model", "corruption", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records the decorated object under `name`."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is registered twice: first by {self._entries[name]!r}, "
                    f"now by {obj!r}. Rename one of them."
                )
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}. {did_you_mean(name, self._entries)} "
                f"Registered: {', '.join(sorted(self._entries)) or '(none)'}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS: Registry[Any] = Registry("method")
register_method = METHODS.register
