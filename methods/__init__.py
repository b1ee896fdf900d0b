"""evfarm's pure algorithms: no ray, optuna, pyarrow, cluster or file I/O (DESIGN.md).

The one writer is `methods.plotting.save_figure` (see that module for why it lives here)."""
