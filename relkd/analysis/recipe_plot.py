"""The study plot ``recipe``: validation accuracy against the student's learning rate, CE alone
and KD, mean ± std over the tuning's seeds, with the tuned rate and the rate as written marked
(studies with a ``tune`` section: :mod:`relkd.tuning`; left out of the others)."""
from __future__ import annotations

import optuna

from ..figures import pyplot
from ..study.export import study_tuning
from .plots import PlotNotApplicable, study_plot

__all__ = ["plot_recipe"]


@study_plot("recipe", "Validation accuracy against the learning rate, CE alone (none) and KD, mean ± std over "
                      "the tuning's seeds; the tuned rate (solid) and the rate as written (dotted).", order=5,
            inputs=("study",), multi_objective=True)
def plot_recipe(study: optuna.Study):
    """The tuning curve of the study's recipe, with its seed spread."""
    tuning = study_tuning(study)
    if tuning is None:
        raise PlotNotApplicable("the study did not tune its learning rate (no tune section)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = tuning.grid
    for config, colour in (("none", "tab:grey"), ("kd", "tab:blue")):
        means = [100 * tuning.mean(config, lr) for lr in grid]
        stds = [100 * tuning.std(config, lr) for lr in grid]
        ax.errorbar(grid, means, yerr=stds, marker="o", capsize=3, color=colour,
                    label="CE alone (none)" if config == "none" else "KD (kd)")
    ax.axvline(tuning.lr, color="tab:green", linewidth=1.5, label=f"tuned lr {tuning.lr:g}")
    ax.axvline(tuning.baseline, color="tab:red", linestyle=":", linewidth=1.5, label=f"as written {tuning.baseline:g}")
    if tuning.teacher_val is not None:
        ax.axhline(100 * tuning.teacher_val, color="black", linestyle="--", linewidth=1, label="teacher (val)")
    ax.set_xscale("log")
    ax.set_xlabel("budget.lr")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{study.study_name}: the tuned recipe ({len(tuning.seeds)} seeds per point)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
