"""What every `sweeps/*.py` entry point shares: flags, run directory, start/end messages, exit code.

A sweep module supplies its config class (a frozen dataclass with a `study: StudyConfig` field),
`build_spec(cfg) -> StudySpec`, and optionally `report(run_dir, cfg, outcome) -> dict` (table,
plots, extra summary keys). `run_sweep` does the rest (infra.md D.1, DESIGN house rule 8):

    --config PATH.toml  --set a.b=value ...  --out DIR  --run-id ID  --resume [RUN_DIR]
    --max-trials N  --actors N  --sampler NAME  --dry-run  --no-progress  --dashboard
    --num-cpus N  --roll-seconds S

It prints the run directory at start and, as its very last line, `summary: key=value ...`.
Exit status: 0 when at least one trial completed, 1 when every trial failed, 2 for bad input
(one paragraph on stderr; no existing result is touched).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cluster.config import apply_overrides, config_hash, from_dict, load_config, to_dict
from cluster.connect import connect, project_env_defaults
from cluster.rundir import (
    JOURNAL,
    check_run_dir,
    create_run_dir,
    environment_record,
    latest_run,
    new_run_id,
    read_run_json,
    resolve_results_root,
    write_run_json,
)
from cluster.search import distributions, grid_points, make_sampler
from cluster.study import StudyOutcome, StudyRunner, StudySpec
from methods.errors import EvfarmUserError


def build_parser(sweep: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"sweeps/{sweep}.py", description=description)
    p.add_argument("--config", help="TOML file with config values (defaults are the config class's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set study.actors=4 (repeatable)",
    )
    p.add_argument("--out", help="results root (default: $EVFARM_RESULTS, else ./results)")
    p.add_argument("--run-id", help="name of the run directory (default: time stamp + random suffix)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run (default: the latest run of this sweep)",
    )
    p.add_argument("--max-trials", type=int, help="shorthand for --set study.n_trials=N")
    p.add_argument("--actors", type=int, help="shorthand for --set study.actors=N")
    p.add_argument("--sampler", help="shorthand for --set study.sampler=NAME (grid, tpe, nsga2, random)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and first trials, then exit"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dashboard", action="store_true", help="start the Ray dashboard (127.0.0.1) of an embedded cluster"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded local cluster (default: all)")
    p.add_argument(
        "--roll-seconds",
        type=float,
        default=10.0,
        help="publish the live segment as a Parquet part at least this often (default 10 s)",
    )
    return p


def _shorthands(args: argparse.Namespace) -> list[str]:
    out = []
    if args.max_trials is not None:
        out.append(f"study.n_trials={args.max_trials}")
    if args.actors is not None:
        out.append(f"study.actors={args.actors}")
    if args.sampler is not None:
        out.append(f'study.sampler="{args.sampler}"')
    return out + list(args.set)


def run_sweep(
    argv: Sequence[str] | None,
    *,
    sweep: str,
    description: str,
    config_cls: type,
    build_spec: Callable[[Any], StudySpec],
    report: Callable[[Path, Any, StudyOutcome], dict[str, Any]] | None = None,
    cluster_resources: dict[str, float] | Callable[[Any], dict[str, float]] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    config_from_args: Callable[[argparse.Namespace], list[str]] | None = None,
    check_cluster: Callable[[Any, dict[str, float]], None] | None = None,
) -> int:
    """Run one sweep from the command line (module docstring).

    `cluster_resources`: custom resources of an embedded cluster, or a function of the resolved
    config returning them (a "CPU" entry is the default of --num-cpus). `check_cluster(cfg,
    ray.cluster_resources())` runs once connected, before any run directory is made or changed;
    it raises an `EvfarmUserError` when the cluster cannot hold what the sweep needs.
    """
    project_env_defaults()
    parser = build_parser(sweep, description)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        placement = (cluster_resources, check_cluster)
        return _run(args, sweep, config_cls, build_spec, report, placement, config_from_args)
    except EvfarmUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun with --resume to continue this run", file=sys.stderr)
        return 130


def _run(args, sweep, config_cls, build_spec, report, placement, config_from_args) -> int:
    overrides = _shorthands(args) + (config_from_args(args) if config_from_args else [])
    root = resolve_results_root(args.out)
    resume = args.resume is not None
    if resume:
        if args.config:
            raise EvfarmUserError(
                "--config cannot be combined with --resume: a resumed run keeps the config it started "
                "with. Use --set for changes such as study.actors=4."
            )
        run_dir = check_run_dir(args.resume) if args.resume else latest_run(root.path, sweep)
        record = read_run_json(run_dir)
        cfg = apply_overrides(from_dict(config_cls, record["config"]), overrides)
        run_id = record["run_id"]
    else:
        cfg = load_config(config_cls, args.config, overrides)
        spec = build_spec(cfg)  # validate everything before a directory is created
        if args.dry_run:
            return _dry_run(cfg, spec)
        run_id = args.run_id or new_run_id()
    spec = build_spec(cfg)
    import ray

    owned = not ray.is_initialized()
    resources, check_cluster = placement
    resources = dict(resources(cfg) if callable(resources) else resources or {})
    cpus = args.num_cpus if args.num_cpus is not None else resources.pop("CPU", None)
    resources.pop("CPU", None)
    info = connect(cpus, dashboard=args.dashboard, resources=resources or None)
    try:
        if check_cluster is not None:
            check_cluster(cfg, ray.cluster_resources())  # before a run directory is made or changed
        if not resume:
            run_dir = create_run_dir(root.path, sweep, run_id)
            record = {"sweep": sweep, "run_id": run_id, "created": _now(), "resumed": []}
        record.update(config=to_dict(cfg), config_hash=config_hash(cfg), **environment_record())
        if resume:
            record.setdefault("resumed", []).append(_now())
        record["base_seed"] = cfg.study.seed
        write_run_json(run_dir, record)
        print(f"run directory: {run_dir}  (results root from {root.reason})", flush=True)
        print(
            f"study: {sweep}  sampler={cfg.study.sampler}  actors={cfg.study.actors}  "
            f"dashboard: optuna-dashboard {run_dir / JOURNAL}",
            flush=True,
        )
        where = "embedded local cluster" if info.embedded else "cluster " + info.address
        print(
            f"ray: {where}, {info.nodes} node(s), {info.cpus:g} CPU, {info.gpus:g} GPU, "
            f"auth={info.auth_mode or 'default'}"
            + (f", dashboard {info.dashboard_url}" if info.dashboard_url else ""),
            flush=True,
        )
        metadata = {
            "evfarm.run_id": run_id,
            "evfarm.sweep": sweep,
            "evfarm.config_hash": record["config_hash"],
            "evfarm.git_sha": str(record.get("git_sha")),
            "evfarm.versions": json.dumps(record["versions"]),
        }
        runner = StudyRunner(
            spec,
            run_dir,
            run_id,
            metadata,
            progress=not args.no_progress,
            sink_roll_seconds=args.roll_seconds,
        )
        outcome = runner.run(resume=resume)
    finally:
        if owned:
            ray.shutdown()
    from cluster.plots import write_study_plots

    study_plots = write_study_plots(runner.study, spec.objectives, run_dir)
    extras = report(run_dir, cfg, outcome) if report is not None else {}
    if study_plots:
        print("study plots: " + ", ".join(str(p) for p in study_plots))
    if outcome.best:
        print("best:" if len(spec.objectives) == 1 else "pareto front:")
        print(format_table(outcome.best))
    summary = {
        "run_dir": str(run_dir),
        "complete": outcome.complete,
        "failed": outcome.failed,
        "pruned": outcome.pruned,
        "retried": outcome.retried,
        "rows": outcome.rows_written,
        "recovered_rows": outcome.recovered_rows,
        "seconds": f"{outcome.seconds:.1f}",
        **extras,
    }
    if len(spec.objectives) == 1 and outcome.best:
        summary[f"best_{spec.objectives[0]}"] = _fmt(outcome.best[0][spec.objectives[0]])
    print(summary_line(summary), flush=True)
    completed_before = len(outcome.best) > 0
    return 0 if (outcome.complete > 0 or completed_before) else 1


def _dry_run(cfg: Any, spec: StudySpec, n: int = 5) -> int:
    print(json.dumps(to_dict(cfg), indent=2, default=str))
    if spec.study.sampler == "grid":
        points = grid_points(spec.space, spec.grid)
        shown = points if spec.grid is not None else points[:n]  # an explicit list is shown whole
        label = "explicit points" if spec.grid is not None else f"first {len(shown)}"
        print(f"grid: {len(points)} points; {label}:")
        for p in shown:
            print("  ", p)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=list(spec.directions), sampler=make_sampler(spec.study, 1))
        print(f"first {n} parameter sets of sampler {spec.study.sampler}:")
        for _ in range(n):
            print("  ", study.ask(distributions(spec.space)).params)
    print("summary: dry_run=1")
    return 0


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def summary_line(summary: dict[str, Any]) -> str:
    """The machine-readable last line of every sweep and bench: `summary: key=value ...`."""
    return "summary: " + " ".join(f"{k}={_fmt(v)}" for k, v in summary.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace(" ", "_")


def format_table(rows: list[dict[str, Any]], max_rows: int | None = None) -> str:
    """A plain fixed-width text table (no dependency), floats with 4 significant digits."""
    if not rows:
        return "(no rows)"
    rows = rows[:max_rows] if max_rows else rows
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    cell = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cell)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cell]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."
