"""The study plots' registry: one registration puts a plot in the written files and the report."""
import html
import inspect
import logging
import numbers

import pytest

from relkd.analysis import plots
from relkd.analysis.plots import INPUTS, PLOTS, study_plot, study_plots, write_study_plots
from relkd.analysis.report import render_report
from relkd.figures import pyplot
from relkd.registry import Registry
from test_analysis import env, study_dir  # noqa: F401 - the shared 24-trial study (pytest fixtures)

# The tests below read the registry, so a new plot is checked without editing this file; the names
# here are what particular shipped plots do. Their order in the report (a plot added later may go
# anywhere among them):
SHIPPED = ["recipe", "history", "importance", "marginals", "interaction_affinity_normalisation",
           "interaction_normalisation_loss", "weights", "intermediate", "pareto"]
# the shipped plots the shared study leaves out: every trial trains the same student, so there is
# no trade-off of accuracy against size to draw (tests/results/test_pareto.py draws it), and it tunes no
# learning rate (tests/test_tuning.py draws the recipe)
LEFT_OUT = {"pareto", "recipe"}
# the order `relkd study plot` has always printed the files in: the importance plot comes last
WRITTEN = ["history", "intermediate", "marginals", "interaction_affinity_normalisation",
           "interaction_normalisation_loss", "weights", "importance"]


KEPT = ["history", "importance", "marginals"]  # the shipped plots a scratch registry keeps (quick to draw)


@pytest.fixture
def scratch_plots(monkeypatch):
    """A registry for one test holding a copy of the first few shipped plots: what the test
    registers is gone afterwards, and the real registry is never touched."""
    copy = Registry(PLOTS.kind, bind=False)
    for entry in (e for e in study_plots() if e.name in KEPT):
        copy.add(entry.name, entry.obj, description=entry.description, **entry.properties)
    monkeypatch.setattr(plots, "PLOTS", copy)
    return copy


def trial_values(study):
    """Validation accuracy of every completed trial against its number."""
    fig, ax = pyplot().subplots()
    done = [t for t in study.trials if t.value is not None]
    ax.plot([t.number for t in done], [t.value for t in done], "o")
    return fig


def figure_places(page):
    """The plot names in the order the page shows them."""
    return [part.split('"', 1)[0] for part in page.split('<img alt="')[1:]]


@pytest.mark.parametrize("name", PLOTS.list())
def test_every_registered_plot_is_callable_as_registered(name):
    """What `write_study_plots` and the report rely on, for every entry: a docstring and a caption,
    inputs out of INPUTS that the function (with its arguments) accepts, a place in the report, and
    optional wherever it needs the importance (which a young study cannot give yet)."""
    entry = PLOTS.get(name)
    assert entry.doc, f"plot {name} has no docstring"
    assert entry.property("caption") and entry.description == entry.property("caption")
    inputs = entry.property("inputs")
    assert inputs and set(inputs) <= set(INPUTS)
    inspect.signature(entry.obj).bind(*inputs, **entry.property("arguments"))  # raises when they do not fit
    assert isinstance(entry.property("order"), numbers.Real) and isinstance(entry.property("index"), int)
    assert isinstance(entry.property("multi_objective"), bool)
    if "importance" in inputs:
        assert entry.property("optional")
    assert name in [e.name for e in study_plots()]


@pytest.mark.slow
def test_every_registered_plot_is_written_and_appears_in_the_report(env, tmp_path, caplog):  # noqa: F811
    _, result = env
    with caplog.at_level(logging.INFO, logger="relkd.analysis.plots"):
        paths = write_study_plots(result.study, tmp_path)
    stems = [p.stem for p in paths]
    assert [p.name for p in paths] == [f"{stem}.{ext}" for stem in stems[::2] for ext in ("png", "svg")]
    written = stems[::2]
    # every plot is written, or left out because it has nothing to draw for this study (said in the log)
    left_out = [name for name in PLOTS.list() if name not in written]
    assert LEFT_OUT <= set(left_out)
    for name in left_out:
        assert f"no {name} plot: " in caplog.text
    # files in registration order, the shipped ones in the order they always were
    assert written == [e.name for e in sorted(PLOTS.entries(), key=lambda e: e.property("index"))
                       if e.name in written]
    assert [stem for stem in written if stem in WRITTEN] == WRITTEN
    page = render_report(result.study, "sqlite:///x.db")
    places = figure_places(page)
    assert places == [e.name for e in study_plots() if e.name in written]
    assert [name for name in places if name in SHIPPED] == [name for name in SHIPPED if name not in LEFT_OUT]
    for entry in study_plots():
        if entry.name in written:
            assert f"<figcaption>{html.escape(entry.property('caption'))}</figcaption>" in page


