"""Design choices of trials: which group a search parameter belongs to (declared with each
search dimension in :mod:`relkd.study.dimensions`), and which affinity / normalisation / loss /
tap / view a trial's composition uses, and which family of terms (relation, feature).

Choices are read from each trial's ``objective_config`` rather than its parameters, so the
anchors (whose compositions may lie outside the search space) and multi-term trials count
too: a trial with two terms counts once under each affinity it uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import optuna
from optuna.trial import TrialState

from ..config import tap_label
from ..results.record import TrialRecord
from ..study.dimensions import GROUPS, choice_group
from ..terms import term_kind

__all__ = ["GROUPS", "CHOICES", "FAMILY_CHOICES", "NO_TERM", "uses_features", "choice_group", "trial_choices",
           "completed", "ChoiceStats",
           "choice_stats"]

# Categorical choices a composition is made of.
CHOICES = ("affinity", "normalisation", "loss", "tap", "view")
#: Choices of the term families: which families a composition uses and its feature methods
#: (shown when a study has feature terms).
FAMILY_CHOICES = ("family", "method")
NO_TERM = "(no term)"


def trial_choices(config: dict[str, Any]) -> dict[str, set[str]]:
    """The values of each of :data:`CHOICES` a composition uses (``(no term)`` without terms;
    the relation choices come from its relation terms), plus ``terms`` (the number of terms),
    ``kd`` (on / off) and the :data:`FAMILY_CHOICES`: ``family`` (relation, feature) and
    ``method`` (the feature terms' methods)."""
    terms = config.get("terms") or []
    relation = [t for t in terms if term_kind(t) == "relation"]
    out: dict[str, set[str]] = {}
    for choice in CHOICES:
        if choice == "tap":
            values = {tap_label(t["tap"]) for t in terms}
        elif choice == "view":
            values = {t["view"] for t in relation}
        else:
            values = {t[choice]["name"] for t in relation}
        out[choice] = values or {NO_TERM}
    out["terms"] = {str(len(terms))}
    out["kd"] = {"on" if config.get("kd") else "off"}
    out["family"] = {term_kind(t) for t in terms} or {NO_TERM}
    out["method"] = {t["method"]["name"] for t in terms if t.get("kind") == "feature"} or {NO_TERM}
    return out


def uses_features(trials: Iterable[optuna.trial.FrozenTrial]) -> bool:
    """Whether any of ``trials`` has a feature term (then the family is a design choice to show)."""
    return any(t.get("kind") == "feature" for trial in trials
               for t in (TrialRecord.of(trial).config or {}).get("terms") or [])


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials that carry a composition, one per composition: re-runs with another
    seed (:data:`relkd.results.record.RERUN_ATTR`) are not counted again."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if TrialRecord.of(t).config is not None and TrialRecord.of(t).rerun is None]


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
    """For each value of ``choice``: the accuracies of the trials that use it (a trial's first
    value: the only one on a single-objective study, the accuracy on a multi-objective one)."""
    stats: dict[str, ChoiceStats] = {}
    for t in trials:
        for value in sorted(trial_choices(TrialRecord.of(t).config)[choice]):
            entry = stats.setdefault(value, ChoiceStats([], []))
            entry.values.append(t.values[0])  # the validation accuracy, also on a multi-objective study
            entry.trials.append(t.number)
    return stats
