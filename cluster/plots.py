"""Standard study plots written into every run directory (house rule 9, infra.md D.4):
optimisation history for one objective, the Pareto front for two or three.

Drawn here from the public Study API through `methods.plotting` (an Agg canvas, no pyplot):
optuna's own `optuna.visualization.matplotlib` draws through pyplot and sets a global style
(`plt.style.use`), which library code must not do. The look follows optuna's plots [inferred].
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState


def write_study_plots(study: optuna.Study, objective_names: tuple[str, ...], run_dir: Path) -> list[Path]:
    """PNG plots of the study; returns the files written (none when no trial completed)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials or len(objective_names) not in (1, 2, 3):
        return []
    from methods.plotting import save_figure

    if len(objective_names) == 1:
        fig = _history_figure(trials, study.direction, objective_names[0])
        path = run_dir / "optimization_history.png"
    else:
        front = {t.number for t in study.best_trials}
        fig = _pareto_figure(trials, front, objective_names)
        path = run_dir / "pareto_front.png"
    fig.tight_layout()
    return [save_figure(fig, path, dpi=110)]


def _history_figure(trials: list, direction: StudyDirection, name: str):
    """Each trial's objective against its number, and the best value so far as a step line."""
    from methods.plotting import new_figure

    pick = min if direction == StudyDirection.MINIMIZE else max
    xs = [t.number for t in trials]
    ys = [t.values[0] for t in trials]
    best = [pick(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = new_figure(figsize=(6.4, 4.2))
    ax.scatter(xs, ys, s=16, color="tab:blue", label=name)
    ax.step(xs, best, where="post", color="tab:red", label="best value")
    ax.set_xlabel("trial")
    ax.set_ylabel(name)
    ax.set_title("optimization history")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _pareto_figure(trials: list, front: set[int], names: tuple[str, ...]):
    """All completed trials, the Pareto-optimal ones in red; a 3-D scatter for three objectives."""
    from methods.plotting import new_figure

    kw = {"subplot_kw": {"projection": "3d"}} if len(names) == 3 else {}
    fig, ax = new_figure(figsize=(6.4, 4.8), **kw)
    for on_front, colour, label in ((False, "tab:blue", "trial"), (True, "tab:red", "best trial")):
        sel = [t for t in trials if (t.number in front) == on_front]
        if sel:
            ax.scatter(*zip(*(t.values for t in sel), strict=True), s=16, color=colour, label=label)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    if len(names) == 3:
        ax.set_zlabel(names[2])
    ax.set_title("Pareto front")
    ax.legend()
    return fig
