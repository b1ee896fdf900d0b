"""evfarm's pure algorithms: no ray, optuna, pyarrow, cluster or file I/O (DESIGN.md)."""
