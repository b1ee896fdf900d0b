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

Start-up order (issue 21), so that a refused start writes nothing: flags and config are checked
first (`--run-id` one path component, the results root a writable directory, `--num-cpus` enough
for one actor); a `--resume` then checks that the run belongs to this sweep, builds its config from
the run's record plus this call's `--set`, checks it keeps the run's objectives, directions and
search space, and takes the run directory's driver lock (cluster/rundir.py: `RunLock`). Then Ray
is connected, `check_cluster` and the actor fit are checked, a new run's directory is created and
locked, the study is opened and the sink started, and only then is `run.json` written: a new run's
start record, or one more entry in a resumed run's `resumes` (the original config and hash stay).
A resume starts from the config of the run's latest accepted start. The lock is held until the
driver returns.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cluster.config import apply_overrides, config_hash, from_dict, load_config, to_dict
from cluster.connect import connect, project_env_defaults
from cluster.resources import PROFILES, actors_that_fit
from cluster.rundir import (
    JOURNAL,
    REPO_ROOT,
    RUN_JSON,
    START_KEYS,
    RunLock,
    check_new_run_dir,
    check_results_root,
    check_run_dir,
    check_run_id,
    discard_new_run,
    environment_record,
    latest_run,
    new_run_id,
    open_new_run,
    read_run_json,
    resolve_results_root,
    write_run_json,
)
from cluster.search import distributions, grid_points, make_sampler
from cluster.study import StudyOutcome, StudyRunner, StudySpec
from methods.errors import ConfigError, EvfarmUserError, ResultsError


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
    args = parse_args(argv, sweep, description, add_arguments)
    placement = (cluster_resources, check_cluster)
    return exit_code(
        lambda: _run(args, sweep, config_cls, build_spec, report, placement, config_from_args),
        interrupted="rerun with --resume to continue this run",
    )


def parse_args(argv, name: str, description: str, add_arguments=None) -> argparse.Namespace:
    """The common flags (`build_parser`) plus an entry point's own, after the project's env defaults."""
    project_env_defaults()
    parser = build_parser(name, description)
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args(argv)


def exit_code(run: Callable[[], int], interrupted: str) -> int:
    """`run()`'s exit status; bad input -> one paragraph on stderr and 2; Ctrl-C -> 130."""
    try:
        return run()
    except EvfarmUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130


def _run(args, sweep, config_cls, build_spec, report, placement, config_from_args) -> int:
    overrides = _shorthands(args) + (config_from_args(args) if config_from_args else [])
    if args.num_cpus is not None and args.num_cpus < 0:
        raise EvfarmUserError(
            f"--num-cpus must be a number of CPUs (1 or more), got {args.num_cpus}. Leave it out to give "
            f"the embedded cluster every CPU of this machine."
        )
    root = resolve_results_root(args.out)
    locks: list[RunLock] = []
    try:
        if args.resume is not None:
            if args.config:
                raise EvfarmUserError(
                    "--config cannot be combined with --resume: a resumed run keeps the config it "
                    "started with. Use --set for changes such as study.actors=4."
                )
            run_dir = check_run_dir(args.resume) if args.resume else latest_run(root.path, sweep)
            record = read_run_json(run_dir)
            cfg, spec = _resumed_config(run_dir, record, sweep, config_cls, build_spec, overrides)
            if args.dry_run:
                return _dry_run(cfg, spec)
            locks.append(RunLock.acquire(run_dir))  # before run.json or the journal is touched
            fresh = read_run_json(run_dir)
            if fresh != record:  # another driver resumed it between our read and the lock
                record = fresh
                cfg, spec = _resumed_config(run_dir, record, sweep, config_cls, build_spec, overrides)
            run_id = record["run_id"]
        else:
            cfg = load_config(config_cls, args.config, overrides)
            spec = build_spec(cfg)  # validate everything before a directory is created
            if args.dry_run:
                return _dry_run(cfg, spec)
            run_id = check_run_id(args.run_id) if args.run_id is not None else new_run_id()
            check_results_root(root)
            check_new_run_dir(root.path / sweep / run_id)
            run_dir, record = root.path / sweep / run_id, None
        start = (run_dir, record, run_id, overrides, locks)
        return _start_and_run(args, sweep, cfg, spec, report, placement, root, start)
    finally:
        for lock in locks:
            lock.release()


