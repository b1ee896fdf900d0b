"""What every `sweeps/bench_*.py` shares with the sweeps: the common flags, a run directory, tables
written next to `run.json`, and the last `summary:` line (DESIGN house rule 8).

A benchmark module supplies its config class (a frozen dataclass; every knob of the bench is a
field, so `--set seeds=5` and `--config bench.toml` work as for a sweep) and
`body(run: BenchRun) -> dict` that measures, prints and writes tables/plots through `run`, and
returns the extra summary keys. `run_bench` does the rest:

    --config PATH.toml  --set a.b=value ...  --out DIR  --run-id ID  --dry-run  --no-progress
    --num-cpus N  --dashboard                        (the sweep flags; see cluster/sweep_cli.py)

Study flags (`--max-trials`, `--actors`, `--sampler`) set `study.*` and work for benches whose
config embeds a `study: StudyConfig`; for others they are refused with the reason. A benchmark is
not resumable (`--resume` is refused: rerun it, the earlier run directory stays as it was).
Exit status: 0 when the body returned, 2 for bad input (one paragraph on stderr), 130 on Ctrl-C.

A claim the bench makes over seeds goes through `run.claim(name, estimate)` (an Estimate from
methods/metrics/stats.py): it prints the claim line, adds a row to the run's `claims` table
(written as claims.csv/.md before the summary) and returns the summary keys `<name>`, `<name>_lo`,
`<name>_hi` and `<name>_verdict` (`supported` only when the CI excludes zero, else
`not_distinguishable`). A bench that runs one seed makes no such claim. A bench keeps a few
documented shorthand flags (`--seeds 5` for `--set seeds=5`) with `shorthands(Shorthand(...))`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from cluster.config import config_hash, load_config, to_dict
from cluster.rundir import (
    check_results_root,
    check_run_id,
    environment_record,
    new_run_id,
    open_new_run,
    resolve_results_root,
    write_run_json,
)
from cluster.sweep_cli import exit_code, format_table, parse_args, summary_line
from methods.errors import EvfarmUserError
from methods.metrics.stats import Estimate, claim_line, compare

STUDY_FLAGS = (
    ("max_trials", "--max-trials", "n_trials"),
    ("actors", "--actors", "actors"),
    ("sampler", "--sampler", "sampler"),
)


@dataclass
class BenchRun:
    """Handed to a benchmark's body: its config, run directory and the flags that shape the run."""

    bench: str
    config: Any
    run_dir: Path
    num_cpus: int | None = None
    dashboard: bool = False
    progress: bool = True
    files: list[Path] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)

    def claim(
        self, name: str, effect: Estimate, noise_floor: Estimate | float | None = None, what: str = ""
    ) -> dict[str, Any]:
        """Record a claimed effect with its CI; returns its summary keys (value, _lo, _hi, _verdict).

        The verdict is "supported" only when the interval excludes zero (and |effect| is above
        `noise_floor`, when one is given), as `methods.metrics.stats.compare` decides.
        """
        verdict = str(compare(effect, noise_floor)).replace(" ", "_")
        floor = noise_floor.hi if isinstance(noise_floor, Estimate) else noise_floor
        row = {"claim": name, "what": what, "value": effect.value, "lo": effect.lo, "hi": effect.hi,
               "n": effect.n, "level": effect.level, "method": effect.method, "noise_floor": floor,
               "verdict": verdict}
        self.claims.append(row)
        print(f"claim {claim_line(name, effect, noise_floor)}" + (f"  ({what})" if what else ""), flush=True)
        keys = {name: effect.value, f"{name}_lo": effect.lo, f"{name}_hi": effect.hi}
        return {**keys, **({f"{name}_floor": floor} if floor is not None else {}), f"{name}_verdict": verdict}

    def path(self, name: str) -> Path:
        """A file in the run directory (recorded so the summary can list what was written)."""
        p = self.run_dir / name
        self.files.append(p)
        return p

    def table(self, name: str, rows: Sequence[dict[str, Any]], title: str | None = None) -> Path:
        """Print `rows` as a text table and write them as `<name>.csv` and `<name>.md`."""
        rows = [dict(r) for r in rows]
        if title:
            print(f"\n== {title} ==")
        print(format_table(rows), flush=True)
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        with self.path(f"{name}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
        md = self.path(f"{name}.md")
        lines = ([f"## {title}", ""] if title else []) + [
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
        ]
        lines += ["| " + " | ".join(_md_cell(r.get(c)) for c in cols) + " |" for r in rows]
        md.write_text("\n".join(lines) + "\n")
        return md


def run_bench(
    argv: Sequence[str] | None,
    *,
    bench: str,
    description: str,
    config_cls: type,
    body: Callable[[BenchRun], dict[str, Any]],
    add_arguments: Callable[[Any], None] | None = None,
    config_from_args: Callable[[Any], list[str]] | None = None,
) -> int:
    args = parse_args(argv, bench, description, add_arguments)
    return exit_code(
        lambda: _run(args, bench, config_cls, body, config_from_args),
        interrupted="a benchmark does not resume; rerun it",
    )


def _run(args, bench, config_cls, body, config_from_args) -> int:
    if args.resume is not None:
        raise EvfarmUserError(
            f"{bench} is a benchmark and does not resume: rerun it (the earlier run directory stays as "
            f"it was). --resume is for the sweeps."
        )
    overrides = _study_overrides(args, config_cls, bench) + list(args.set)
    overrides += config_from_args(args) if config_from_args else []
    cfg = load_config(config_cls, args.config, overrides)
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2, default=str))
        print("summary: dry_run=1")
        return 0
    root = resolve_results_root(args.out)
    run_id = check_run_id(args.run_id) if args.run_id is not None else new_run_id()
    check_results_root(root)
    run_dir, lock = open_new_run(root, bench, run_id)  # one driver per run directory
    with lock:
        return _bench(args, bench, cfg, body, root, run_dir, run_id)


