"""Standard study plots written into every run directory (house rule 9, infra.md D.4):
optimisation history for one objective, the Pareto front for several."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState


def write_study_plots(study: optuna.Study, objective_names: tuple[str, ...], run_dir: Path) -> list[Path]:
    """PNG plots of the study; returns the files written (none when no trial completed)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        if len(objective_names) == 1:
            ax = ovm.plot_optimization_history(study, target_name=objective_names[0])
            path = run_dir / "optimization_history.png"
        elif len(objective_names) in (2, 3):
            ax = ovm.plot_pareto_front(study, target_names=list(objective_names))
            path = run_dir / "pareto_front.png"
        else:
            return []
        fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