def _resumed_config(run_dir, record, sweep, config_cls, build_spec, overrides) -> tuple[Any, StudySpec]:
    """The config a resume runs with, checked against the run (sweep name first); writes nothing."""
    owner = record.get("sweep")
    if owner != sweep:
        raise ResultsError(_belongs_elsewhere(run_dir, record, sweep))
    missing = [k for k in START_KEYS if k not in record]
    if missing:
        raise ResultsError(
            f"{run_dir / RUN_JSON} records no {', '.join(missing)}: the run's start did not complete, "
            f"so there is nothing to resume. Start a new run (without --resume)."
        )
    resumes = [r for r in record.get("resumes") or [] if isinstance(r, dict) and "config" in r]
    try:
        base = from_dict(config_cls, resumes[-1]["config"] if resumes else record["config"])
    except ConfigError as exc:
        raise ConfigError(
            f"The config recorded in {run_dir / RUN_JSON} does not load as {config_cls.__name__} (did the "
            f"sweep's config change since the run started?): {exc} Resume it with the code it ran with "
            f"(git_sha {record.get('git_sha')} in run.json), or start a new run."
        ) from exc
    cfg = apply_overrides(base, overrides)
    spec = build_spec(cfg)
    _check_same_study(run_dir, build_spec(base), spec)
    return cfg, spec


def _belongs_elsewhere(run_dir: Path, record: dict[str, Any], sweep: str) -> str:
    owner = record.get("sweep")
    if owner is None:
        return (
            f"{run_dir / RUN_JSON} names no sweep, so it cannot be resumed as a run of {sweep}. Pass a run "
            f"directory that {sweep} printed at start, or start a new run. Nothing was changed."
        )
    if record.get("kind") == "benchmark":
        how = f"it is a run of the benchmark {owner}, and a benchmark does not resume (rerun it)."
    elif (REPO_ROOT / "sweeps" / f"{owner}.py").is_file():
        how = f"resume it with its own entry point: python sweeps/{owner}.py --resume {run_dir}."
    else:
        how = f"resume it with the entry point of {owner} (--resume {run_dir})."
    return f"{run_dir} is not a run of {sweep}: this run belongs to {owner}; {how} Nothing was changed."


def _check_same_study(run_dir: Path, old: StudySpec, new: StudySpec) -> None:
    """A resume keeps the study's name, objectives, directions and search space."""
    diffs = []
    if new.sweep != old.sweep:
        diffs.append(f"study name {old.sweep!r} -> {new.sweep!r}")
    if tuple(new.objectives) != tuple(old.objectives):
        diffs.append(f"objectives {list(old.objectives)} -> {list(new.objectives)}")
    elif tuple(new.directions) != tuple(old.directions):
        diffs.append(f"directions {list(old.directions)} -> {list(new.directions)}")
    was, now = distributions(old.space), distributions(new.space)
    changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
    if changed:
        diffs.append(f"the search space of {', '.join(changed)}")
    if new.grid != old.grid:
        diffs.append("the explicit grid points")
    if diffs:
        raise ConfigError(
            f"--resume {run_dir} would change what the run's study optimises: {'; '.join(diffs)}. A resumed "
            f"run keeps its objectives and search space: drop those --set overrides to continue it, or "
            f"start a new run (without --resume) for the changed study. Nothing was changed."
        )


def _start_and_run(args, sweep, cfg, spec, report, placement, root, start) -> int:
    run_dir, record, run_id, overrides, locks = start
    resume = record is not None
    import ray

    owned = not ray.is_initialized()
    resources, check_cluster = placement
    resources = dict(resources(cfg) if callable(resources) else resources or {})
    cpus = args.num_cpus if args.num_cpus is not None else resources.pop("CPU", None)
    resources.pop("CPU", None)
    embedded = owned and os.environ.get("RAY_ADDRESS", "") in ("", "local")
    flag_cpus = args.num_cpus if embedded else None  # --num-cpus shapes only a cluster we start
    if flag_cpus is not None:
        _check_num_cpus(flag_cpus, cfg)
    info = _connect(cpus, args, resources, embedded)
    new_lock: RunLock | None = None
    started = False
    try:
        try:
            if check_cluster is not None:
                check_cluster(cfg, ray.cluster_resources())  # before a run directory is made or changed
            _check_fit(cfg, flag_cpus)
            env = environment_record()
            chash = config_hash(cfg)
            if not resume:
                run_dir, new_lock = open_new_run(root, sweep, run_id)
                locks.append(new_lock)
            metadata = {
                "evfarm.run_id": run_id,
                "evfarm.sweep": sweep,
                "evfarm.config_hash": chash,
                "evfarm.git_sha": str(env.get("git_sha")),
                "evfarm.versions": json.dumps(env["versions"]),
            }
            # opens the study (a journal whose directions differ is refused here) and the sink
            runner = StudyRunner(
                spec,
                run_dir,
                run_id,
                metadata,
                progress=not args.no_progress,
                sink_roll_seconds=args.roll_seconds,
            )
            now = _now()
            entry = {"config": to_dict(cfg), "config_hash": chash, "overrides": list(overrides), **env}
            if resume:
                record = {**record, "resumes": [*(record.get("resumes") or []), {"time": now, **entry}]}
            else:
                record = {"sweep": sweep, "run_id": run_id, "created": now, "started": now,
                          "base_seed": cfg.study.seed, **entry, "resumes": []}
            write_run_json(run_dir, record)
            started = True
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
            outcome = runner.run(resume=resume)
        finally:
            if owned:
                ray.shutdown()
    except BaseException:
        if new_lock is not None and not started:
            discard_new_run(run_dir, new_lock)  # a start that failed leaves no run directory
        raise
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


