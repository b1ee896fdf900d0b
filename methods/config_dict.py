"""`to_dict` / `from_dict` for the frozen config dataclasses of methods/ (house rule: configs
round-trip through dicts and TOML; an unknown key is an error that names the nearest valid keys).

Pure: the farm's TOML and `--set` handling lives in `cluster/config.py`, which methods/ may not import.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from methods.errors import ConfigError, did_you_mean

C = TypeVar("C", bound="ConfigDict")


class ConfigDict:
    """Mixin for `@dataclass(frozen=True)` configs."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                raise ConfigError(f"Unknown {cls.__name__} key {key!r}. {did_you_mean(key, names)}")
        return cls(**data)
