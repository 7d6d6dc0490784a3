"""Plots of a study, as PNG and SVG through matplotlib, kept in the registry :data:`PLOTS`.

:func:`write_study_plots` writes every registered plot into a folder and returns the paths;
the report (:mod:`relkd.analysis.report`) shows the same entries under their captions, so a
new plot is one decorated function and nothing else::

    from relkd.analysis.plots import study_plot
    from relkd.figures import pyplot

    @study_plot("trial_numbers", "Validation accuracy in trial order.", inputs=("study",))
    def plot_trial_numbers(study):
        '''Validation accuracy of every completed trial against its number.'''
        fig, ax = pyplot().subplots()
        done = [t for t in study.trials if t.value is not None]
        ax.plot([t.number for t in done], [t.value for t in done], "o")
        return fig

The shipped ones, in the report's order:

- ``history``: Optuna's optimisation history with the anchors none, kd and the best
  preset as reference lines;
- ``importance``: importance of each search parameter, and summed per design choice
  (affinity, normalisation, loss, tap, weights, KD, ...), PED-ANOVA by default;
- ``marginals``: validation accuracy of every completed trial per affinity, normalisation,
  loss and tap (box and points, with counts; anchors drawn as diamonds);
- ``interaction_affinity_normalisation`` and ``interaction_normalisation_loss``: best and
  mean accuracy per cell with counts; empty cells blank, invalid cells hatched (one
  function, two entries);
- ``weights``: term weight (log scale) against accuracy, one panel per loss;
- ``intermediate``: accuracy per epoch of every trial; pruned trials in grey, ending in x;
- ``pareto``: student size (log scale) against accuracy, the Pareto front joined by a step
  line, anchors as diamonds: multi-objective studies, and single-objective ones whose
  trials trained students of several sizes.

A multi-objective study (accuracy and student size, :mod:`relkd.results.pareto`) gets the
plots registered with ``multi_objective=True`` (``marginals``, the interactions,
``weights``, ``pareto``: they read the accuracy, each trial's first value); the others
(history, importance, intermediate) need a single value and are left out. A plot with
nothing to draw for a study raises :class:`PlotNotApplicable` and is left out quietly.

Optuna's own matplotlib plots are used where they draw the picture (history); the rest are
relkd's, since they group by design choice across terms and include the anchors.
"""
from __future__ import annotations

import itertools
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from ..figures import pyplot, save_figure
from ..registry import Entry, Registry
from ..relation import AFFINITIES, LOSSES, NORMALISATIONS, combination_problems
from ..results.record import TrialRecord, is_known
from ..study.artifacts import upload_study_file
from ..terms import term_kind, term_summary
from .choices import NO_TERM, choice_stats, completed
from .importance import study_importance
from ..results.pareto import SIZES, is_multi_objective, non_dominated, size_measure, sized_points

__all__ = ["PLOTS", "INPUTS", "PlotNotApplicable", "study_plot", "study_plots", "write_study_plots", "cell_invalid",
           "plot_history", "plot_intermediate", "plot_importance", "plot_marginals", "plot_interaction", "plot_weights",
           "plot_pareto"]

log = logging.getLogger(__name__)
REFERENCE_ANCHORS = ("none", "kd")
GROUP_COLOURS = {"terms": "#8c564b", "tap": "#9467bd", "view": "#c5b0d5", "affinity": "#1f77b4",
                 "normalisation": "#2ca02c", "loss": "#d62728", "component params": "#7f7f7f",
                 "weights": "#ff7f0e", "KD": "#17becf", "other": "#bcbd22"}

#: The study plots. An entry is a drawing function returning one matplotlib figure; its
#: name is the file stem (``<name>.png``, ``<name>.svg``) and its properties say the rest:
#: ``caption`` (under the figure in the report), ``order`` (its place in the report),
#: ``index`` (registration order: the order the files are written and ``relkd study plot``
#: prints them), ``inputs`` (what the function is given, in order, out of :data:`INPUTS`),
#: ``arguments`` (keyword arguments it is called with, so one function can be several
#: plots) and ``optional`` (a ``ValueError`` while drawing leaves the plot out with a
#: warning instead of failing, as the importance plot does before enough trials finished)
#: and ``multi_objective`` (drawn for multi-objective studies too; default ``False``).
PLOTS = Registry("plot", bind=False)