def _bench(args, bench, cfg, body, root, run_dir, run_id) -> int:
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    record = {
        "sweep": bench,
        "kind": "benchmark",
        "run_id": run_id,
        "created": now,
        "started": now,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        **environment_record(),
    }
    write_run_json(run_dir, record)
    print(f"run directory: {run_dir}  (results root from {root.reason})", flush=True)
    run = BenchRun(bench, cfg, run_dir, args.num_cpus, args.dashboard, not args.no_progress)
    t0 = time.perf_counter()
    extras = body(run) or {}
    if run.claims:
        run.table("claims", run.claims, "claims (CI over seeds or replicates; supported when it excludes 0)")
    summary = {"run_dir": str(run_dir), "seconds": f"{time.perf_counter() - t0:.1f}", **extras}
    write_run_json(run_dir, {**record, "summary": {k: v for k, v in summary.items() if k != "run_dir"}})
    print(summary_line(summary), flush=True)
    return 0


@dataclass(frozen=True)
class Shorthand:
    """A bench's own flag that stands for `--set key=value` (`const`: a flag without a value)."""

    flag: str
    key: str
    type: Callable[[str], Any] = int
    help: str = ""
    const: Any = None


def shorthands(*items: Shorthand) -> dict[str, Callable[[Any], Any]]:
    """`add_arguments` and `config_from_args` for `run_bench` from a few shorthand flags."""

    def dest(item: Shorthand) -> str:
        return "short_" + item.flag.lstrip("-").replace("-", "_")

    def add_arguments(parser: Any) -> None:
        for item in items:
            text = item.help or f"shorthand for --set {item.key}=..."
            if item.const is not None:
                parser.add_argument(item.flag, dest=dest(item), action="store_const", const=item.const,
                                    default=None, help=f"{text} (--set {item.key}={json.dumps(item.const)})")
            else:
                parser.add_argument(item.flag, dest=dest(item), type=item.type, default=None,
                                    metavar=item.key.rsplit(".", 1)[-1].upper(),
                                    help=f"{text} (--set {item.key}=...)")

    def config_from_args(args: Any) -> list[str]:
        out = []
        for item in items:
            value = getattr(args, dest(item))
            if value is not None:
                out.append(f"{item.key}={json.dumps(value)}")
        return out

    return {"add_arguments": add_arguments, "config_from_args": config_from_args}


def _study_overrides(args, config_cls: type, bench: str) -> list[str]:
    has_study = is_dataclass(config_cls) and any(f.name == "study" for f in fields(config_cls))
    out = []
    for attr, flag, key in STUDY_FLAGS:
        value = getattr(args, attr)
        if value is None:
            continue
        if not has_study:
            raise EvfarmUserError(
                f"{flag} sets study.{key}, but {bench} runs no Optuna study. Its knobs are the fields "
                f"of {config_cls.__name__}: see --dry-run, and set them with --set NAME=VALUE."
            )
        out.append(f'study.{key}="{value}"' if key == "sampler" else f"study.{key}={value}")
    return out


def _md_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")
