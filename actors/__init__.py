"""Thin Ray actors: hold state, call methods/ and sims/, return plain rows.

Importing this package first sets the project's environment defaults (`project_env_defaults`).
Every task and actor module lives here, some import ray at module level, and ray reads
`RAY_AUTH_MODE` and its cluster switches once, when it is imported: so whichever evfarm module an
entry point imports first (`actors.*` or `cluster.*`, which imports this package too), the
defaults are in place before ray is. `python sweeps/<name>.py` from a plain shell therefore runs
with token auth and a loopback-only embedded cluster, exactly as under `make` (issue 21, row 13).
"""

from __future__ import annotations

import os
import sys

# Set by Ray's job supervisor in the environment of a `ray job submit` driver.
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Ray 2.60 resolves a node IP of 127.0.0.1 to the host's outward address (and so binds the
# agents there and the core gRPC servers on every interface) unless this switch is off; off, a
# head node's IP is 127.0.0.1 and every Ray port binds loopback. Off also makes `ray start
# --address=...` (joining a node) refuse, which is what a local cluster wants. Export it as "1"
# to opt out (a multi-node cluster); see README "On a cluster".
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def project_env_defaults() -> None:
    """Environment every evfarm process runs with: token auth, no hub downloads, no telemetry,
    and (for a process that may start its own Ray cluster) a loopback-only node.

    Only defaults: a variable the user exported wins. The loopback switch is left alone in a
    `ray job submit` driver (it attaches to a cluster someone else configured) and once ray is
    imported (too late to matter in this process; Ray's workers land here).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if "ray" not in sys.modules and JOB_ENV_VAR not in os.environ:
        os.environ.setdefault(LOOPBACK_SWITCH, "0")


project_env_defaults()