def test_one_function_can_be_two_plots():
    rows_cols = {e.name: e.property("arguments") for e in PLOTS.entries() if e.obj is plots.plot_interaction}
    assert rows_cols.items() >= {"interaction_affinity_normalisation": {"rows": "affinity", "cols": "normalisation"},
                                 "interaction_normalisation_loss": {"rows": "normalisation", "cols": "loss"}}.items()
    assert "importance" in PLOTS.info("importance").property("inputs")
    assert PLOTS.info("importance").property("optional") and not PLOTS.info("history").property("optional")


@pytest.mark.slow
def test_a_plot_registered_once_reaches_the_files_and_the_report(env, tmp_path, scratch_plots):  # noqa: F811
    """Registering one function is the whole edit: no list in the report to keep in step."""
    _, result = env
    study_plot("trial_values", "Every trial's value, in trial order.", order=25, inputs=("study",))(trial_values)
    seen = []

    @study_plot("last", "Drawn last.")  # by default: after every plot, given the study and the evaluator
    def last(study, evaluator):
        """A plot that only records what it was given."""
        seen.append((study.study_name, evaluator))
        return trial_values(study)

    paths = write_study_plots(result.study, tmp_path, evaluator="mdi")
    assert [p.stem for p in paths][-4:] == ["trial_values", "trial_values", "last", "last"]
    assert (tmp_path / "trial_values.png").stat().st_size > 1000 and (tmp_path / "trial_values.svg").exists()
    page = render_report(result.study, "sqlite:///x.db", evaluator="mdi")
    assert figure_places(page) == ["history", "importance", "trial_values", "marginals", "last"]
    assert "<figcaption>Every trial&#x27;s value, in trial order.</figcaption>" in page
    assert seen == [("tiny", "mdi")] * 2


@pytest.mark.slow
def test_the_importance_is_computed_once_for_every_plot_that_needs_it(env, tmp_path,  # noqa: F811
                                                                       scratch_plots, monkeypatch):
    _, result = env
    calls = []
    real = plots.study_importance

    def counted(study, evaluator):
        calls.append(evaluator)
        return real(study, evaluator)

    monkeypatch.setattr(plots, "study_importance", counted)

    @study_plot("importance_groups", "Importance per design choice only.", inputs=("importance", "evaluator"))
    def importance_groups(importance, evaluator):
        """Bars of the importance summed per design choice."""
        fig, ax = pyplot().subplots()
        ax.barh(list(importance["groups"]), list(importance["groups"].values()))
        ax.set_title(evaluator)
        return fig

    stems = {p.stem for p in write_study_plots(result.study, tmp_path)}
    assert {"importance", "importance_groups"} <= stems and calls == ["ped_anova"]


@pytest.mark.slow
def test_an_optional_plot_that_cannot_be_drawn_is_left_out_and_others_fail_loudly(env, tmp_path,  # noqa: F811
                                                                                    scratch_plots, caplog):
    _, result = env

    @study_plot("not_yet", "Needs more trials.", inputs=("study",), optional=True)
    def not_yet(study):
        """Always too early."""
        raise ValueError("needs 1000 trials")

    with caplog.at_level(logging.WARNING, logger="relkd.analysis.plots"):
        stems = {p.stem for p in write_study_plots(result.study, tmp_path)}
    assert "not_yet" not in stems and set(KEPT) <= stems
    assert "no not_yet plot: needs 1000 trials" in caplog.text
    assert 'alt="not_yet"' not in render_report(result.study, "sqlite:///x.db")

    @study_plot("broken", "A bug.", inputs=("study",))
    def broken(study):
        """Fails, and is not optional."""
        raise ValueError("a bug in the plot")

    with pytest.raises(ValueError, match="a bug in the plot"):
        write_study_plots(result.study, tmp_path)


def test_a_duplicate_registration_is_an_error(scratch_plots):
    with pytest.raises(ValueError, match="plot 'history' is already registered"):
        study_plot("history", "A second history.", inputs=("study",))(trial_values)
    study_plot("trial_values", "Once.", inputs=("study",))(trial_values)
    with pytest.raises(ValueError, match="plot 'trial_values' is already registered"):
        study_plot("trial_values", "Twice.", inputs=("study",))(trial_values)
    assert scratch_plots.info("trial_values").property("caption") == "Once."
    assert scratch_plots.info("history").obj is plots.plot_history


def test_an_unknown_input_is_an_error():
    with pytest.raises(ValueError, match="unknown input 'trials'; inputs are chosen from study, evaluator, importance"):
        study_plot("trial_values", "Values.", inputs=("trials",))
    assert "trial_values" not in PLOTS
