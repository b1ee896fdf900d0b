"""Ray token authentication, always on (DESIGN decision 7, infra.md C.4).

With `RAY_AUTH_MODE=token` Ray's GCS refuses to start unless a token exists (in
`RAY_AUTH_TOKEN`, the file named by `RAY_AUTH_TOKEN_PATH`, or `~/.ray/auth_token`). `ensure_token`
creates the default file (mode 600) when none is configured, so a fresh laptop or CI run works
with auth on. The token does not encrypt traffic: firewall Ray's ports and reach dashboards over
SSH port forwarding; never bind them to all interfaces.

Where a local cluster's ports bind is checked, not assumed: `process_tree` collects a cluster's
processes (Ray renames its agents, and `ray start` leaves its servers orphaned, so a tree is
found from its roots down) and `listeners` lists every socket they listen on, so `evfarm cluster
up|down`, `evfarm doctor` and tests/cluster/test_loopback.py can show and refuse a non-loopback
bind (issue 21, rows 8 and 9).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def default_token_path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".ray" / "auth_token"


def token_source() -> str | None:
    """Where Ray will find its token: 'env', 'path', 'file', or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "env"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).is_file():
        return "path"
    if default_token_path().is_file():
        return "file"
    return None


def ensure_token() -> str:
    """Make sure token auth can start; returns where the token comes from."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    source = token_source()
    if source is not None:
        return source
    path = (
        Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        if os.environ.get("RAY_AUTH_TOKEN_PATH")
        else default_token_path()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return "created " + str(path)


def read_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(default_token_path())):
        if p and Path(p).is_file():
            return Path(p).read_text().strip()
    return None


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``, what Ray's C++
    gRPC servers bind on a dual-stack socket); False for the wildcards and every other address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def process_tree(pids: Iterable[int]) -> dict[int, float]:
    """{pid: create_time} of the given processes that are alive and all their descendants."""
    import psutil

    found: dict[int, float] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found.setdefault(proc.pid, proc.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def process_name(pid: int) -> str:
    """A short name for a Ray process: its title (``ray::DashboardAgent``) or program and script."""
    import psutil

    try:
        cmd = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if not cmd:
        return "?"
    first = cmd[0].strip()
    if first.startswith("ray::"):
        return first.split()[0]
    prog = Path(first).name
    for arg in cmd[1:4]:
        if arg == "-m":
            continue
        if arg.endswith(".py") or arg.startswith("ray."):
            return f"{prog} {Path(arg).name}"
    return prog


@dataclass(frozen=True)
class Listener:
    """One listening socket: a TCP socket in LISTEN, or a bound, unconnected UDP socket."""

    pid: int
    name: str
    proto: str
    ip: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ip)


def listeners(pids: Iterable[int]) -> list[Listener]:
    """Every socket the given processes listen on, sorted by name and port."""
    import psutil

    wanted = set(pids)
    rows = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in wanted or not conn.laddr:
            continue
        tcp = conn.type == socket.SOCK_STREAM
        if (tcp and conn.status != psutil.CONN_LISTEN) or (not tcp and conn.raddr):
            continue
        proto = "tcp" if tcp else "udp"
        rows.append(Listener(conn.pid, process_name(conn.pid), proto, conn.laddr.ip, conn.laddr.port))
    return sorted(set(rows), key=lambda r: (r.name, r.proto, r.port, r.ip))


def format_listeners(rows: Iterable[Listener]) -> str:
    """The measured table: process, pid, protocol, address, port, loopback or not."""
    lines = [f"{'process':28s} {'pid':>7s} {'proto':5s} {'address':20s} {'port':>5s}  bind"]
    for r in rows:
        where = "loopback" if r.loopback else "NOT LOOPBACK"
        lines.append(f"{r.name[:28]:28s} {r.pid:7d} {r.proto:5s} {r.ip:20s} {r.port:5d}  {where}")
    return "\n".join(lines)