#: What a plot function can be given: the study, the importance evaluator's name, or the
#: result of :func:`~relkd.analysis.importance.study_importance` (computed once per call of
#: :func:`write_study_plots`, however many plots use it).
INPUTS = ("study", "evaluator", "importance")

_REGISTERED = itertools.count()  # never reused, so a removed plot leaves no clash behind


class PlotNotApplicable(ValueError):
    """Raised by a plot function for a study it has nothing to draw for (the Pareto plot of a
    study whose students all have one size): the plot is left out, logged at INFO, whether
    or not it is ``optional``."""


def study_plot(name: str, caption: str, *, order: float | None = None,
               inputs: Sequence[str] = ("study", "evaluator"), arguments: Mapping[str, Any] | None = None,
               optional: bool | None = None, multi_objective: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering a drawing function as the study plot ``name`` (the file stem).

    ``caption`` goes under the figure in the report; ``order`` places it there (the shipped
    plots use 10, 20, ..., 70; by default a plot goes after all of them). The function is
    called as ``fn(*inputs, **arguments)``, ``inputs`` naming values out of :data:`INPUTS`.
    ``optional`` defaults to whether it needs the importance, which a young study cannot
    give yet. ``multi_objective``: whether it can draw a multi-objective study (reading the
    accuracy as each trial's first value); those that cannot are left out of such studies.
    The function is returned unchanged, so decorators stack (one function, two
    plots)::

        @study_plot("trial_time", "Wall time of each trial.", order=65, inputs=("study",))
        def plot_trial_time(study):
            ...
            return fig

    A taken name raises ``ValueError``, as every relkd registry does.
    """
    inputs = tuple(inputs)
    unknown = [i for i in inputs if i not in INPUTS]
    if unknown:
        raise ValueError(f"plot {name!r}: unknown input {unknown[0]!r}; inputs are chosen from {', '.join(INPUTS)}")

    def decorator(fn: Callable) -> Callable:
        PLOTS.add(name, fn, description=caption, caption=caption, order=math.inf if order is None else order,
                  index=next(_REGISTERED), inputs=inputs, arguments=dict(arguments or {}),
                  optional="importance" in inputs if optional is None else optional,
                  multi_objective=bool(multi_objective))
        return fn

    return decorator


def study_plots() -> list[Entry]:
    """The registered study plots in the report's order (``order``, then registration)."""
    return sorted(PLOTS.entries(), key=lambda entry: (entry.property("order"), entry.property("index")))


def _anchor_lines(study: optuna.Study) -> dict[str, float]:
    """``none``, ``kd`` and the best relation preset: label -> validation accuracy."""
    anchors = {r.anchor: r.value for r in map(TrialRecord.of, study.get_trials(deepcopy=False,
                                                                                 states=(TrialState.COMPLETE,)))
               if r.anchor is not None}
    lines = {name: anchors[name] for name in REFERENCE_ANCHORS if name in anchors}
    relation = {k: v for k, v in anchors.items() if k not in REFERENCE_ANCHORS}
    if relation:
        best = max(relation, key=relation.get)
        lines[f"best preset ({best})"] = relation[best]
    return lines


@study_plot("history", "Optimisation history, with the anchors none, kd and the best preset as reference lines.",
            order=10, inputs=("study",))
def plot_history(study: optuna.Study):
    """Optimisation history (Optuna's plot) with the anchors as horizontal reference lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    styles = iter(["--", ":", "-."])
    for name, value in _anchor_lines(study).items():
        ax.axhline(value, linestyle=next(styles, "--"), color="grey", linewidth=1)
        ax.annotate(f"{name} {100 * value:.2f}%", xy=(0, value), xycoords=("axes fraction", "data"),
                    xytext=(4, 2), textcoords="offset points", fontsize=8, color="dimgrey")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: optimisation history")
    return ax.figure


@study_plot("intermediate", "Accuracy per epoch; pruned trials in grey.", order=70, inputs=("study",))
def plot_intermediate(study: optuna.Study):
    """Validation accuracy per epoch of every trial that trained; pruned ones grey, ending in x."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pruned_label = done_label = True
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        if t.state == TrialState.PRUNED:
            ax.plot(steps, values, color="grey", alpha=0.5, linewidth=1, label="pruned" if pruned_label else None)
            ax.plot(steps[-1:], values[-1:], "x", color="grey")
            pruned_label = False
        else:
            ax.plot(steps, values, color="tab:blue", alpha=0.7, linewidth=1.2,
                    label="completed" if done_label else None)
            done_label = False
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy per epoch; pruned trials stop early")
    ax.grid(alpha=0.3)
    if not (pruned_label and done_label):
        ax.legend(loc="lower right")
    return fig


@study_plot("marginals", "Validation accuracy per affinity, normalisation, loss and tap (diamonds: anchors).",
            order=30, inputs=("study",), multi_objective=True)
def plot_marginals(study: optuna.Study):
    """Accuracy of every completed trial per affinity, normalisation, loss and tap."""
    plt = pyplot()
    trials = completed(study)
    anchors = {t.number for t in trials if is_known(t)}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, choice in zip(axes.flat, ("affinity", "normalisation", "loss", "tap")):
        stats = choice_stats(trials, choice)
        names = sorted(stats, key=lambda n: (n == NO_TERM, -stats[n].mean))
        data = [stats[n].values for n in names]
        ax.boxplot(data, showfliers=False, widths=0.6)
        for i, n in enumerate(names, start=1):
            s = stats[n]
            jitter = [(i + 0.15 * math.sin(7.3 * k)) for k in range(s.count)]
            colours = ["tab:red" if num in anchors else "tab:blue" for num in s.trials]
            markers = ["D" if num in anchors else "o" for num in s.trials]
            for x, y, c, m in zip(jitter, s.values, colours, markers):
                ax.plot(x, y, m, color=c, markersize=4, alpha=0.7)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels([f"{n}\n(n={stats[n].count})" for n in names], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"per {choice}")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{study.study_name}: accuracy per design choice (diamonds: anchors; a trial with two "
                 f"terms counts under each)")
    fig.tight_layout()
    return fig


def _registry_names(choice: str) -> list[str]:
    return {"affinity": AFFINITIES, "normalisation": NORMALISATIONS, "loss": LOSSES}[choice].list()


def cell_invalid(rows: str, cols: str, r: str, c: str) -> bool:
    """No valid combination has this pair (whatever the third choice)."""
    third = ({"affinity", "normalisation", "loss"} - {rows, cols}).pop()
    for other in _registry_names(third):
        choice = {rows: r, cols: c, third: other}
        if not combination_problems(choice["affinity"], choice["normalisation"], choice["loss"]):
            return False
    return True


@study_plot("interaction_normalisation_loss", "Normalisation x loss: best and mean accuracy, trials per cell.",
            order=50, inputs=("study",), arguments={"rows": "normalisation", "cols": "loss"}, multi_objective=True)
@study_plot("interaction_affinity_normalisation", "Affinity x normalisation: best and mean accuracy, trials per cell.",
            order=40, inputs=("study",), arguments={"rows": "affinity", "cols": "normalisation"},
            multi_objective=True)
def plot_interaction(study: optuna.Study, rows: str, cols: str):
    """Heatmap of the best validation accuracy per (rows, cols) pair, annotated with best,
    mean and count; cells without trials are blank, invalid pairs hatched."""
    plt = pyplot()
    import numpy as np

    row_names, col_names = _registry_names(rows), _registry_names(cols)
    cells: dict[tuple[str, str], list[float]] = {}
    for t in completed(study):
        for term in TrialRecord.of(t).config.get("terms") or []:
            if term_kind(term) != "relation":  # only relation terms have these components
                continue
            key = (term[rows]["name"], term[cols]["name"])
            cells.setdefault(key, []).append(t.values[0])
    best = np.full((len(row_names), len(col_names)), np.nan)
    for (r, c), values in cells.items():
        best[row_names.index(r), col_names.index(c)] = max(values)
    fig, ax = plt.subplots(figsize=(1.0 * len(col_names) + 3, 0.6 * len(row_names) + 2))
    finite = best[np.isfinite(best)]
    image = ax.imshow(np.ma.masked_invalid(best), cmap="viridis", aspect="auto",
                      vmin=finite.min() if finite.size else 0, vmax=finite.max() if finite.size else 1)
    for i, r in enumerate(row_names):
        for j, c in enumerate(col_names):
            if cell_invalid(rows, cols, r, c):
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="silver",
                                           linewidth=0))
                ax.text(j, i, "invalid", ha="center", va="center", fontsize=6, color="grey")
            elif (r, c) in cells:
                values = cells[(r, c)]
                ax.text(j, i, f"{100 * max(values):.1f}\n{100 * sum(values) / len(values):.1f}\nn={len(values)}",
                        ha="center", va="center", fontsize=6, color="white")
    ax.grid(False)
    ax.set_xticks(range(len(col_names)))
    ax.set_xticklabels(col_names, rotation=45, ha="right")
    ax.set_yticks(range(len(row_names)))
    ax.set_yticklabels(row_names)
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    fig.colorbar(image, ax=ax, label="best validation accuracy")
    ax.set_title(f"{study.study_name}: {rows} x {cols} (cell: best, mean %, trials; blank: not tried)",
                 fontsize=9)
    fig.tight_layout()
    return fig


