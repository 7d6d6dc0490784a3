"""Design choices of trials: which group a search parameter belongs to, and which
affinity / normalisation / loss / tap / view a trial's composition uses.

Choices are read from each trial's ``objective_config`` rather than its parameters, so the
anchors (whose compositions may lie outside the search space) and multi-term trials count
too: a trial with two terms counts once under each affinity it uses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import optuna
from optuna.trial import TrialState

__all__ = ["GROUPS", "CHOICES", "NO_TERM", "choice_group", "trial_choices", "completed", "ChoiceStats",
           "choice_stats"]

# Groups of search parameters, in the order plots show them.
GROUPS = ("terms", "tap", "view", "affinity", "normalisation", "loss", "component params", "weights", "KD")
# Categorical choices a composition is made of.
CHOICES = ("affinity", "normalisation", "loss", "tap", "view")
NO_TERM = "(no term)"

_TERM_FIELD = re.compile(r"^term\d+\.(tap|view|affinity|normalisation|loss|weight)$")
_TERM_COMPONENT_PARAM = re.compile(r"^term\d+\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")


def choice_group(param: str) -> str:
    """The design choice a search parameter belongs to (one of :data:`GROUPS`, else ``other``)::

        n_terms -> terms; term0.affinity -> affinity; term1.rbf.gamma -> component params;
        term0.weight, kd.weight, ce_weight -> weights; kd, kd.temperature -> KD
    """
    if param == "n_terms":
        return "terms"
    if param in ("kd", "kd.temperature"):
        return "KD"
    if param in ("kd.weight", "ce_weight"):
        return "weights"
    match = _TERM_FIELD.match(param)
    if match:
        return "weights" if match.group(1) == "weight" else match.group(1)
    if _TERM_COMPONENT_PARAM.match(param):
        return "component params"
    return "other"


def trial_choices(config: dict[str, Any]) -> dict[str, set[str]]:
    """The values of each of :data:`CHOICES` a composition uses (``(no term)`` without terms),
    plus ``terms`` (the number of terms) and ``kd`` (on / off)."""
    terms = config.get("terms") or []
    out: dict[str, set[str]] = {}
    for choice in CHOICES:
        if choice in ("tap", "view"):
            values = {t[choice] for t in terms}
        else:
            values = {t[choice]["name"] for t in terms}
        out[choice] = values or {NO_TERM}
    out["terms"] = {str(len(terms))}
    out["kd"] = {"on" if config.get("kd") else "off"}
    return out


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials that carry a composition."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "objective_config" in t.user_attrs]


@dataclass
class ChoiceStats:
    """Validation accuracy of the completed trials that use one value of a choice."""

    values: list[float]
    trials: list[int]

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def best(self) -> float:
        return max(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def best_trial(self) -> int:
        return self.trials[self.values.index(self.best)]


def choice_stats(trials: Iterable[optuna.trial.FrozenTrial], choice: str) -> dict[str, ChoiceStats]:
    """For each value of ``choice``: the accuracies of the trials that use it."""
    stats: dict[str, ChoiceStats] = {}
    for t in trials:
        for value in sorted(trial_choices(t.user_attrs["objective_config"])[choice]):
            entry = stats.setdefault(value, ChoiceStats([], []))
            entry.values.append(t.value)
            entry.trials.append(t.number)
    return stats
