"""Frozen-dataclass configs loaded from TOML and overridden with `--set a.b=value`.

Every config is a `@dataclass(frozen=True)` with a `version` field, validated in its own
`__post_init__`. This module turns plain dicts (from TOML) into those dataclasses with type
checking, applies dotted overrides, and serialises configs back for `run.json`, the Arrow schema
metadata and the Optuna study's user attributes (DESIGN decision 8; no Hydra, see infra.md D.5).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy:
...     lr: float = 0.1
...     steps: int = 10
...     version: int = 1
>>> apply_overrides(Toy(), ["steps=20"]).steps
20
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from methods.errors import ConfigError

C = TypeVar("C")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key a config class accepts, nested dataclasses included."""
    keys = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, prefix + f.name + "."))
    return keys


def nearest_keys(key: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The up to `n` dotted keys nearest to `key`, closest first (whole key or last part, ties by name).

    >>> nearest_keys("study.actorz", ["study.seed", "task.actors", "study.actors"])
    ['study.actors', 'task.actors']
    """
    leaf = key.rsplit(".", 1)[-1]

    def score(k: str) -> tuple[float, float]:
        whole = difflib.SequenceMatcher(None, k, key).ratio()
        part = difflib.SequenceMatcher(None, k.rsplit(".", 1)[-1], leaf).ratio()
        return max(whole, part), whole

    ranked = sorted(((score(k), k) for k in set(valid)), key=lambda t: (-t[0][0], -t[0][1], t[1]))
    return [k for (best, _), k in ranked if best >= 0.6][:n]


def _unknown_key(key: str, cls: type, prefix: str) -> ConfigError:
    valid = all_keys(cls)
    near_full = nearest_keys(key, valid)
    hint = f"Did you mean {', '.join(prefix + k for k in near_full)}?" if near_full else ""
    return ConfigError(
        f"Unknown config key {prefix + key!r} for {cls.__name__}. {hint} "
        f"Valid keys: {', '.join(prefix + k for k in valid)}. Fix the TOML file or the --set flag."
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: report X's own message
            return _coerce(value, real[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {tp}, got {value!r} ({type(value).__name__}).")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(
                f"{where}: expected one of {list(get_args(tp))}, got {value!r}. Pick one of those."
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table of {tp.__name__} keys, got {value!r}.")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__}).")
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}: {value!r}.")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in pairs)
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}.")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r} ({type(value).__name__}).")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__}).")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__}).")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__}).")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__}).")
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build config class `cls` from a (nested) mapping; unknown keys are errors."""
    hints = get_type_hints(cls)
    names = set(field_names(cls))
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(key, cls, prefix)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid {cls.__name__} config: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a (nested) config dataclass."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def config_hash(cfg: Any) -> str:
    """A short stable hash of a config's content (sorted JSON), for schema metadata and run.json."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_override(text: str, cfg: Any = None) -> tuple[str, Any]:
    """Split `a.b=value`; the value is read as a TOML literal when it is one, else as a string.

    `cfg` (the config the override is for) makes the error's example a real key of it.
    """
    if "=" not in text:
        raise ConfigError(
            f"--set expects KEY=VALUE, got {text!r}. For example --set {example_override(cfg, text)} "
            f"(the keys: --dry-run prints the resolved config)."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects KEY=VALUE with a non-empty key, got {text!r}.")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def example_override(cfg: Any, text: str = "") -> str:
    """`KEY=VALUE` for a real key of `cfg` (the one `text` names or is nearest to) and its value."""
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return "KEY=VALUE"
    leaves = {}
    for key in all_keys(type(cfg)):
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not dataclasses.is_dataclass(value):
            leaves[key] = value
    wanted = text.strip()
    near = [wanted] if wanted in leaves else nearest_keys(wanted, leaves) if wanted else []
    usable = [k for k in leaves if leaves[k] is not None and k.rsplit(".", 1)[-1] != "version"]
    key = (near or usable or list(leaves) or ["KEY"])[0]
    value = leaves.get(key)
    if value is None:
        return f"{key}=VALUE"
    if isinstance(value, str) and value and " " not in value and "=" not in value:
        return f"{key}={value}"
    return f"{key}={json.dumps(to_dict(value), default=str)}"


def _set_nested(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _check_key_path(cls: type, dotted: str) -> None:
    hints_cls = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(hints_cls) or part not in field_names(hints_cls):
            raise _unknown_key(dotted, cls, "")
        hints_cls = get_type_hints(hints_cls)[part]
        if i < len(parts) - 1 and not dataclasses.is_dataclass(hints_cls):
            raise _unknown_key(dotted, cls, "")


def apply_overrides(cfg: C, overrides: Iterable[str]) -> C:
    """Return a new config with `a.b=value` overrides applied and validated."""
    data = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text, cfg)
        _check_key_path(type(cfg), key)
        # A string given on the command line for a numeric field is a type error, reported as such.
        _set_nested(data, key, value)
    return from_dict(type(cfg), data)


def load_config(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """Defaults of `cls`, updated from a TOML file, then from `--set` overrides."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Pass an existing TOML file to --config.")
        try:
            loaded = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}. Fix the file.") from exc
        cfg = from_dict(cls, _merge(data, loaded))
    else:
        cfg = from_dict(cls, data)
    return apply_overrides(cfg, overrides)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def to_toml(cfg: Any) -> str:
    """Serialise a config as TOML (tables for nested dataclasses); `None` values are omitted."""

    def emit(d: dict[str, Any], table: str) -> list[str]:
        lines, subs = [], []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((k, v))
            elif v is not None:
                lines.append(f"{k} = {json.dumps(v)}")
        out = ([f"[{table}]"] if table and lines else []) + lines
        for k, v in subs:
            out += [""] + emit(v, f"{table}.{k}" if table else k)
        return out

    return "\n".join(emit(to_dict(cfg), "")) + "\n"