@study_plot("weights", "Term weight against accuracy, per loss.", order=60, inputs=("study",), multi_objective=True)
def plot_weights(study: optuna.Study):
    """Term weight (log x) against validation accuracy, one panel per loss (per method for
    feature terms)."""
    plt = pyplot()
    points: dict[str, list[tuple[float, float, bool]]] = {}
    for t in completed(study):
        for term in TrialRecord.of(t).config.get("terms") or []:
            if term["weight"] > 0:
                panel = term["loss"]["name"] if term_kind(term) == "relation" else term_summary(term)
                points.setdefault(panel, []).append((term["weight"], t.values[0], is_known(t)))
    losses = sorted(points) or ["(no term)"]
    ncols = min(3, len(losses))
    nrows = math.ceil(len(losses) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax, loss in zip(axes.flat, losses):
        for weight, value, is_anchor in points.get(loss, []):
            ax.plot(weight, value, "D" if is_anchor else "o", color="tab:red" if is_anchor else "tab:blue",
                    markersize=4, alpha=0.7)
        ax.set_xscale("log")
        ax.set_title(f"loss {loss} (n={len(points.get(loss, []))})", fontsize=9)
        ax.set_xlabel("term weight")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(losses):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy")
    fig.suptitle(f"{study.study_name}: weight against accuracy (diamonds: anchors)")
    fig.tight_layout()
    return fig


@study_plot("importance", "Importance of each search parameter and of each design choice.", order=20,
            inputs=("importance",), optional=True)
def plot_importance(importance: dict[str, Any]):
    """Two panels: importance summed per design choice, and per search parameter."""
    plt = pyplot()
    from .choices import choice_group

    groups = {g: v for g, v in importance["groups"].items() if v > 0}
    params = importance["importances"]
    height = max(3.0, 0.28 * len(params) + 1.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 1.6]})
    names = sorted(groups, key=groups.get)
    left.barh(names, [groups[n] for n in names], color=[GROUP_COLOURS.get(n, "grey") for n in names])
    for i, n in enumerate(names):
        left.annotate(f"{groups[n]:.2f}", xy=(groups[n], i), xytext=(3, 0), textcoords="offset points",
                      va="center", fontsize=8)
    left.set_xlabel("importance (sums to 1)")
    left.set_title("per design choice")
    pnames = sorted(params, key=params.get)
    right.barh(pnames, [params[n] for n in pnames], color=[GROUP_COLOURS.get(choice_group(n), "grey") for n in pnames])
    right.set_xlabel("importance")
    right.set_title("per search parameter")
    right.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{importance['study']}: importance ({importance['evaluator']}, "
                 f"{importance['trials_used']} trials, {importance['pruned_used']} pruned)")
    fig.tight_layout()
    return fig


