"""One virtual galvo rig per actor: a task class for the generic evaluator (`actors/evaluator.py`).

Placed with the profile `rig_virtual` (1 CPU + the custom resource `galvo_rig`, cluster/resources.py),
so a farm of N actors is N virtual rigs. The rig — its registry entry in `sims.rigs.RIGS` and its
base config (defaults + the sweep's fixed overrides, validated once) — is built in `__init__`;
a trial runs one method on it over a few seeded scenes (search rig) or as-built rigs (scanner).

Rigs and papers: "search" = wide-area PPM search, arXiv 2405.04589 (`sims/rigs/search_rig.py`,
`methods/ppm_search.py`); "scanner" = multi-galvanometer light-section 3D scanner, arXiv 2403.01374
(`sims/rigs/scanner_rig.py`, `methods/galvo3d.py`). Everything in this file is our design
[inferred]: the parameter naming, the seeding and the averaging over scenes. No maths lives here.

Trial params: names starting with `rig_` override rig fields (`rig_settle_s`); `method` picks one
of the rig's methods (a search strategy; "calib" on the scanner); every other name is a field of
that method's config (`budget`, `gamma`, `tiers`, `n_joint_points`). Every rig is run the same way,
through `RigSpec.evaluate(rig_config, method, method_config, seed)`; no rig is special-cased here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError, did_you_mean
from sims.rigs import RIGS

RIG_PREFIX = "rig_"


@dataclass(frozen=True)
class GalvoRigTaskConfig(ConfigDict):
    """What every trial on one rig shares.

    rig: a `sims.rigs.RIGS` name ("search", "scanner"). rig_overrides: fixed rig fields. method:
    the default method (None: the rig's `default_method`; a trial's `method` param wins).
    method_overrides: {method name: {field: value}}, e.g. {"ppm": {...}} on the search rig,
    {"calib": {...}} on the scanner. scenes: seeds averaged per trial. scene_seed: None →
    scenes derive from the trial seed; an int → every trial meets the same scenes (paired).
    curve_points: points of the landed recall-vs-shots/time curve (search rig).
    """

    rig: str = "search"
    rig_overrides: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenes: int = 1
    scene_seed: int | None = None
    curve_points: int = 20
    version: int = 1

    def __post_init__(self) -> None:
        RIGS.get(self.rig)  # unknown rigs list the known ones
        if self.scenes < 1 or self.curve_points < 1:
            raise ConfigError(f"Need scenes ≥ 1 and curve_points ≥ 1; received {self.scenes}, "
                              f"{self.curve_points}.")


def with_overrides(cls: type, base: Any, overrides: dict[str, Any], what: str) -> Any:
    """`replace(base, **overrides)` with unknown keys reported by name (and the config validated)."""
    valid = {f.name for f in fields(cls)}
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"Unknown {what} field {key!r} for {cls.__name__}. {did_you_mean(key, valid)}")
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(base, **vals)


def scene_seeds(scene_seed: int, n: int) -> list[int]:
    """n independent scene seeds from one base (stable across processes)."""
    return [int(s) for s in np.random.SeedSequence(scene_seed).generate_state(n) & 0x7FFFFFFF]


def _assigned_galvo_rig() -> float:
    """The `galvo_rig` resource this process holds (0 outside a Ray actor)."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return 0.0  # a driver (or no Ray at all) holds no actor resources
    return float(ray.get_runtime_context().get_assigned_resources().get("galvo_rig", 0.0))


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = np.array([r.get(key, np.nan) for r in rows], dtype=float)
    return float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else float("nan")


@register_task("galvo_rig")
class GalvoRigTask:
    """The evaluator's task: one rig, a method per trial (see the module docstring)."""

    def __init__(self, cfg: GalvoRigTaskConfig) -> None:
        self.cfg = cfg
        self.spec = RIGS.get(cfg.rig)
        self.rig = with_overrides(self.spec.config_cls, self.spec.config_cls(), cfg.rig_overrides, "rig")
        self.galvo_rig = _assigned_galvo_rig()
        self.trials_run = 0

    def evaluate(self, params: dict[str, Any], *, seed: int, trial: int, chunk: int,
                 n_chunks: int) -> dict[str, Any]:
        rig_over = {k[len(RIG_PREFIX):]: v for k, v in params.items() if k.startswith(RIG_PREFIX)}
        rest = {k: v for k, v in params.items() if not k.startswith(RIG_PREFIX)}
        rig = with_overrides(self.spec.config_cls, self.rig, rig_over, "rig")
        base = seed if self.cfg.scene_seed is None else self.cfg.scene_seed
        seeds = scene_seeds(base, self.cfg.scenes)
        name = rest.pop("method", self.cfg.method or self.spec.default_method)
        mcls = self.spec.method_config_cls(name)
        over = {**self.cfg.method_overrides.get(name, {}), **rest}
        mcfg = with_overrides(mcls, mcls(), over, f"{name} method")
        runs = [self.spec.evaluate(rig, name, mcfg, s) for s in seeds]  # one signature for every rig
        # every mean goes out as an objective: the study takes the ones it optimises, the rest
        # become columns of the trial row
        means = {k: _mean(runs, k) for k in self.spec.metrics if any(k in r for r in runs)}
        self.trials_run += 1
        out = {"objectives": means, "metrics": {"method": name, "galvo_rig": self.galvo_rig,
                                                "rig_trials_run": self.trials_run, "scenes": len(seeds)}}
        if all("curve_recall" in r for r in runs):  # rigs that report a per-shot curve land it
            out["rows"] = self._curve(runs)
        return out

    def _curve(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Mean recall and detection time at evenly spaced shot counts (the same for every scene)."""
        n = min(len(r["curve_recall"]) for r in runs)
        if n == 0:
            return []
        shots = np.unique(np.ceil(np.linspace(0, n, self.cfg.curve_points + 1)[1:]).astype(int))
        rec = np.mean([np.asarray(r["curve_recall"])[shots - 1] for r in runs], axis=0)
        t = np.mean([np.asarray(r["curve_time_s"])[shots - 1] for r in runs], axis=0)
        return [{"row_kind": "curve", "curve_shot": int(s), "curve_time_s": float(ti),
                 "curve_recall": float(ri)} for s, ti, ri in zip(shots, t, rec, strict=True)]
