"""Connect a driver to Ray: the embedded local cluster by default, `RAY_ADDRESS` under a job.

`connect()` is a plain `ray.init()` (infra.md C.1): with no `RAY_ADDRESS` Ray starts an embedded
local cluster; under `ray job submit` the job supervisor sets `RAY_ADDRESS` and the same call
attaches to the cluster. `RAY_ADDRESS=local` forces a fresh private cluster (what tests use).
Token auth stays on (`RAY_AUTH_MODE=token`, DESIGN decision 7) and a dashboard, when asked for,
binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

_DASHBOARD_URL: str | None = None
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the job driver


def project_env_defaults() -> None:
    """Environment every evfarm process runs with: token auth, no hub downloads, no telemetry."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


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
        if os.environ.get("RAY_AUTH_MODE") == "token":
            from cluster.security import ensure_token

            ensure_token()
        address = "local" if local else os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "configure_logging": False}
        if local:
            kwargs["address"] = "local"
        if not address or address == "local":
            kwargs.update(
                num_cpus=num_cpus,
                resources=resources,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
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
