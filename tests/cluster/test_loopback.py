"""Local clusters listen on loopback only, and `cluster down` leaves nothing of them running
(issue 21, rows 8 and 9).

Row 8: `evfarm cluster up --num-cpus 1`, then `ss -ltnp`, showed only the dashboard on 127.0.0.1;
GCS, raylet, agents, metrics and the Ray client server bound every interface, and an embedded
sweep's GCS/raylet/driver too. Row 9: `evfarm cluster down` said "stopped (5 processes)" while
the client server, DashboardAgent and RuntimeEnvAgent were still alive and listening 30 s later,
and the state file was gone. These tests list the listening sockets of a started cluster's whole
process tree (psutil) and print the measured table (run with `-s` to see it); they never connect
to anything but loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cluster import cli, headnode
from cluster.security import Listener, format_listeners, is_loopback, listeners, process_tree
from methods.errors import EvfarmUserError

# The processes every local cluster runs that own network ports (the dashboard, the client
# server and the metrics servers of monitor/dashboard are checked where they exist).
CORE = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}


@pytest.mark.parametrize(
    "ip, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # Ray's C++ gRPC servers on a dual-stack socket
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.2", False),
        ("::ffff:192.0.2.2", False),
        ("fd00::2", False),
        ("fe80::1%eth0", False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(ip, loopback):
    assert is_loopback(ip) is loopback


def _wait_for(pids_fn, names: set[str], timeout: float = 60.0) -> list[Listener]:
    """The tree's listeners once a process of every name in `names` listens (agents start late)."""
    deadline = time.time() + timeout
    while True:
        rows = listeners(pids_fn())
        if names <= {r.name for r in rows} or time.time() > deadline:
            return rows
        time.sleep(0.5)


def _report(title: str, rows: list[Listener]) -> None:
    print(f"\n{title}\n{format_listeners(rows)}")


def _embedded_pids() -> set[int]:
    """The embedded cluster's processes (what Ray started for this driver, and their children:
    the agents and workers of the raylet) and the driver itself, whose core worker listens too."""
    import ray

    node = ray._private.worker._global_node
    roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
    return set(process_tree([os.getpid(), *roots]))


def test_row8_no_ray_port_binds_a_non_loopback_address(ray_local):
    import ray

    @ray.remote(num_cpus=1)
    def pid() -> int:
        return os.getpid()

    ray.get(pid.remote())  # a worker exists and listens
    rows = _wait_for(_embedded_pids, CORE)
    _report("embedded cluster (connect(num_cpus=2, local=True)):", rows)
    assert CORE <= {r.name for r in rows}, f"not every Ray server was measured:\n{format_listeners(rows)}"
    assert any(r.pid == os.getpid() for r in rows), "the driver's own core worker port was not seen"
    exposed = [r for r in rows if not r.loopback]
    assert not exposed, f"Ray ports beyond loopback:\n{format_listeners(exposed)}"
    assert ray.util.get_node_ip_address() == "127.0.0.1"


@pytest.fixture(scope="module")
def head():
    port, dport = headnode.free_port(), headnode.free_port()
    argv = ["cluster", "up", "--port", str(port), "--dashboard-port", str(dport), "--num-cpus", "1"]
    assert cli.main(argv) == 0
    state = headnode.load_state(port)
    yield state
    if headnode.state_path(port).exists():
        headnode.down(port)


def test_row8_cluster_up_binds_every_ray_port_to_loopback(head):
    rows = _wait_for(lambda: [p for p, _ in headnode.our_processes(head.temp_dir)], CORE)
    _report(f"`evfarm cluster up --port {head.port} --num-cpus 1`:", rows)
    names = {r.name for r in rows}
    servers = {"python dashboard.py", "python ray.util.client.server", "python monitor.py"}
    assert CORE | servers <= names, format_listeners(rows)
    ports = {r.port for r in rows}
    assert {head.port, head.dashboard_port, head.client_port} <= ports
    exposed = [r for r in rows if not r.loopback]
    assert not exposed, f"Ray ports beyond loopback:\n{format_listeners(exposed)}"
    # what `up` measured and recorded is the same picture
    assert head.listeners and all(is_loopback(r["ip"]) for r in head.listeners)
    assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent", "raylet"} <= set(head.names.values())


def test_row8_doctor_says_where_the_ports_bind(head, capsys):
    from cluster import doctor

    problems: list[str] = []
    doctor._network_report(problems)
    out = capsys.readouterr().out
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in out and "bind loopback" in out
    assert "Firewall all of them" in out  # what Ray cannot bind to loopback, and what to do
    assert f"head node on port {head.port}:" in out and "all loopback" in out and not problems


def test_row9_cluster_down_leaves_no_process_or_listener_of_its_tree(head):
    # the tree now: what `up` recorded plus everything spawned since (workers, late agents)
    tree = dict(head.pids)
    tree.update(headnode.our_processes(head.temp_dir))
    tree.update(process_tree(p for p, ct in head.pids if headnode._alive(p, ct)))
    recorded_ports = {r["port"] for r in head.listeners}
    assert cli.main(["cluster", "down", "--port", str(head.port)]) == 0
    for wait in (0.0, 3.0):  # right away and a little later (the issue saw survivors 30 s on)
        time.sleep(wait)
        alive = {p: psutil.Process(p).name() for p, ct in tree.items() if headnode._alive(p, ct)}
        assert not alive, f"processes of the head's tree survived `down`: {alive}"
        assert headnode.our_processes(head.temp_dir) == []
        held = [r for r in listeners(p for p in tree) if r.port in recorded_ports]
        assert not held, format_listeners(held)
    assert not headnode.state_path(head.port).exists()


def test_row9_a_survivor_keeps_the_state_file_and_is_named(tmp_path, monkeypatch):
    """When a process of the tree does not die, `down` says which (and what it listens on) and
    keeps the record, so a second `down` can still find it. No Ray needed: a stand-in process
    that carries the head's marker and listens on loopback."""
    temp_dir = str(tmp_path / "evfarm-ray-fake")
    os.makedirs(temp_dir)
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, headnode.MARK_ENV: temp_dir}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        fake = headnode.HeadState(
            port=headnode.free_port(), dashboard_port=0, client_port=0, temp_dir=temp_dir,
            address="", dashboard_url="", pids=[(proc.pid, psutil.Process(proc.pid).create_time())],
            started=time.time(), names={str(proc.pid): "stand-in"},
        )
        headnode._write_state(fake)
        monkeypatch.setattr(headnode, "_terminate", lambda pids, grace=5.0: len(pids))  # signals "fail"
        with pytest.raises(EvfarmUserError) as err:
            headnode.down(fake.port)
        msg = str(err.value)
        assert f"pid {proc.pid} stand-in listening on 127.0.0.1:{port}" in msg and "again" in msg
        assert headnode.state_path(fake.port).exists()
        assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED  # not left frozen
        monkeypatch.undo()
        assert headnode.down(fake.port) == 1
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert not headnode.state_path(fake.port).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
