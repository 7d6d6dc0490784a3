"""Plots of a study, as PNG and SVG through matplotlib.

:func:`write_study_plots` writes every plot this module knows into a folder and returns the
paths. Optuna's own matplotlib plots are used where they draw the picture; relkd adds the
anchors (the known methods) as reference lines, since they are what a search result must beat.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

__all__ = ["write_study_plots", "plot_history", "plot_intermediate"]

log = logging.getLogger(__name__)
FORMATS = ("png", "svg")
REFERENCE_ANCHORS = ("none", "kd")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, out_dir: Path, stem: str) -> list[Path]:
    plt = _pyplot()
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def _anchor_lines(study: optuna.Study) -> dict[str, float]:
    """``none``, ``kd`` and the best relation preset: name -> validation accuracy."""
    anchors = {t.user_attrs["anchor"]: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if "anchor" in t.user_attrs}
    lines = {name: anchors[name] for name in REFERENCE_ANCHORS if name in anchors}
    relation = {k: v for k, v in anchors.items() if k not in REFERENCE_ANCHORS}
    if relation:
        best = max(relation, key=relation.get)
        lines[f"best preset ({best})"] = relation[best]
    return lines


def plot_history(study: optuna.Study):
    """Optimisation history (Optuna's plot) with the anchors as horizontal reference lines."""
    plt = _pyplot()
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
    return ax.figure if hasattr(ax, "figure") else plt.gcf()


def plot_intermediate(study: optuna.Study):
    """Validation accuracy per epoch of every trial; pruned trials stop early."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_intermediate_values(study)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study.study_name}: accuracy per epoch (pruned trials stop early)")
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    return ax.figure


def write_study_plots(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """Write every plot of the study into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("study %s has no completed trial: no plots", study.study_name)
        return []
    paths = _save(plot_history(study), out, "history")
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        paths += _save(plot_intermediate(study), out, "intermediate")
    log.info("wrote %d plot files to %s", len(paths), out)
    return paths