@study_plot("pareto", "Student size against validation accuracy: every completed trial, the Pareto front joined by "
                      "a step line (highlighted), anchors as diamonds.", order=80, inputs=("study",),
            multi_objective=True)
def plot_pareto(study: optuna.Study):
    """Student size (log x; the study's size objective, else parameters) against validation
    accuracy of every completed trial; the non-dominated ones highlighted and joined by a step
    line (the best accuracy reachable within each size), anchors as labelled diamonds. Not
    drawn for a study whose trials record no size, nor a single-objective one whose students
    all have one size (nothing to trade off)."""
    measure = size_measure(study)
    points = sized_points(study, measure)
    if not points:
        raise PlotNotApplicable("no completed trial records its student's size (studies made before relkd "
                                "recorded them)")
    if not is_multi_objective(study) and len({p.size for p in points}) < 2:
        raise PlotNotApplicable("every trial trained a student of one size: no trade-off to draw")
    front = non_dominated(points)
    on_front = {p.trial.number for p in front}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rest = [p for p in points if p.trial.number not in on_front and p.anchor is None]
    ax.plot([p.size for p in rest], [p.accuracy for p in rest], "o", color="silver", markersize=5,
            label="completed trial")
    ax.step([p.size for p in front], [p.accuracy for p in front], where="post", color="tab:blue", linewidth=1.5,
            alpha=0.8)
    searched = [p for p in front if p.anchor is None]
    ax.plot([p.size for p in searched], [p.accuracy for p in searched], "o", color="tab:blue", markersize=7,
            label="Pareto front")
    anchors = [p for p in points if p.anchor is not None]
    for p in anchors:
        ax.plot(p.size, p.accuracy, "D", markersize=7, markeredgecolor="black",
                color="tab:blue" if p.trial.number in on_front else "tab:red")
        ax.annotate(p.anchor, xy=(p.size, p.accuracy), xytext=(5, 3), textcoords="offset points", fontsize=8)
    if anchors:
        ax.plot([], [], "D", color="tab:red", markeredgecolor="black", label="anchor (blue: on the front)")
    smallest, largest = min(p.size for p in points), max(p.size for p in points)
    if smallest > 0:
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short_count(value)))
        narrow = largest / smallest < 30  # within about a decade: label the minor ticks too
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: _short_count(value)) if narrow else NullFormatter())
    ax.set_xlabel(f"student {SIZES[measure]}" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy against size ({len(front)} of {len(points)} trials on the front)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _short_count(value: float) -> str:
    """``950``, ``12k``, ``1.5M``: a size on an axis."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def write_study_plots(study: optuna.Study, out_dir: str | Path, *, evaluator: str = "ped_anova") -> list[Path]:
    """Write every registered plot of the study into ``out_dir``; returns the files written.
    The importance plot needs at least a few completed search trials and is left out before;
    a multi-objective study gets only the plots registered with ``multi_objective=True``. The
    PNG files are uploaded to the study's artifact store too, where optuna-dashboard shows them
    (:mod:`relkd.study.artifacts`; the SVG files stay in ``out_dir``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not completed(study):
        log.warning("study %s has no completed trial: no plots", study.study_name)
        return []
    given = _Inputs(study, evaluator)
    multi = is_multi_objective(study)
    paths: list[Path] = []
    for entry in sorted(PLOTS.entries(), key=lambda e: e.property("index")):
        if multi and not entry.property("multi_objective", default=False):
            log.info("no %s plot: study %s has several objectives", entry.name, study.study_name)
            continue
        try:
            figure = entry.obj(*(given[i] for i in entry.property("inputs")), **entry.property("arguments"))
        except PlotNotApplicable as err:
            log.info("no %s plot: %s", entry.name, err)
            continue
        except ValueError as err:
            if not entry.property("optional"):
                raise
            log.warning("no %s plot: %s", entry.name, err)
            continue
        saved = save_figure(figure, out, entry.name)
        paths += saved
        for path in saved:
            if path.suffix == ".png":
                upload_study_file(study, path)
    log.info("wrote %d plot files to %s", len(paths), out)
    return paths


class _Inputs:
    """The values plot functions are given, each computed at most once (a failure too)."""

    def __init__(self, study: optuna.Study, evaluator: str):
        self.values: dict[str, Any] = {"study": study, "evaluator": evaluator}
        self.errors: dict[str, ValueError] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self.errors:
            raise self.errors[name]
        if name not in self.values:  # only "importance" is computed on demand
            try:
                self.values[name] = study_importance(self.values["study"], self.values["evaluator"])
            except ValueError as err:
                self.errors[name] = err
                raise
        return self.values[name]
