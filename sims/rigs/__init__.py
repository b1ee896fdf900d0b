"""Virtual galvo rigs: pure, seeded physical simulations that methods are evaluated in.

`RIGS` maps a rig name to a `RigSpec`: its frozen config class and its single pure entry point.
`actors/galvo_rig.py` holds one rig per actor and calls `spec.evaluate`:

- "search":  evaluate_search(rig_config, method_name, method_config, seed) -> dict
- "scanner": evaluate_scanner(rig_config, calib_config, seed) -> dict
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from methods.registry import Registry


@dataclass(frozen=True)
class RigSpec:
    name: str
    config_cls: type
    evaluate: Callable[..., dict[str, Any]]
    description: str = ""


RIGS: Registry[RigSpec] = Registry("rig")


def register_rig(spec: RigSpec) -> RigSpec:
    RIGS.register(spec.name)(spec)
    return spec


from sims.rigs.scanner_rig import ScannerRigConfig, evaluate_scanner  # noqa: E402
from sims.rigs.search_rig import SearchRigConfig, evaluate_search  # noqa: E402

register_rig(RigSpec("search", SearchRigConfig, evaluate_search,
                     "wide-angle camera + 2-axis galvo + high-speed camera: PPM search (arXiv 2405.04589)"))
register_rig(RigSpec("scanner", ScannerRigConfig, evaluate_scanner,
                     "multi-galvanometer light-section 3D scanner (arXiv 2403.01374)"))

__all__ = ["RIGS", "RigSpec", "register_rig", "evaluate_search", "evaluate_scanner",
           "SearchRigConfig", "ScannerRigConfig"]
