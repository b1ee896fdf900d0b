"""How the farm runs: connection, resources, config, study loop, results, CLI.

Importing this package sets the project's environment defaults (token auth, offline hubs, no
usage telemetry) before anything imports ray, which reads `RAY_AUTH_MODE` once at import.
"""

from cluster.connect import project_env_defaults

project_env_defaults()
