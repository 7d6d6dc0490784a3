"""relkd.analysis.recipe_plot: the tuning curve of a study that tuned its learning rate."""
import statistics

import optuna
import pytest

from relkd.analysis.plots import PLOTS, PlotNotApplicable
from relkd.analysis.recipe_plot import plot_recipe
from relkd.results.record import RECIPE_ATTR
from relkd.tuning import Tuning

TUNING = Tuning(key="k", baseline=0.05, lr=0.1, seeds=[0, 1],
                curves={"none": {"0.05": [0.5, 0.6], "0.1": [0.7, 0.8]}, "kd": {"0.05": [0.55, 0.65],
                                                                                 "0.1": [0.75, 0.85]}},
                teacher_val=0.9)


def study(tuned):
    s = optuna.create_study(study_name="tuned", direction="maximize")
    if tuned:
        s.set_user_attr(RECIPE_ATTR, TUNING.record())
    return s


def test_a_study_without_a_tune_section_has_no_recipe_plot():
    with pytest.raises(PlotNotApplicable, match="did not tune its learning rate"):
        plot_recipe(study(tuned=False))


def test_the_curve_has_both_configs_with_their_spread_and_the_rates_marked():
    fig = plot_recipe(study(tuned=True))
    (ax,) = fig.axes
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["tuned lr 0.1", "as written 0.05", "teacher (val)", "CE alone (none)", "KD (kd)"]
    assert ax.get_xscale() == "log" and "2 seeds per point" in ax.get_title()
    means = [list(line.get_ydata()) for line in ax.lines if line.get_marker() == "o"]
    assert means == [[pytest.approx(55.0), pytest.approx(75.0)], [pytest.approx(60.0), pytest.approx(80.0)]]
    spread = 100 * statistics.stdev([0.5, 0.6])  # the error bars: the sample std over the seeds
    caps = sorted(float(y) for line in ax.lines if line.get_marker() != "o" for y in line.get_ydata())
    assert pytest.approx(55.0 - spread) in caps and pytest.approx(55.0 + spread) in caps


def test_the_plot_is_registered_for_multi_objective_studies_too():
    entry = PLOTS.get("recipe")
    assert entry.obj is plot_recipe and entry.property("multi_objective") is True
