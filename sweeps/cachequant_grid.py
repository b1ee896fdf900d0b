"""CacheQuant grid: cache interval x schedule x bits x corrections of a diffusion U-Net, on model shards.

    python sweeps/cachequant_grid.py                                 # default grid (`make run`)
    python sweeps/cachequant_grid.py --model /path/to/ddpm-pipeline --device cuda --set task.steps=50
    python sweeps/cachequant_grid.py --set intervals='[2,5,10]' --set task.samples=256

Every trial is one grid point, a flat dict of typed values (interval, schedule, bits, corrections)
that lands as columns of its result row, evaluated by an `actors.model_shard.ModelShardTask`
(pipeline loaded once per actor, FP reference samples from the same fixed noise): MAC speed-up of
the sampling loop (objective, maximised) and a quality objective (minimised): digit-FD of the
samples for the zoo's ddpm-digits, MSE against FP samples from the same noise for any other model
(`--model PATH`; `--set task.quality=mse|digit_fd` to choose), plus BOP speed-up, CPU wall-clock
speed-up and MSE vs FP on every row. Baselines FP / quant-only (interval 1) are always included;
schedules are uniform, DPS and quantization-aware DPS ('qdps', quantized models only); corrections
'none' (the naive DeepCache + PTQ combination) or 'both' (CacheQuant's cache DEC + quantization DEC;
FP models get cache DEC only).

Default sizes (chosen so the grid finishes in a few minutes on a fresh 2-core machine, Ray start
included): ddpm-digits, 20 DDIM steps, 64 evaluated samples, 8 calibration/DPS trajectories,
intervals (3, 5), bits (fp, w8a8, w4a8) -> 35 trials on 2 one-CPU shards. Measured CPU cost on one
core: shard start ~6 s (load, FP reference samples), 3-9 s per trial (FP ~3, W8A8 ~4-6,
quantization-aware DPS ~9), i.e. ~80-100 s of trials per shard; each trial row records its
`cpu_seconds` and the summary line their sum (135 s). Measured wall time of the whole command,
Ray start included: 2.9 min on a 2-core box at load average 2-4; 22.6 min at load average 15-20.
The paper's settings (250 / 50 steps, 64 calibration trajectories, N = 20 / 5) are reachable with --set.
Writes `pareto.png` (speed-up vs digit-FD and vs MSE) and `table.md` into the run directory.

`--set 'quantizers=["qdiffusion","dilatequant"]'` adds, for every quantized point, the same point with
DilateQuant's quantized U-Net (WD + TPQ + BKD, methods/dilatequant.py) inside the cached sampler —
CacheQuant and DilateQuant composed (the `quantizer` column appears only then).
`--set 'cache_points=["", "up.3.res.1"]'` repeats every cached point per cache point (one ResBlock,
`methods.unet_blocks` addresses; "" = DeepCache branch 0; the `cache_point` column appears only then).
`--set task.model=ddpm-scenes` runs the grid on the zoo's 4-level 32x32 colour bed, scored by scene-FD.

`--save-samples N` (config `save_samples`) also writes, after the grid, N images per completed grid
point from the same N noise seeds into `<run dir>/samples/<point>/seed<NNNN>.png` (points named
`n5-dps-w8a8-both`, actors/arena_samples.py): a models folder for a K-Sort arena of the run's
configurations, `evfarm arena serve --models <run dir>/samples`. The driver samples them one point
after another after the grid (about the cost of one trial per point, ~3-9 s each at the defaults).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sweeps/cachequant_grid.py` from a checkout without install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.model_shard import FP_QUANTIZER, ModelShardTask, ShardConfig, ShardPoint
from cluster.results import read_table, summarise_trials
from cluster.study import StudyConfig, StudySpec
from cluster.sweep_cli import add_model_device_arguments, format_table, model_device_overrides, run_sweep
from methods.cachequant import CQ_BITS
from methods.errors import ConfigError
from methods.plotting import legend_handle, new_figure, save_figure
from methods.quant.bits import canonical_bits_list

POINT_FIELDS = ("interval", "schedule", "bits", "corrections")
COLUMNS = (
    "trial_number",
    *POINT_FIELDS,
    "mac_speedup",
    "bop_speedup",
    "wall_speedup",
    "cpu_time_speedup",
    "digit_fd",
    "mse",
    "n_refresh",
    "cpu_seconds",
)


@dataclass(frozen=True)
class CacheQuantGridConfig:
    study: StudyConfig = StudyConfig(sampler="grid", actors=2, profile="shard_cpu1")
    task: ShardConfig = field(default_factory=ShardConfig)
    intervals: tuple[int, ...] = (3, 5)
    schedules: tuple[str, ...] = ("uniform", "dps", "qdps")
    bits: tuple[str, ...] = ("fp", "w8a8", "w4a8")
    corrections: tuple[str, ...] = ("none", "both")
    # the quantized U-Net inside the cached sampler: qdiffusion (CacheQuant's own PTQ) and/or
    # dilatequant (DilateQuant's WD + TPQ + BKD, methods/dilatequant.py): the two lab methods composed
    quantizers: tuple[str, ...] = ("qdiffusion",)
    # where the cache sits: "" = DeepCache branch 0 (the whole shallowest up-block input), or
    # methods.unet_blocks addresses ("up.3.res.1", one ResBlock); every cached point is repeated per entry
    cache_points: tuple[str, ...] = ("",)
    save_samples: int = 0  # images per grid point written to <run dir>/samples for an arena (0 = none)
    version: int = 1

    def __post_init__(self) -> None:
        for name, values in (
            ("intervals", self.intervals),
            ("schedules", self.schedules),
            ("bits", self.bits),
            ("corrections", self.corrections),
            ("quantizers", self.quantizers),
            ("cache_points", self.cache_points),
        ):
            if not values:
                raise ConfigError(f"{name} must not be empty; give at least one value, e.g. {name}=[...].")
        # one spelling in the rows whatever was typed ('W8A8' -> 'w8a8'), checked by the one parser
        object.__setattr__(self, "bits", canonical_bits_list(self.bits, **CQ_BITS))
        if not isinstance(self.save_samples, int) or self.save_samples < 0:
            raise ConfigError(f"save_samples: expected a number of images per grid point (0 = none), "
                              f"got {self.save_samples!r}.")
        bad = [n for n in self.intervals if not isinstance(n, int) or n < 2]
        if bad:
            raise ConfigError(f"intervals: expected cache intervals >= 2 (1 is the baseline), got {bad}.")
        # Each value is validated by the method's own config (the one place that knows the rules).
        probes = [("schedules", {"schedule": v, "bits": "w8a8"}) for v in self.schedules]
        probes += [("bits", {"bits": v}) for v in self.bits]
        probes += [("corrections", {"corrections": v}) for v in self.corrections]
        probes += [("quantizers", {"bits": "w4a4", "quantizer": v}) for v in self.quantizers]
        probes += [("cache_points", {"cache_point": v}) for v in self.cache_points]
        for name, point in probes:
            try:
                ShardPoint(**point).method_config(calib_samples=1)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None


def grid(cfg: CacheQuantGridConfig) -> list[dict[str, Any]]:
    """Baselines (interval 1) then every valid interval x schedule x bits x corrections (x quantizer)
    point; an FP point has no quantizer, so it appears once."""
    def quantizers(bits: str) -> tuple[str, ...]:
        return (FP_QUANTIZER,) if bits == "fp" else cfg.quantizers

    points = [ShardPoint(1, "uniform", b, "none", q) for b in cfg.bits for q in quantizers(b)]
    for n in cfg.intervals:
        for sched in cfg.schedules:
            for b in cfg.bits:
                if sched == "qdps" and b == "fp":
                    continue  # quantization-aware DPS needs a quantized model
                for corr in cfg.corrections:
                    if b == "fp" and corr in ("quant", "both"):
                        corr = "cache" if corr == "both" else "none"  # no quantization error to correct
                    points += [ShardPoint(n, sched, b, corr, q, at) for q in quantizers(b)
                               for at in cfg.cache_points]
    out = [p.to_dict() for p in dict.fromkeys(points)]
    if any("quantizer" in p for p in out):  # a mixed grid: every point names its quantizer
        out = [{**p, "quantizer": p.get("quantizer", FP_QUANTIZER)} for p in out]
    if any("cache_point" in p for p in out):  # and its cache point ("" = branch 0; baselines too)
        out = [{**p, "cache_point": p.get("cache_point", "")} for p in out]
    return out


def point_fields(points: list[dict[str, Any]]) -> tuple[str, ...]:
    """The grid's point columns: `quantizer` / `cache_point` only when some point has a non-default one."""
    extra = tuple(f for f in ("quantizer", "cache_point") if any(f in p for p in points))
    return POINT_FIELDS + extra


