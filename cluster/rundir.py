"""Where a run's results land, and what `run.json` records about it.

Resolution of the results root (issue 2): `--out DIR`, else `$EVFARM_RESULTS`, else `./results`.
Under `ray job submit --working-dir .` the job's working directory is a temporary copy of the
repository that Ray deletes later, so there the default becomes `~/evfarm-results` on the node
that runs the driver (printed at start). A run lives in `<root>/<sweep>/<run_id>/`.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.connect import under_ray_job
from methods.errors import ResultsError

RUN_JSON = "run.json"
JOURNAL = "optuna.journal"
PACKAGES = (
    "torch",
    "torchvision",
    "ray",
    "optuna",
    "pyarrow",
    "duckdb",
    "numpy",
    "scipy",
    "diffusers",
    "timm",
    "segment-anything",
    "spikingjelly",
    "evfarm",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ResultsRoot:
    path: Path
    reason: str  # which rule chose it, printed at start


def resolve_results_root(out: str | os.PathLike[str] | None = None) -> ResultsRoot:
    if out:
        return ResultsRoot(Path(out).expanduser().resolve(), "--out")
    env = os.environ.get("EVFARM_RESULTS")
    if env:
        return ResultsRoot(Path(env).expanduser().resolve(), "$EVFARM_RESULTS")
    if under_ray_job():
        # The job's working directory is a temporary copy that Ray deletes: never the only copy.
        return ResultsRoot(
            Path("~/evfarm-results").expanduser().resolve(), "ray job (home of the driver node)"
        )
    return ResultsRoot(Path("results").resolve(), "default ./results")


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    """The git SHA of the code and whether the tree was dirty (None outside a checkout)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"git_sha": None, "git_dirty": None}


def gpu_info() -> dict[str, Any]:
    try:
        import torch

        if torch.cuda.is_available():
            return {
                "cuda": torch.version.cuda,
                "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            }
    except Exception as exc:  # GPU probing must never break a run
        return {"cuda": None, "gpus": [], "probe_error": str(exc)}
    return {"cuda": None, "gpus": []}


def environment_record() -> dict[str, Any]:
    return {
        "versions": package_versions(),
        **git_state(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
        **gpu_info(),
    }


def create_run_dir(root: Path, sweep: str, run_id: str | None = None) -> Path:
    run_id = run_id or new_run_id()
    run_dir = root / sweep / run_id
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ResultsError(
            f"Run directory {run_dir} already exists and is not empty. Pass --resume {run_dir} to "
            f"continue it, or choose another --run-id."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def check_run_dir(path: str | os.PathLike[str]) -> Path:
    """The path if it is an evfarm run directory, else a `ResultsError` saying what to pass."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ResultsError(
            f"{p} is not a directory. Expected an evfarm run directory (results/<sweep>/<run_id>/ "
            f"holding {RUN_JSON}); the sweep prints its run directory when it starts."
        )
    if not (p / RUN_JSON).is_file():
        runs = sorted(q.parent for q in p.glob(f"*/{RUN_JSON}")) + sorted(
            q.parent for q in p.glob(f"*/*/{RUN_JSON}")
        )
        hint = f" Runs found below it: {', '.join(str(r) for r in runs[:5])}." if runs else ""
        raise ResultsError(
            f"{p} is not an evfarm run directory: it has no {RUN_JSON}. Pass the directory a sweep "
            f"printed at start (results/<sweep>/<run_id>/).{hint}"
        )
    return p


def latest_run(root: Path, sweep: str) -> Path:
    runs = sorted(p.parent for p in (root / sweep).glob(f"*/{RUN_JSON}")) if (root / sweep).is_dir() else []
    if not runs:
        raise ResultsError(
            f"--resume was given without a directory and no earlier run of {sweep!r} exists under "
            f"{root / sweep}. Pass the run directory explicitly: --resume results/{sweep}/<run_id>."
        )
    return max(runs, key=lambda p: (p / RUN_JSON).stat().st_mtime)


def write_run_json(run_dir: Path, record: dict[str, Any]) -> None:
    tmp = run_dir / f".{RUN_JSON}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, run_dir / RUN_JSON)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((check_run_dir(run_dir) / RUN_JSON).read_text())
