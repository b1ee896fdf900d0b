"""Connect a driver to Ray: the embedded local cluster by default, `RAY_ADDRESS` under a job.

`connect()` is a plain `ray.init()` (infra.md C.1): with no `RAY_ADDRESS` Ray starts an embedded
local cluster; under `ray job submit` the job supervisor sets `RAY_ADDRESS` and the same call
attaches to the cluster. `RAY_ADDRESS=local` forces a fresh private cluster (what tests use).
Token auth stays on (`RAY_AUTH_MODE=token`, DESIGN decision 7) and an embedded cluster is
loopback-only: its node IP is 127.0.0.1, so GCS, raylet, workers, agents, metrics and the
dashboard (when asked for) all bind loopback (issue 21, row 8; `actors.LOOPBACK_SWITCH`).

The environment defaults live in `actors/__init__.py` (the lowest package that imports ray) and
run when any evfarm package is imported; `connect()` checks they took effect, and refuses with
the fix when ray was imported first (row 13).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from actors import JOB_ENV_VAR, LOOPBACK_SWITCH, project_env_defaults
from methods.errors import EvfarmUserError

__all__ = [
    "JOB_ENV_VAR",
    "LOOPBACK_SWITCH",
    "ClusterInfo",
    "check_ray_env",
    "connect",
    "project_env_defaults",
    "under_ray_job",
]

_DASHBOARD_URL: str | None = None
LOOPBACK_IP = "127.0.0.1"
IMPORT_ORDER_FIX = (
    "Import an evfarm module (`cluster` or `actors`) before `ray`, or export "
    f"RAY_AUTH_MODE=token {LOOPBACK_SWITCH}=0 before Python starts."
)


def _opted_out_of_loopback() -> bool:
    return os.environ.get(LOOPBACK_SWITCH, "").strip().lower() in ("1", "true", "yes")


def check_ray_env(starting_local: bool) -> None:
    """Check the defaults took effect in ray, which reads them once, at import.

    A ray imported before them is refused, with the fix, when its auth mode is off (the driver
    would run with auth "disabled" against the token-auth GCS it starts: `AuthenticationError:
    Failed to start GCS`), and warned about when an embedded cluster would not be loopback-only.
    """
    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and get_authentication_mode() != (
        AuthenticationMode.TOKEN
    ):
        raise EvfarmUserError(
            "ray was imported before evfarm set RAY_AUTH_MODE=token (Ray reads it once, at import), "
            "so this driver would talk without a token to a token-auth cluster. " + IMPORT_ORDER_FIX
        )
    if starting_local and not _opted_out_of_loopback():
        from cluster.security import is_loopback

        ip = ray.util.get_node_ip_address()  # the IP an embedded node would get
        if not is_loopback(ip):
            # Not refused: the cluster works, as it did before evfarm pinned loopback; but say so.
            print(
                f"warning: this embedded Ray cluster takes node IP {ip} and listens on every "
                f"interface, because ray was imported before evfarm set {LOOPBACK_SWITCH}=0. "
                + IMPORT_ORDER_FIX
                + f" (Export {LOOPBACK_SWITCH}=1 to run on all interfaces on purpose, behind a firewall.)",
                file=sys.stderr,
            )


def under_ray_job() -> bool:
    """True when this process is the driver of a `ray job submit` job."""
    return JOB_ENV_VAR in os.environ


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    embedded: bool
    nodes: int
    cpus: float
    gpus: float
    dashboard_url: str | None
    auth_mode: str


def connect(
    num_cpus: int | None = None,
    *,
    dashboard: bool = False,
    resources: dict[str, float] | None = None,
    log_to_driver: bool = True,
    local: bool = False,
) -> ClusterInfo:
    """`ray.init()` the evfarm way and describe what we are connected to.

    Args:
        num_cpus: CPUs of an embedded cluster (ignored when attaching to an existing one).
        dashboard: start the Ray dashboard of an embedded cluster (on 127.0.0.1).
        resources: custom resources of an embedded cluster, e.g. {"galvo_rig": 4}.
        log_to_driver: forward actor stdout/stderr to this process.
        local: always start a fresh private cluster (`address="local"`), never attach to one
            recorded on this machine — what tests use.
    """
    project_env_defaults()
    import ray

    global _DASHBOARD_URL
    if not ray.is_initialized():
        address = "local" if local else os.environ.get("RAY_ADDRESS")
        check_ray_env(starting_local=not address or address == "local")
        if os.environ.get("RAY_AUTH_MODE") == "token":
            from cluster.security import ensure_token

            ensure_token()
        kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "configure_logging": False}
        if local:
            kwargs["address"] = "local"
        if not address or address == "local":
            kwargs.update(
                num_cpus=num_cpus,
                resources=resources,
                include_dashboard=dashboard,
                dashboard_host=LOOPBACK_IP,
            )
        context = ray.init(**kwargs)
        _DASHBOARD_URL = getattr(context, "dashboard_url", None) or None
    ctx = ray.get_runtime_context()
    total = ray.cluster_resources()
    gcs = ctx.gcs_address
    dash = _DASHBOARD_URL
    embedded = local or not os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") == "local"
    return ClusterInfo(
        address=gcs,
        embedded=embedded,
        nodes=len([n for n in ray.nodes() if n.get("Alive")]),
        cpus=float(total.get("CPU", 0.0)),
        gpus=float(total.get("GPU", 0.0)),
        dashboard_url=dash,
        auth_mode=os.environ.get("RAY_AUTH_MODE", ""),
    )