def search_space(points: list[dict[str, Any]]) -> dict[str, tuple]:
    """One categorical distribution per point field, its choices in first-seen order."""
    return {f: ("categorical", list(dict.fromkeys(p[f] for p in points))) for f in point_fields(points)}


def build_spec(cfg: CacheQuantGridConfig) -> StudySpec:
    points = grid(cfg)
    return StudySpec(
        sweep="cachequant_grid",
        objectives=("mac_speedup", cfg.task.quality_objective()),
        directions=("maximize", "minimize"),
        space=search_space(points),
        grid=tuple(points),
        task_factory=partial(ModelShardTask, cfg.task),
        study=cfg.study,
    )


def pareto(rows: list[dict[str, Any]], speed: str, quality: str) -> list[dict[str, Any]]:
    """Rows not dominated in (higher `speed`, lower `quality`)."""
    ok = [r for r in rows if r.get(speed) is not None and r.get(quality) is not None]
    return [
        r
        for r in ok
        if not any(
            o[speed] >= r[speed]
            and o[quality] <= r[quality]
            and (o[speed] > r[speed] or o[quality] < r[quality])
            for o in ok
        )
    ]


def report(run_dir: Path, cfg: CacheQuantGridConfig, outcome: Any) -> dict[str, Any]:
    quality = cfg.task.quality_objective()
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    columns = COLUMNS
    at = COLUMNS.index("corrections") + 1
    extra = tuple(f for f in ("quantizer", "cache_point") if any(r.get(f) for r in trials))
    columns = (*COLUMNS[:at], *extra, *COLUMNS[at:])
    if quality != "digit_fd" and quality != "mse":  # scene_fd in place of digit_fd
        columns = tuple(quality if c == "digit_fd" else c for c in columns)
    if any(r.get(f"{quality}_lo") is not None for r in trials):  # the FD's 95 % CI beside it
        i = columns.index(quality) + 1
        columns = (*columns[:i], f"{quality}_lo", f"{quality}_hi", *columns[i:])
    rows = [{k: r.get(k) for k in columns} for r in trials]
    print(format_table(rows))
    if not trials:
        return {}
    (run_dir / "table.md").write_text(_markdown(rows, columns))
    plot = _plot(run_dir, trials, quality)
    print(f"pareto plot: {plot}")
    front = pareto(trials, "bop_speedup", "mse")
    fp = next((r for r in trials if r["interval"] == 1 and r["bits"] == "fp"), None)
    out = {
        "plot": str(plot),
        "table": str(run_dir / "table.md"),
        "pareto_points": len(front),
        "quality_objective": quality,
    }
    out["trial_cpu_seconds"] = sum(r.get("cpu_seconds") or 0.0 for r in trials)
    if fp is not None:
        out[f"fp_{quality}"] = fp[quality]
        for end in ("lo", "hi"):
            if fp.get(f"{quality}_{end}") is not None:
                out[f"fp_{quality}_{end}"] = fp[f"{quality}_{end}"]
    best = max(
        (r for r in trials if r["corrections"] == "both"), key=lambda r: r["mac_speedup"], default=None
    )
    if best is not None:
        out.update(cachequant_mac_speedup=best["mac_speedup"], cachequant_bop_speedup=best["bop_speedup"])
        for key in (quality, f"{quality}_lo", f"{quality}_hi"):
            if key != "mse" and best.get(key) is not None:
                out[f"cachequant_{key}"] = best[key]
    if cfg.save_samples:
        out["samples"] = str(save_samples(run_dir / "samples", cfg, trials))
    return out


