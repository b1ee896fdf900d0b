"""Where a run's results land, and what `run.json` records about it.

Resolution of the results root (issue 2): `--out DIR`, else `$EVFARM_RESULTS`, else `./results`.
Under `ray job submit --working-dir .` the job's working directory is a temporary copy of the
repository that Ray deletes later, so there the default becomes `~/evfarm-results` on the node
that runs the driver (printed at start). A run lives in `<root>/<sweep>/<run_id>/`; `<run_id>` is
one plain path component (`check_run_id`), and a results root that is a file or not writable is a
`ResultsError` before anything starts (`check_results_root`).

One driver per run directory (issue 21): `RunLock` is an exclusive `fcntl.flock` on `.driver.lock`
in the run directory, holding the PID, host and start time of the driver. It is taken before the
driver writes anything there, held for the whole run and released by the kernel when the process
exits, however it dies. A second driver gets a `ResultsError` naming the holder. flock locks are
per open file description: two opens in one process exclude each other too. (On NFS, flock is only
as good as the server's lock support.)

`run.json` is the run's record, and it only grows: the resolved config, its hash and the versions
of the start stay as written; each accepted `--resume` appends an entry to `resumes`. It is written
once the start completed (study opened, sink up), so a start that failed leaves no record, and
`latest_run` skips a directory without a completed start record.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
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
LOCK_FILE = ".driver.lock"
# what a completed start record holds (written by cluster/sweep_cli.py and cluster/bench_cli.py)
START_KEYS = ("sweep", "run_id", "config", "config_hash")
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")
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


def check_run_id(run_id: str) -> str:
    """`run_id` if it is one plain path component, else a `ResultsError` (no `/`, `..`, dot-names)."""
    if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        return run_id
    raise ResultsError(
        f"--run-id must be one plain name (letters, digits, '.', '_', '+', '-'; not starting with '.'; "
        f"at most 128 characters; no '/'), got {run_id!r}. The run directory is "
        f"<results root>/<sweep>/<run_id>/: to put runs elsewhere, choose the root with --out DIR."
    )


def check_results_root(root: ResultsRoot) -> None:
    """A `ResultsError` unless the results root is (or can be created as) a writable directory."""
    probe = root.path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == root.path else f"lies below {probe}, which is a file"
        raise ResultsError(
            f"The results root {root.path} (from {root.reason}) {what}, not a directory. Pass --out "
            f"with a directory (it is created if missing), or move the file out of the way."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResultsError(
            f"The results root {root.path} (from {root.reason}) cannot be written: {probe} is read-only "
            f"for this user. Pass --out with a writable directory, or set $EVFARM_RESULTS to one."
        )


def _results_error(exc: OSError, what: Path, root: Path) -> ResultsError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += " (read-only or not writable for this user)"
    return ResultsError(
        f"Cannot create the run directory {what} under the results root {root}: {reason}. Pass --out "
        f"with a writable directory (it is created if missing), or set $EVFARM_RESULTS to one."
    )


def create_run_dir(root: Path, sweep: str, run_id: str | None = None) -> Path:
    """Make `<root>/<sweep>/<run_id>/` (an existing non-empty one is refused); no lock is taken."""
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    run_dir = root / sweep / run_id
    if run_dir.exists() and _contents(run_dir):
        raise _exists_error(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _results_error(exc, run_dir, root) from exc
    return run_dir


def _contents(run_dir: Path) -> list[str]:
    return sorted(q.name for q in run_dir.iterdir() if q.name != LOCK_FILE)


def _exists_error(run_dir: Path) -> ResultsError:
    return ResultsError(
        f"Run directory {run_dir} already exists and is not empty. Pass --resume {run_dir} to "
        f"continue it, or choose another --run-id."
    )


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse, before anything starts, a new run whose directory already holds files."""
    if run_dir.is_dir() and _contents(run_dir):
        raise _exists_error(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ResultsError(f"{run_dir} exists and is a file, not a run directory. Choose another --run-id.")


class RunLock:
    """An exclusive flock on `<run_dir>/.driver.lock`, held until `release()` or process exit."""

    def __init__(self, run_dir: Path, fd: int, holder: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.holder = holder
        self._fd: int | None = fd
        self.created: list[Path] = []  # directories a new run made (removed again by discard_new_run)

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        path = run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # not inherited by Ray
        except OSError as exc:
            raise ResultsError(
                f"Cannot open the driver lock {path}: {exc.strerror or exc}. The run directory must be "
                f"writable by the driver; pass --out with a writable directory."
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _read_holder(fd)
            os.close(fd)
            raise ResultsError(_held_message(run_dir, held)) from None
        except OSError as exc:
            os.close(fd)
            raise ResultsError(
                f"Cannot lock {path}: {exc.strerror or exc}. The file system of the run directory does not "
                f"support flock, so two drivers could not be kept apart; use a local results root (--out)."
            ) from exc
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(run_dir, fd, holder)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Close the lock file (the kernel drops the lock); the file itself stays (no unlink races)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _held_message(run_dir: Path, held: dict[str, Any]) -> str:
    if "pid" in held:
        who = f"PID {held['pid']} on host {held.get('host', '?')}, started {held.get('started', '?')}"
        stop = f"stop it (kill {held['pid']} on {held.get('host', 'that host')})"
    else:
        who = "a process that has not written its PID yet"
        stop = "stop it"
    return (
        f"Run directory {run_dir} is in use by another driver ({who}). Only one driver may run it at a "
        f"time: two would overwrite each other's results. Wait for that driver to finish, or {stop} and "
        f"then rerun with --resume {run_dir}."
    )


def open_new_run(root: ResultsRoot, sweep: str, run_id: str) -> tuple[Path, RunLock]:
    """Create `<root>/<sweep>/<run_id>/` and lock it before anything is written there."""
    run_dir = root.path / sweep / check_run_id(run_id)
    missing = [d for d in (root.path, root.path / sweep, run_dir) if not d.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _results_error(exc, run_dir, root.path) from exc
    lock = RunLock.acquire(run_dir)
    if _contents(run_dir):  # a driver that got here first with the same --run-id
        lock.release()
        raise _exists_error(run_dir)
    lock.created = missing
    return run_dir, lock


def discard_new_run(run_dir: Path, lock: RunLock) -> None:
    """Remove what a new run's failed start left (it held the lock from an empty directory on)."""
    if lock.held and not (run_dir / RUN_JSON).exists():
        for q in run_dir.iterdir():
            if q.name == LOCK_FILE:
                continue
            if q.is_dir():
                shutil.rmtree(q, ignore_errors=True)
            else:
                q.unlink(missing_ok=True)
        if run_dir in lock.created:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)
        for d in reversed(lock.created):
            try:
                d.rmdir()
            except OSError:
                break
    lock.release()


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


def start_record(run_dir: Path) -> dict[str, Any] | None:
    """run.json if it is a completed start record, else None (a start that failed or was cut short)."""
    try:
        record = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(k in record for k in START_KEYS):
        return None
    if "started" in record:
        return record
    # written before `started` was recorded (earlier versions): a start that completed landed rows
    landed = any(run_dir.glob("part-*.parquet")) or any(run_dir.glob("_live-*.arrows"))
    return record if landed else None


def latest_run(root: Path, sweep: str) -> Path:
    base = root / sweep
    found = sorted(p.parent for p in base.glob(f"*/{RUN_JSON}")) if base.is_dir() else []
    runs = [p for p in found if start_record(p) is not None]
    if not runs:
        skipped = len([d for d in base.iterdir() if d.is_dir()]) if base.is_dir() else 0
        note = (
            f" ({skipped} director{'y there holds' if skipped == 1 else 'ies there hold'} no completed "
            f"start record: a start that failed)"
            if skipped
            else ""
        )
        raise ResultsError(
            f"--resume was given without a directory and no earlier run of {sweep!r} exists under "
            f"{base}{note}. Pass the run directory explicitly: --resume results/{sweep}/<run_id>, or "
            f"start a new run without --resume."
        )
    return max(runs, key=lambda p: (p / RUN_JSON).stat().st_mtime)


def write_run_json(run_dir: Path, record: dict[str, Any]) -> None:
    tmp = run_dir / f".{RUN_JSON}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        os.replace(tmp, run_dir / RUN_JSON)
    except OSError as exc:
        raise ResultsError(
            f"Cannot write {run_dir / RUN_JSON}: {exc.strerror or exc}. Free space or make the run "
            f"directory writable, then rerun (with --resume {run_dir} when it holds a started run)."
        ) from exc


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = check_run_dir(run_dir) / RUN_JSON
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(
            f"{path} cannot be read as a run record ({exc}). It is written whole by the driver, so this "
            f"is damage from outside: restore it from a backup, or start a new run."
        ) from exc
    if not isinstance(record, dict):
        raise ResultsError(f"{path} holds {type(record).__name__}, not a run record. Start a new run.")
    return record


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
