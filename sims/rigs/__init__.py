"""Virtual galvo rigs: pure, seeded physical simulations that methods are evaluated in.

`RIGS` maps a rig name to a `RigSpec`: its frozen config class and its single pure entry point,
with one signature for every rig, so `actors/galvo_rig.py` runs any rig the same way:

    evaluate(rig_config, method, method_config, seed) -> dict of results

- "search":  `evaluate_search`; `method` is a `methods.ppm_search.SEARCH_METHODS` strategy;
- "scanner": `evaluate_scanner_method`; `method` is "calib" (methods/galvo3d.py's calibration,
  configured by `CalibConfig`); `evaluate_scanner(rig_config, calib_config, seed)` is the same
  simulation without the method name.

`RIGS.create(name, **rig_config)` gives the rig built from its config (unknown keys refused), to
call as `rig(method, method_config=None, seed=0)`. Importing this package registers both rigs.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from methods.registry import Registry, config_from_dict


@dataclass(frozen=True)
class RigSpec:
    """One virtual rig.

    Args:
        name: registry name.
        config_cls: the rig's frozen config (its physical constants).
        evaluate: `evaluate(rig_config, method, method_config, seed) -> dict`, pure and seeded.
        method_config_cls: `method name -> config class` of the methods this rig runs (an unknown
            name raises `UnknownNameError` listing the known ones).
        default_method: the method a trial runs when it names none.
        metrics: the result keys a farm trial averages over its scenes.
        description: one line for listings.
    """

    name: str
    config_cls: type
    evaluate: Callable[[Any, str, Any, int], dict[str, Any]]
    method_config_cls: Callable[[str], type]
    default_method: str
    metrics: tuple[str, ...]
    description: str = ""

    def create(self, **config: Any) -> Callable[..., dict[str, Any]]:
        """This rig built from `config`: call it as `rig(method, method_config=None, seed=0)`."""
        return functools.partial(self.evaluate, config_from_dict(self.config_cls, config))


RIGS: Registry[RigSpec] = Registry("rig", RigSpec)


def register_rig(spec: RigSpec) -> RigSpec:
    RIGS.register(spec.name)(spec)
    return spec


from sims.rigs.scanner_rig import (  # noqa: E402
    SCANNER_METHOD,
    SCANNER_TRIAL_METRICS,
    ScannerRigConfig,
    evaluate_scanner,
    evaluate_scanner_method,
    scanner_method_config,
)
from sims.rigs.search_rig import (  # noqa: E402
    SEARCH_TRIAL_METRICS,
    SearchRigConfig,
    evaluate_search,
    search_method_config,
)

register_rig(RigSpec("search", SearchRigConfig, evaluate_search, search_method_config, "ppm_search",
                     SEARCH_TRIAL_METRICS,
                     "wide-angle camera + 2-axis galvo + high-speed camera: PPM search (arXiv 2405.04589)"))
register_rig(RigSpec("scanner", ScannerRigConfig, evaluate_scanner_method, scanner_method_config,
                     SCANNER_METHOD, SCANNER_TRIAL_METRICS,
                     "multi-galvanometer light-section 3D scanner (arXiv 2403.01374)"))

__all__ = ["RIGS", "RigSpec", "register_rig", "evaluate_search", "evaluate_scanner",
           "evaluate_scanner_method", "SearchRigConfig", "ScannerRigConfig"]
