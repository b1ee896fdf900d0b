"""The `evfarm` command.

    evfarm results RUN_DIR [--format table|csv|json] [--rows trials|all] [--live] [--skip-bad-parts]
    evfarm cluster up [--port 6379 --dashboard-port 8265 --num-cpus N --resources JSON]
    evfarm cluster down|status [--port 6379]
    evfarm doctor
    evfarm zoo list|train|check ...
    evfarm roofline MODEL --hw DEVICE ...
    evfarm arena serve|export|import|samples ...

Bad input exits 2 with a one-paragraph message on stderr and touches nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from cluster.connect import project_env_defaults
from methods.errors import EvfarmUserError


def _add_results(sub: Any) -> None:
    p = sub.add_parser("results", help="table of a run's trials")
    p.add_argument("run_dir", help="a run directory, results/<sweep>/<run_id>/")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument(
        "--rows",
        choices=("trials", "all"),
        default="trials",
        help="trials: one final row per trial attempt; all: every row (chunks, stream rows)",
    )
    p.add_argument("--live", action="store_true", help="include the rows of the open live segment")
    p.add_argument(
        "--skip-bad-parts",
        action="store_true",
        help="read the parts that can be read and say which unreadable ones were skipped",
    )


def cmd_results(args: argparse.Namespace) -> int:
    from cluster.results import read_table, rows_for_display, summarise_trials
    from cluster.rundir import check_run_dir
    from cluster.sweep_cli import format_table

    run_dir = check_run_dir(args.run_dir)
    skipped: list[Any] = []
    table = read_table(run_dir, include_live=args.live, skip_bad_parts=args.skip_bad_parts, skipped=skipped)
    for bad in skipped:
        print(f"skipped unreadable part {bad.path} ({bad.reason})", file=sys.stderr)
    rows = summarise_trials(table) if args.rows == "trials" else table.to_pylist()
    if args.format == "json":
        print(json.dumps(rows, default=str, indent=1))
    elif args.format == "csv":
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        shown = rows_for_display(rows)
        shown = [{k: v for k, v in r.items() if any(x.get(k) is not None for x in shown)} for r in shown]
        print(format_table(shown))
        states: dict[str, int] = {}
        for r in rows:
            states[r.get("state") or "?"] = states.get(r.get("state") or "?", 0) + 1
        skip_note = f" ({len(skipped)} unreadable part(s) skipped)" if skipped else ""
        print(f"{len(rows)} rows: " + ", ".join(f"{k}={v}" for k, v in sorted(states.items())) + skip_note)
    return 0


def _port(text: str) -> int:
    """A TCP port number for argparse (Ray would otherwise fail deep inside `ray start`)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port number 1-65535, got {text!r}")
    return port


def _add_cluster(sub: Any) -> None:
    p = sub.add_parser("cluster", help="a local Ray head node with token auth")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=_port, default=6379, help="GCS port of the head node")
    p.add_argument(
        "--dashboard-port", type=_port, default=8265, help="dashboard/jobs API port (on 127.0.0.1)"
    )
    p.add_argument("--num-cpus", type=int)
    p.add_argument("--resources", help="custom resources as JSON, e.g. '{\"galvo_rig\": 4}'")


def cmd_cluster(args: argparse.Namespace) -> int:
    from cluster import headnode

    if args.action == "up":
        resources = None
        if args.resources:
            try:
                resources = json.loads(args.resources)
            except json.JSONDecodeError as exc:
                raise EvfarmUserError(
                    f"--resources must be JSON like '{{\"galvo_rig\": 4}}', got {args.resources!r} ({exc})."
                ) from exc
        st = headnode.up(args.port, args.dashboard_port, args.num_cpus, resources)
        print(
            f"head node up: address {st.address}, dashboard {st.dashboard_url} (127.0.0.1 only), "
            f"auth=token, {len(st.pids)} processes recorded in {headnode.state_path(args.port)}"
        )
        print("submit a job:")
        print(
            f"  RAY_AUTH_MODE=token RAY_API_SERVER_ADDRESS={st.dashboard_url} "
            f"ray job submit --working-dir . -- python sweeps/cachequant_grid.py"
        )
        print(f"stop it: evfarm cluster down --port {args.port}")
    elif args.action == "down":
        n = headnode.down(args.port)
        print(f"head node on port {args.port} stopped ({n} processes)")
    else:
        st = headnode.status(args.port)
        print(json.dumps(st, indent=1, default=str))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from cluster.doctor import run_doctor

    return run_doctor()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evfarm", description="evfarm: the efficient-vision research farm")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_results(sub)
    _add_cluster(sub)
    sub.add_parser("doctor", help="versions, auth mode, GPU visibility, what is missing and how to fix it")
    from cluster import arena_cmd, roofline_cmd, zoo_cmd  # here, so `evfarm results` starts without them

    for mod in (zoo_cmd, roofline_cmd, arena_cmd):
        mod.add_parser(sub).set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    project_env_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "_run", None) is not None:
            return int(args._run(args))
        return {"results": cmd_results, "cluster": cmd_cluster, "doctor": cmd_doctor}[args.command](args)
    except EvfarmUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