def save_samples(folder: Path, cfg: CacheQuantGridConfig, trials: list[dict[str, Any]]) -> Path:
    """Write `cfg.save_samples` images of every completed grid point (same noise seeds) under `folder`."""
    from actors.arena_samples import point_name, write_cachequant_samples

    keys = [f.name for f in fields(ShardPoint)]
    points = [ShardPoint.from_dict({k: r[k] for k in keys if r.get(k) is not None}) for r in trials]
    named = {point_name(p): p for p in points}
    counts = write_cachequant_samples(folder, named, list(range(cfg.save_samples)), steps=cfg.task.steps,
                                      model=cfg.task.model, calib_samples=cfg.task.calib_samples)
    print(f"samples: {sum(counts.values())} images of {len(counts)} grid points in {folder}; "
          f"vote on them with `evfarm arena serve --models {folder}`")
    return folder


def _markdown(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot(run_dir: Path, trials: list[dict[str, Any]], quality: str) -> Path:
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    colors = {"fp": "tab:blue", "w8a8": "tab:green", "w4a8": "tab:red"}
    markers = {"none": "x", "cache": "s", "quant": "^", "both": "o"}
    pairs = (("mac_speedup", quality), ("bop_speedup", "mse"))
    for ax, (speed, quality) in zip(axes, pairs, strict=True):
        for r in trials:
            color, marker = colors.get(r["bits"], "tab:gray"), markers[r["corrections"]]
            ax.scatter(r[speed], r[quality], c=color, marker=marker, s=30)
        front = sorted(pareto(trials, speed, quality), key=lambda r: r[speed])
        ax.plot([r[speed] for r in front], [r[quality] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.set_xlabel(speed.replace("_", " ") + " (x)")
        ax.set_ylabel(quality)
        if speed == "bop_speedup":
            ax.set_xscale("log")
    handles = [legend_handle(color=c, marker="o", ls="", label=b) for b, c in colors.items()]
    handles += [legend_handle(color="k", marker=m, ls="", label=k) for k, m in markers.items()]
    axes[0].legend(handles=handles, fontsize=7)
    fig.suptitle("CacheQuant grid: speed-up vs quality (colour = bits, marker = corrections)")
    fig.tight_layout()
    return save_figure(fig, run_dir / "pareto.png", dpi=120)


def _add_arguments(p) -> None:
    add_model_device_arguments(p, "the shards (uses the shard_gpu1 profile on cuda)")
    p.add_argument("--save-samples", type=int, metavar="N",
                   help="after the grid, write N images per grid point to <run dir>/samples (arena folder)")


def _config_from_args(args) -> list[str]:
    out = model_device_overrides(args, gpu_profile="shard_gpu1")
    if args.save_samples is not None:
        out.append(f"save_samples={args.save_samples}")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_sweep(
        argv,
        sweep="cachequant_grid",
        description=__doc__.splitlines()[0],
        config_cls=CacheQuantGridConfig,
        build_spec=build_spec,
        report=report,
        add_arguments=_add_arguments,
        config_from_args=_config_from_args,
    )


if __name__ == "__main__":
    sys.exit(main())
