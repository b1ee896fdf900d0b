"""How the farm runs: connection, resources, config, study loop, results, CLI.

Importing this package sets the project's environment defaults (token auth, offline hubs, no
usage telemetry, a loopback-only local Ray node) before anything imports ray, which reads
`RAY_AUTH_MODE` and its cluster switches once, at import. The defaults live one layer down, in
`actors/__init__.py`, so an entry point that imports `actors.*` first gets them too.
"""

from actors import project_env_defaults

project_env_defaults()
