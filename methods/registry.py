"""Name → extension registries (house rule 1, after timm's `register_model` / `create_model`).

Every registry has the same shape:

- **one entry type**, checked when an entry registers: `Registry(kind, entry=PTQMethod)` accepts
  only `PTQMethod` instances (a runtime-checkable `Protocol` for function entries;
  `classes=True` when the entries are classes, as for rankers and tasks);
- **one factory**, `create(name, **config)`, whose meaning the registry's *creator* fixes:

  ==================  ============================================================================
  creator             what `create(name, **config)` does; what `defaults(name)` returns
  ==================  ============================================================================
  `FROM_ENTRY`        (default) `entry.create(**config)`: the entry is an `Entry` (a `config_cls`
                      and a `create` that builds that config from the flat dict, unknown keys
                      refused, e.g. with `config_from_dict`). `defaults`: the fields of
                      `config_cls()`, or None when `config_cls` is None (the entry takes no config).
  `REPLACE_FIELDS`    value entries (frozen dataclasses: actor profiles, devices): a copy with the
                      given fields replaced. `defaults`: the entry's own fields.
  `CONFIG_LESS`       function entries (route planners, corruptions): the entry itself; any
                      config is an error. `defaults`: None.
  ==================  ============================================================================

- a duplicate name is an error (timm only warns); an unknown name lists the closest names;
- **import-complete**: importing the registry's `home` module (a package `__init__` that imports
  its members, or the one module that holds them all) registers every entry. The contract test
  (tests/test_registry.py) finds every registry in the project and checks all of this per entry.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Size:
...     width: int = 1
...     height: int = 1
>>> sizes = Registry("size", entry=Size, creator=REPLACE_FIELDS)
>>> _ = sizes.register("square")(Size(2, 2))
>>> sizes.create("square", height=3)
Size(width=2, height=3)
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from methods.errors import ConfigError, DuplicateNameError, EntryTypeError, UnknownNameError, did_you_mean

T = TypeVar("T")


@runtime_checkable
class Entry(Protocol):
    """An entry of a `FROM_ENTRY` registry: its config class (None: no config) and its factory."""

    config_cls: type | None

    def create(self, **config: Any) -> Any: ...


def _init_fields(obj_or_cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj_or_cls) if f.init]


def check_keys(what: str, config: dict[str, Any], valid: list[str]) -> None:
    """Refuse a key that is not in `valid`, naming the closest valid keys (house rule 8)."""
    for key in config:
        if key not in valid:
            raise ConfigError(f"Unknown {what} key {key!r}. {did_you_mean(key, valid)}")


def config_from_dict(config_cls: type, config: dict[str, Any]) -> Any:
    """`config_cls(**config)`, a frozen dataclass; an unknown key is a `ConfigError` naming the nearest."""
    check_keys(config_cls.__name__, config, _init_fields(config_cls))
    return config_cls(**config)


def config_defaults(config_cls: type) -> dict[str, Any]:
    """The default value of every init field of the dataclass `config_cls` (shallow, not `asdict`)."""
    default = config_cls()
    return {name: getattr(default, name) for name in _init_fields(default)}


class Creator(Protocol):
    """How a registry's `create` and `defaults` work: FROM_ENTRY, REPLACE_FIELDS, CONFIG_LESS, or
    a registry's own (an object with these two methods)."""

    def create(self, entry: Any, config: dict[str, Any]) -> Any: ...

    def defaults(self, entry: Any) -> dict[str, Any] | None: ...


class _FromEntry:
    """`create` calls `entry.create(**config)`; the entry is an `Entry`."""

    def create(self, entry: Any, config: dict[str, Any]) -> Any:
        if getattr(entry, "config_cls", None) is None and config:
            raise ConfigError(f"{entry!r} takes no config; received {sorted(config)}. Call create(name).")
        return entry.create(**config)

    def defaults(self, entry: Any) -> dict[str, Any] | None:
        return None if entry.config_cls is None else config_defaults(entry.config_cls)

    def __repr__(self) -> str:
        return "FROM_ENTRY"


