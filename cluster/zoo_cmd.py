"""`evfarm zoo`: list the reference models, retrain one, or check committed weights against the card.

    evfarm zoo list
    evfarm zoo train NAME [--out DIR] [--seed N] [--steps N]
    evfarm zoo check NAME [--root DIR]

`check` rebuilds the model, loads the committed safetensors, recomputes the card's headline metric
and exits 1 when it differs from the card by more than the model's tolerance
(|new − card| ≤ tolerance + rel_tolerance·|card|). Bad input (unknown name, missing or corrupted
weights) exits 2 with the error's message. Our own design ([inferred]); the main CLI
(`cluster/cli.py`) mounts `add_parser` and dispatches to `run`.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from methods.errors import CheckpointError, ConfigError, EvfarmUserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `zoo` sub-command (and its list/train/check actions) to the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "zoo", help="tiny reference models: list, train, check", description=__doc__.split("\n\n")[0]
    )
    actions = parser.add_subparsers(dest="zoo_action", required=True, metavar="{list,train,check}")
    actions.add_parser("list", help="list zoo models with their card metric")
    train = actions.add_parser("train", help="retrain a zoo model deterministically")
    train.add_argument("name")
    train.add_argument("--out", type=Path, default=None, help="output folder (default: sims/zoo/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    check = actions.add_parser("check", help="recompute a model's metric and compare with its card")
    check.add_argument("name")
    check.add_argument("--root", type=Path, default=None, help="weights folder (default: sims/zoo/weights)")
    parser.set_defaults(func=run)
    return parser


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _list(zoo: Any) -> int:
    from sims.zoo.registry import card_path, read_card

    rows = [("name", "metric", "card", "description")]
    for name, spec in zoo.items():
        try:
            card_value = _fmt(read_card(name).get(spec.metric, "?"))
        except CheckpointError:
            card_value = "(unreadable card)" if card_path(name).exists() else "(no card)"
        rows.append((name, spec.metric, card_value, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    return 0


def _print_progress(step: int, loss: float) -> None:
    if step % 100 == 0:
        print(f"  step {step} loss {loss:.4f}", file=sys.stderr, flush=True)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a folder for the weights, card and model card.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the --out folder {out} ({exc}). Pass a writable folder.") from exc


def _train(zoo: Any, args: argparse.Namespace) -> int:
    spec = zoo.get(args.name)
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        if "steps" not in inspect.signature(spec.train).parameters:
            raise ConfigError(f"The training script of {spec.name!r} has no step override; drop --steps.")
        kwargs["steps"] = args.steps
    if "progress" in inspect.signature(spec.train).parameters:  # long trainings report as they go
        kwargs["progress"] = _print_progress
    where = args.out if args.out is not None else "sims/zoo/weights"
    if args.out is not None:
        _check_out_dir(args.out)  # before minutes of training, not after
    try:
        card = spec.train(args.out, **kwargs)
    except OSError as exc:
        raise CheckpointError(
            f"Could not write the trained {spec.name!r} into {where} ({exc}). Pass --out a writable folder."
        ) from exc
    params = card.get("param_count", card.get("params"))
    print(
        f"trained {spec.name}: {spec.metric}={_fmt(card.get(spec.metric))} "
        f"wall_time_s={card.get('wall_time_s')} params={params} -> {where}"
    )
    return 0


def metric_matches(card_value: float, new_value: float, extra: dict[str, Any]) -> bool:
    """Whether a recomputed metric agrees with the card within the model's tolerances."""
    allowed = extra.get("tolerance", 0.0) + extra.get("rel_tolerance", 0.0) * abs(card_value)
    return abs(new_value - card_value) <= allowed


def _check(zoo: Any, args: argparse.Namespace) -> int:
    from sims.zoo.registry import card_path, load_zoo_model, read_card

    spec = zoo.get(args.name)
    card = read_card(spec.name, args.root)
    if spec.metric not in card:
        raise CheckpointError(
            f"Card of {spec.name!r} has no {spec.metric!r}; retrain with `evfarm zoo train {spec.name}`."
        )
    if not isinstance(card[spec.metric], (int, float)) or isinstance(card[spec.metric], bool):
        raise CheckpointError(
            f"Card {card_path(spec.name, args.root)} gives {spec.metric}={card[spec.metric]!r}, expected a "
            f"number; restore it from git or retrain with `evfarm zoo train {spec.name}`."
        )
    new = spec.evaluate(load_zoo_model(spec.name, args.root))[spec.metric]
    ok = metric_matches(float(card[spec.metric]), float(new), spec.extra)
    status = "ok" if ok else "MISMATCH"
    print(
        f"{status}: {spec.name} {spec.metric} card={_fmt(card[spec.metric])} recomputed={_fmt(new)} "
        f"(tolerance {spec.extra.get('tolerance', 0.0)} + {spec.extra.get('rel_tolerance', 0.0)}·|card|)"
    )
    return 0 if ok else 1


def run(args: argparse.Namespace) -> int:
    """Execute `evfarm zoo <action>`; 0 ok, 1 metric mismatch, 2 bad input."""
    try:
        from sims.zoo import ZOO as zoo  # importing the package registers every zoo model

        if args.zoo_action == "list":
            return _list(zoo)
        if args.zoo_action == "train":
            return _train(zoo, args)
        return _check(zoo, args)
    except EvfarmUserError as exc:
        print(f"evfarm zoo {args.zoo_action}: {exc}", file=sys.stderr)
        return 2
