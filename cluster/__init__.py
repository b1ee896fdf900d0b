"""How the farm runs: connection, resources, config, study loop, results, CLI."""