def _check_num_cpus(num_cpus: int, cfg: Any) -> None:
    """Before Ray starts: an embedded cluster of `--num-cpus` must hold one actor of the profile."""
    profile = cfg.study.profile
    need = PROFILES.get(profile).num_cpus
    if num_cpus < need or num_cpus < 1:
        raise EvfarmUserError(
            f"--num-cpus {num_cpus} gives the embedded cluster {num_cpus} CPU(s), but one actor of profile "
            f"{profile!r} needs {need:g} (and study.actors={cfg.study.actors} want "
            f"{need * cfg.study.actors:g}): no trial could run. Pass --num-cpus {max(1, math.ceil(need))} or "
            f"more, or leave --num-cpus out to use every CPU. Nothing was started or written."
        )


def _connect(cpus, args, resources, embedded: bool):
    """`connect`, with Ray's own start-up error turned into one paragraph naming the flag."""
    try:
        return connect(cpus, dashboard=args.dashboard, resources=resources or None)
    except EvfarmUserError:
        raise
    except Exception as exc:  # Ray raises ValueError, RuntimeError, ConnectionError, ... on start-up
        text = str(exc).strip().splitlines()
        said = f"{type(exc).__name__}: {text[0] if text else ''}"
        if not embedded:
            raise EvfarmUserError(
                f"Ray could not connect to the cluster at RAY_ADDRESS={os.environ.get('RAY_ADDRESS')} "
                f"({said}). Check that it runs (`evfarm cluster status`), or unset RAY_ADDRESS to run "
                f"on an embedded local cluster (--num-cpus N sets its CPUs). Nothing was written."
            ) from exc
        flag = f"--num-cpus {args.num_cpus}" if args.num_cpus is not None else "every CPU (no --num-cpus)"
        attach = (
            " Ray found a cluster already running on this machine (e.g. from `evfarm cluster up`) and "
            "refuses --num-cpus when attaching: leave --num-cpus out, or stop that cluster first."
            if "existing cluster" in str(exc)
            else " Pass --num-cpus N with N of 1 or more, or leave it out to use every CPU; `evfarm doctor` "
            "checks the install."
        )
        raise EvfarmUserError(
            f"Ray could not start the embedded local cluster with {flag} ({said}).{attach} "
            f"Nothing was written."
        ) from exc


def _check_fit(cfg: Any, flag_cpus: int | None) -> None:
    """Before a run directory is made: the cluster must place at least one actor of the profile."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the pool prints its own note at start
            actors_that_fit(cfg.study.profile, cfg.study.actors)
    except EvfarmUserError as exc:
        if flag_cpus is None:
            raise
        raise EvfarmUserError(
            f"{exc} This embedded cluster was started with --num-cpus {flag_cpus}: pass a larger "
            f"--num-cpus, or leave it out to use every CPU."
        ) from exc


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


def add_model_device_arguments(p: argparse.ArgumentParser, device_of: str) -> None:
    """`--model PATH` (a local diffusers pipeline or U-Net folder) and `--device`, for the sweeps
    whose task loads a diffusion U-Net (`task.model`, `task.device`)."""
    p.add_argument("--model", help="local diffusers pipeline or U-Net folder (default: zoo ddpm-digits)")
    p.add_argument("--device", help=f"torch device of {device_of}, e.g. cuda")


def model_device_overrides(args: argparse.Namespace, gpu_profile: str | None = None) -> list[str]:
    """The `--set` overrides of `add_model_device_arguments`' flags (+ the GPU actor profile on cuda)."""
    out = []
    if args.model:
        out.append(f"task.model={json.dumps(args.model)}")
    if args.device:
        out.append(f"task.device={json.dumps(args.device)}")
        if gpu_profile and args.device.startswith("cuda"):
            out.append(f"study.profile={json.dumps(gpu_profile)}")
    return out
