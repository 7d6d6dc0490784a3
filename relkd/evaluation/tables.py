"""The degradation table (Markdown) and plot (accuracy against severity) of evaluation results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..figures import pyplot, save_figure
from ..text import markdown_table, percent
from .degrade import DEGRADATIONS

__all__ = ["format_degradation_table", "plot_degradation"]


# ----------------------------------------------------------------------------------------
# Table and plot


def _curves(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[int]]:
    """Degradation kinds (in order of first appearance) and sorted severities over all results."""
    if not results:
        raise ValueError("no results to show")
    kinds: dict[str, None] = {}
    levels: set[int] = set()
    for label, result in results.items():
        if "accuracy" not in result or "degradation" not in result:
            raise ValueError(f"result {label!r} is not an evaluate_model result (needs 'accuracy' and 'degradation')")
        for kind, by_severity in result["degradation"].items():
            kinds.setdefault(kind, None)
            levels.update(int(s) for s in by_severity)
    return list(kinds), sorted(levels)


def _accuracy_at(result: Mapping[str, Any], kind: str, severity: int) -> float | None:
    by_severity = result["degradation"].get(kind, {})
    value = by_severity.get(severity, by_severity.get(str(severity)))
    return None if value is None else float(value)


def _strength_label(kind: str) -> tuple[str, Sequence[float] | None]:
    """``(unit, strengths per severity)`` of a registered kind; ``("", None)`` for an unknown one."""
    if kind not in DEGRADATIONS:
        return "", None
    entry = DEGRADATIONS.get(kind)
    return entry.property("unit", default=""), entry.property("strengths")


def format_degradation_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of top-1 accuracy (%): one row per model label and degradation kind,
    columns ``clean``, each severity and the mean over severities; a line below gives each
    kind's strength per severity."""
    kinds, levels = _curves(results)
    header = ["model", "degradation", "clean", *(str(s) for s in levels), "mean"]
    rows = []
    for label, result in results.items():
        for kind in kinds or ["–"]:
            values = [_accuracy_at(result, kind, s) for s in levels] if kinds else []
            present = [v for v in values if v is not None]
            mean = sum(present) / len(present) if present else None
            rows.append([str(label), kind, *(percent(v, missing="–") for v in [result["accuracy"], *values, mean])])
    notes = []
    for kind in kinds:
        unit, strengths = _strength_label(kind)
        if strengths is not None:
            notes.append(f"{kind}: {unit} " + ", ".join(f"{strengths[s - 1]:g}" for s in levels if s <= len(strengths)))
    text = markdown_table(header, rows, right=range(2, len(header)))
    if notes:
        text += "\n\nStrength per severity " + ", ".join(str(s) for s in levels) + ": " + "; ".join(notes) + "."
    return text


def plot_degradation(results: Mapping[str, Mapping[str, Any]], out: str | Path) -> list[Path]:
    """Plot accuracy versus severity, one panel per degradation kind and one line per model;
    severity 0 is the clean accuracy. Writes ``out`` + ``.png`` and ``.svg`` (creating the
    folder) and returns both paths."""
    plt = pyplot()
    kinds, levels = _curves(results)
    if not kinds:
        raise ValueError("the results hold no degradation accuracies to plot")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.6), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        unit, strengths = _strength_label(kind)
        for label, result in results.items():
            points = [(0, float(result["accuracy"]))]
            points += [(s, a) for s in levels if (a := _accuracy_at(result, kind, s)) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1.5, label=str(label))
        ticks = [0, *levels]
        names = ["clean"] + [f"{s}\n{strengths[s - 1]:g}" if strengths is not None and s <= len(strengths) else str(s)
                             for s in levels]
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_xlabel(f"severity ({unit})" if unit else "severity")
        ax.set_title(f"{kind}\n{unit} per severity" if unit else kind, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, out.parent, out.name)
