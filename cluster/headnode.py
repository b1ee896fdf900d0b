"""`evfarm cluster up|down|status`: a local Ray head node with token auth, dashboard on 127.0.0.1.

`up` runs `ray start --head` with `RAY_AUTH_MODE=token` (creating a token under HOME when none
exists), `--dashboard-host 127.0.0.1`, and a temporary directory of its own. It records the
processes it started — those whose command line names that directory — in
`~/.evfarm/cluster-<port>.json`. `down` stops exactly those processes (and the workers the head
spawned since, found by the same unique directory), by PID: never `ray stop`, which kills every
Ray process on the machine, other people's included (env.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.security import ensure_token
from methods.errors import EvfarmUserError


@dataclass
class HeadState:
    port: int
    dashboard_port: int
    client_port: int
    temp_dir: str
    address: str
    dashboard_url: str
    pids: list[tuple[int, float]]
    started: float


def state_path(port: int) -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".evfarm" / f"cluster-{port}.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def our_processes(temp_dir: str) -> list[tuple[int, float]]:
    """(pid, create_time) of this user's processes whose command line names `temp_dir`."""
    import psutil

    found = []
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "create_time"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if temp_dir in cmd and proc.pid != os.getpid():
                found.append((proc.pid, proc.info["create_time"]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def up(
    port: int = 6379,
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
    resources: dict[str, float] | None = None,
    timeout: float = 90.0,
) -> HeadState:
    if state_path(port).exists():
        state = load_state(port)
        if any(_alive(pid, ct) for pid, ct in state.pids):
            raise EvfarmUserError(
                f"An evfarm head node on port {port} is already running (dashboard {state.dashboard_url}). "
                f"Stop it with `evfarm cluster down --port {port}` or choose another --port."
            )
    ensure_token()
    temp_dir = tempfile.mkdtemp(prefix=f"evfarm-ray-{port}-")  # short: Ray's unix sockets live below it
    client_port = free_port()
    # Ray's agents default to fixed ports (e.g. 52365): a second head node on the same machine would
    # collide and its job API would answer "No available agent". Free ports keep heads independent.
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    # Jobs run `python ...` with the head's PATH: put this environment's interpreter first, so a
    # job uses the same installed packages as the `evfarm` that started the head.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": path}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pids = our_processes(temp_dir)
        _terminate(pids)
        raise EvfarmUserError(
            f"`ray start --head` failed (exit {proc.returncode}) on port {port}/{dashboard_port}: "
            f"{proc.stderr.strip()[-1500:]} -- if a port is taken, pass --port/--dashboard-port."
        )
    state = HeadState(
        port=port,
        dashboard_port=dashboard_port,
        client_port=client_port,
        temp_dir=temp_dir,
        address=f"127.0.0.1:{port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        pids=our_processes(temp_dir),
        started=time.time(),
    )
    path = state_path(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2))
    return state


def load_state(port: int) -> HeadState:
    path = state_path(port)
    if not path.is_file():
        raise EvfarmUserError(
            f"No evfarm head node is recorded for port {port} ({path} is missing). Start one with "
            f"`evfarm cluster up --port {port}`; a cluster started otherwise is not ours to stop."
        )
    data = json.loads(path.read_text())
    data["pids"] = [tuple(p) for p in data["pids"]]
    return HeadState(**data)


def _alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 1e-3
    except psutil.NoSuchProcess:
        return False


def _terminate(pids: list[tuple[int, float]], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds, the listed processes that are still the same."""
    live = [(p, ct) for p, ct in pids if _alive(p, ct)]
    for pid, _ in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(_alive(p, ct) for p, ct in live):
        time.sleep(0.2)
    for pid, ct in live:
        if _alive(pid, ct):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return len(live)


def down(port: int = 6379) -> int:
    """Stop the head node recorded for `port`; returns how many processes were stopped."""
    state = load_state(port)
    pids = dict(state.pids)
    pids.update(dict(our_processes(state.temp_dir)))  # workers spawned after `up`
    stopped = _terminate(list(pids.items()))
    for _ in range(5):  # a dying raylet may still fork a worker: rescan until none is left
        time.sleep(0.3)
        left = our_processes(state.temp_dir)
        if not left:
            break
        stopped += _terminate(left, grace=2.0)
    state_path(port).unlink(missing_ok=True)
    shutil.rmtree(state.temp_dir, ignore_errors=True)  # our own session files and logs
    return stopped


def status(port: int = 6379) -> dict:
    state = load_state(port)
    alive = [p for p, ct in state.pids if _alive(p, ct)]
    return {**asdict(state), "alive": len(alive), "recorded": len(state.pids)}