class _ReplaceFields:
    """`create` returns a copy of the (frozen dataclass) entry with the given fields replaced."""

    def create(self, entry: Any, config: dict[str, Any]) -> Any:
        check_keys(type(entry).__name__, config, _init_fields(entry))
        return dataclasses.replace(entry, **config)

    def defaults(self, entry: Any) -> dict[str, Any] | None:
        return {name: getattr(entry, name) for name in _init_fields(entry)}

    def __repr__(self) -> str:
        return "REPLACE_FIELDS"


class _ConfigLess:
    """`create` returns the entry itself (a function); any config is an error."""

    def create(self, entry: Any, config: dict[str, Any]) -> Any:
        if config:
            raise ConfigError(
                f"{getattr(entry, '__name__', entry)!r} takes no config; received {sorted(config)}. "
                "Call create(name) and pass the inputs to the returned function."
            )
        return entry

    def defaults(self, entry: Any) -> dict[str, Any] | None:
        return None

    def __repr__(self) -> str:
        return "CONFIG_LESS"


FROM_ENTRY = _FromEntry()
REPLACE_FIELDS = _ReplaceFields()
CONFIG_LESS = _ConfigLess()


class Registry(Generic[T]):
    """A dictionary of named extensions of one kind ("PTQ method", "zoo model", "corruption", ...).

    Args:
        kind: what one entry is, for messages ("Unknown PTQ method 'qdorp'").
        entry: the entry type every registration is checked against (None: unchecked).
        classes: entries are classes, subclasses of `entry` (rankers, tasks).
        creator: how `create(name, **config)` builds (module docstring); FROM_ENTRY by default.
        ordered: list names in registration order instead of sorted (corruptions: ImageNet-C order).
        home: the module whose import registers every entry (None: the module that defines the
            registry, which then must hold or import every entry).
    """

    def __init__(self, kind: str, entry: type | None = None, *, classes: bool = False,
                 creator: Creator = FROM_ENTRY, ordered: bool = False, home: str | None = None) -> None:
        self.kind = kind
        self.entry = entry
        self.classes = classes
        self.creator = creator
        self.ordered = ordered
        # the defining module, found the way `collections.namedtuple` finds its caller's module
        self.module: str = sys._getframe(1).f_globals.get("__name__", "__main__")
        self.home = home or self.module
        self._entries: dict[str, T] = {}

    def check_entry(self, obj: Any) -> None:
        """Raise `EntryTypeError` unless `obj` is a valid entry of this registry."""
        if self.classes:
            ok = isinstance(obj, type) and (self.entry is None or issubclass(obj, self.entry))
            expected = f"a subclass of {getattr(self.entry, '__name__', 'type')}"
        else:
            ok = self.entry is None or isinstance(obj, self.entry)
            expected = f"a {getattr(self.entry, '__name__', self.entry)}"
        if ok and self.creator is FROM_ENTRY and self.entry is not None:
            ok, expected = isinstance(obj, Entry), f"{expected} with `config_cls` and `create(**config)`"
        if not ok:
            raise EntryTypeError(f"A {self.kind} entry must be {expected}; received {obj!r}.")

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records the decorated object under `name` (its type checked first)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is registered twice: first by {self._entries[name]!r}, "
                    f"now by {obj!r}. Rename one of them."
                )
            self.check_entry(obj)
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}. {did_you_mean(name, self._entries)} "
                f"Registered: {', '.join(self.names()) or '(none)'}."
            ) from None

    def create(self, name: str, /, **config: Any) -> Any:
        """Build entry `name` with `config` (what that means: the registry's creator, above).

        `name` is positional-only, so a config may itself have a `name` field (devices, LLM configs).
        """
        return self.creator.create(self.get(name), config)

    def defaults(self, name: str) -> dict[str, Any] | None:
        """The config `create(name)` uses when given none; None when the entry takes no config."""
        return self.creator.defaults(self.get(name))

    def names(self) -> list[str]:
        return list(self._entries) if self.ordered else sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
