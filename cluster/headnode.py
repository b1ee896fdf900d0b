"""`evfarm cluster up|down|status`: a local, loopback-only Ray head node with token auth.

`up` runs `ray start --head` with `RAY_AUTH_MODE=token` (creating a token under HOME when none
exists), node IP 127.0.0.1 (with Ray's cluster switch off, `actors.LOOPBACK_SWITCH`, without
which Ray swaps 127.0.0.1 for the host's outward address), `--dashboard-host 127.0.0.1`, free
ports for the agents, and a temporary directory of its own. So every port of the head, GCS,
raylet, workers, agents, metrics, client server and dashboard, binds loopback; `up` measures
that once the agents listen and refuses (stopping what it started) if any bind is not loopback.

`up` records the head's whole process tree in `~/.evfarm/cluster-<port>.json`: `ray start`
exits and leaves its servers orphaned, and Ray renames its agents (`ray::DashboardAgent`), so
the tree is found from its roots, the processes that carry `EVFARM_HEAD_DIR=<temp dir>` in their
environment or name the temp dir on their command line, down through all their descendants.
`down` freezes that tree (SIGSTOP, so nothing forks while it is collected), stops it by PID
(SIGTERM, wait, SIGKILL), and checks that no process of the tree, and so no listener of it, is
left. If anything survives, the state file stays and `down` says which PID survived and what it
listens on. Never `ray stop`, which kills every Ray process on the machine, other people's
included (env.md). Issue 21, rows 8 and 9.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actors import LOOPBACK_SWITCH
from cluster.security import Listener, ensure_token, listeners, process_name, process_tree
from methods.errors import EvfarmUserError

LOOPBACK_IP = "127.0.0.1"
MARK_ENV = "EVFARM_HEAD_DIR"  # in the environment of every process `ray start` spawns for us


@dataclass
class HeadState:
    port: int
    dashboard_port: int
    client_port: int
    temp_dir: str
    address: str
    dashboard_url: str
    pids: list[tuple[int, float]]  # (pid, create_time) of the whole process tree at `up`
    started: float
    node_ip: str = LOOPBACK_IP
    names: dict[str, str] = field(default_factory=dict)  # str(pid) -> process name
    listeners: list[dict] = field(default_factory=list)  # measured at `up`: Listener fields


def state_path(port: int) -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".evfarm" / f"cluster-{port}.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _logs_below(proc, temp_dir: str) -> bool:
    """True when `proc` has a file open below `temp_dir` (Ray's processes keep their logs open)."""
    try:
        below = temp_dir.rstrip(os.sep) + os.sep
        return any(f.path.startswith(below) for f in proc.open_files())
    except Exception:  # psutil.Error: gone or not ours
        return False


def _roots(temp_dir: str) -> list[int]:
    """This user's processes that carry the head's marker, name its temp dir on their command
    line, or (renamed `ray::*` processes, whose environment Ray's retitling overwrote) keep a log
    file open below it; never this process."""
    import psutil

    found = []
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid or proc.pid == os.getpid():
                continue
            cmdline = proc.info["cmdline"] or []
            if temp_dir in " ".join(cmdline):
                found.append(proc.pid)
            elif proc.environ().get(MARK_ENV) == temp_dir:
                found.append(proc.pid)
            elif cmdline and cmdline[0].startswith("ray::") and _logs_below(proc, temp_dir):
                found.append(proc.pid)  # a renamed agent orphaned by a dead raylet: its log files
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def our_processes(temp_dir: str) -> list[tuple[int, float]]:
    """(pid, create_time) of the Ray processes started with `temp_dir`: the roots `_roots` finds
    and every descendant of them (the agents and workers of the raylet, which Ray renames), never
    this process."""
    tree = process_tree(_roots(temp_dir))
    tree.pop(os.getpid(), None)
    return sorted(tree.items())


def _listener_dicts(rows: list[Listener]) -> list[dict]:
    return [asdict(r) for r in rows]


def _wait_for_ports(temp_dir: str, ports: set[int], timeout: float) -> list[Listener]:
    """Wait until the head's tree listens on every port in `ports` (the agents start after `ray
    start` returns) or `timeout` passes; returns the tree's listeners at that point."""
    deadline = time.time() + timeout
    while True:
        rows = listeners(pid for pid, _ in our_processes(temp_dir))
        if ports <= {r.port for r in rows} or time.time() > deadline:
            return rows
        time.sleep(0.5)


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
    agent_ports = {
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
    }
    # The autoscaler's and the dashboard's own Prometheus servers default to the fixed ports 44217
    # and 44227 (and fail quietly when another cluster holds them); Ray reads these variables.
    metric_ports = {"AUTOSCALER_METRIC_PORT": free_port(), "DASHBOARD_METRIC_PORT": free_port()}
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        f"--port={port}",
        f"--node-ip-address={LOOPBACK_IP}",
        f"--dashboard-host={LOOPBACK_IP}",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}",
        *(f"--{name}={value}" for name, value in agent_ports.items()),
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
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        LOOPBACK_SWITCH: "0",  # a local head: node IP 127.0.0.1 stays 127.0.0.1, see actors/__init__.py
        MARK_ENV: temp_dir,
        "PATH": path,
        **{name: str(value) for name, value in metric_ports.items()},
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        _terminate(our_processes(temp_dir))
        raise EvfarmUserError(
            f"`ray start --head` failed (exit {proc.returncode}) on port {port}/{dashboard_port}: "
            f"{proc.stderr.strip()[-1500:]} -- if a port is taken, pass --port/--dashboard-port."
        )
    expected = {port, dashboard_port, client_port, *agent_ports.values(), *metric_ports.values()}
    bound = _wait_for_ports(temp_dir, expected, timeout=min(60.0, timeout))
    exposed = [r for r in bound if not r.loopback]
    if exposed:
        _terminate(our_processes(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise EvfarmUserError(
            "Refusing the head node: Ray bound ports beyond loopback, so it was stopped again: "
            + ", ".join(f"{r.name} (pid {r.pid}) on {r.ip}:{r.port}" for r in exposed)
            + f". Check that nothing overrides {LOOPBACK_SWITCH}; `evfarm doctor` shows the binds."
        )
    tree = our_processes(temp_dir)
    state = HeadState(
        port=port,
        dashboard_port=dashboard_port,
        client_port=client_port,
        temp_dir=temp_dir,
        address=f"{LOOPBACK_IP}:{port}",
        dashboard_url=f"http://{LOOPBACK_IP}:{dashboard_port}",
        pids=tree,
        started=time.time(),
        names={str(pid): process_name(pid) for pid, _ in tree},
        listeners=_listener_dicts(bound),
    )
    _write_state(state)
    return state


def _write_state(state: HeadState) -> None:
    path = state_path(state.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(state), indent=2))


def load_state(port: int) -> HeadState:
    path = state_path(port)
    if not path.is_file():
        raise EvfarmUserError(
            f"No evfarm head node is recorded for port {port} ({path} is missing). Start one with "
            f"`evfarm cluster up --port {port}`; a cluster started otherwise is not ours to stop."
        )
    try:
        data = json.loads(path.read_text())
        data["pids"] = [(int(p), float(ct)) for p, ct in data["pids"]]
        return HeadState(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise EvfarmUserError(
            f"The head node record {path} is unreadable ({type(exc).__name__}: {exc}). Stop its "
            f"processes by PID if any still run, then delete the file."
        ) from exc


def _alive(pid: int, create_time: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(pids: list[tuple[int, float]], sig: int) -> None:
    for pid, ct in pids:
        if _alive(pid, ct):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _terminate(pids: list[tuple[int, float]], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds, the listed processes that are still the same."""
    live = [(p, ct) for p, ct in pids if _alive(p, ct)]
    _signal(live, signal.SIGTERM)
    _signal(live, signal.SIGCONT)  # a frozen process acts on SIGTERM once continued
    deadline = time.time() + grace
    while time.time() < deadline and any(_alive(p, ct) for p, ct in live):
        time.sleep(0.2)
    _signal(live, signal.SIGKILL)
    return len(live)


def _collect(state: HeadState) -> dict[int, float]:
    """The head's tree now: what `up` recorded (if still the same process), the roots found by
    marker or command line, and every descendant of either."""
    recorded = {pid: ct for pid, ct in state.pids if _alive(pid, ct)}
    tree = dict(our_processes(state.temp_dir))
    for pid, ct in process_tree(recorded).items():
        tree.setdefault(pid, ct)
    tree.update(recorded)
    tree.pop(os.getpid(), None)
    return tree


def down(port: int = 6379, grace: float = 5.0) -> int:
    """Stop the head node recorded for `port`, all of its process tree, by PID.

    Returns how many processes were stopped. Raises `EvfarmUserError`, keeping the state file
    (now listing every process found), when a process of the tree or one of its listeners
    survives, and says which.
    """
    state = load_state(port)
    names = dict(state.names)
    seen: dict[int, float] = {}
    try:
        for _ in range(5):
            tree = _collect(state)
            _signal(list(tree.items()), signal.SIGSTOP)  # freeze: no forks while the tree is collected
            tree.update(_collect(state))
            new = {pid: ct for pid, ct in tree.items() if pid not in seen}
            for pid in new:
                names.setdefault(str(pid), process_name(pid))
            seen.update(tree)
            if not new:
                break
            _terminate(list(new.items()), grace=grace)
            time.sleep(0.3)  # a dying raylet may still have forked: collect again
    except BaseException:  # interrupted (Ctrl-C): never leave the tree frozen
        _signal(list(seen.items()), signal.SIGCONT)
        raise
    survivors = [(pid, ct) for pid, ct in seen.items() if _alive(pid, ct)]
    if survivors:
        _signal(survivors, signal.SIGCONT)  # never leave a survivor frozen
        held = listeners(pid for pid, _ in survivors)
        state.pids = sorted(seen.items())
        state.names = names
        _write_state(state)
        listening: dict[int, list[str]] = {}
        for r in held:
            listening.setdefault(r.pid, []).append(f"{r.ip}:{r.port}")
        described = ", ".join(
            f"pid {pid} {names.get(str(pid), '?')}"
            + (f" listening on {' '.join(listening[pid])}" if pid in listening else "")
            for pid, _ in survivors
        )
        raise EvfarmUserError(
            f"`cluster down` could not stop {len(survivors)} of the {len(seen)} processes of the head "
            f"node on port {port}: {described}. They stay recorded in {state_path(port)}; run "
            f"`evfarm cluster down --port {port}` again, or `kill -9` those PIDs."
        )
    state_path(port).unlink(missing_ok=True)
    shutil.rmtree(state.temp_dir, ignore_errors=True)  # our own session files and logs
    return len(seen)


def status(port: int = 6379) -> dict:
    """The recorded head node, how many of its processes are alive, and what they listen on now."""
    state = load_state(port)
    tree = _collect(state)
    alive = [p for p, ct in state.pids if _alive(p, ct)]
    now = listeners(tree)
    return {
        **asdict(state),
        "alive": len(alive),
        "recorded": len(state.pids),
        "tree_now": len(tree),
        "listening_now": _listener_dicts(now),
        "non_loopback_now": [f"{r.name} {r.ip}:{r.port}" for r in now if not r.loopback],
    }
