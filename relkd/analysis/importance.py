"""Which design choices matter: parameter importances, grouped by choice, with the best
value of each choice beside them.

PED-ANOVA (the default) handles conditional parameters such as ``term1.*``, which exist
only in trials with two terms. fANOVA and MDI (``evaluator="fanova" | "mdi"``) see only the
parameters every trial has.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna

from .choices import CHOICES, GROUPS, choice_group, choice_stats, completed

__all__ = ["EVALUATORS", "study_importance", "MIN_TRIALS"]

log = logging.getLogger(__name__)

EVALUATORS: dict[str, type] = {
    "ped_anova": optuna.importance.PedAnovaImportanceEvaluator,
    "fanova": optuna.importance.FanovaImportanceEvaluator,
    "mdi": optuna.importance.MeanDecreaseImpurityImportanceEvaluator,
}
MIN_TRIALS = 3


def _evaluator(name: str, seed: int) -> Any:
    if name not in EVALUATORS:
        raise ValueError(f"--evaluator: expected one of {', '.join(EVALUATORS)}, got {name!r}")
    cls = EVALUATORS[name]
    return cls() if name == "ped_anova" else cls(seed=seed)


def _searched_trials_study(study: optuna.Study) -> tuple[optuna.Study, int]:
    """An in-memory copy holding the completed trials that have search parameters."""
    trials = [t for t in completed(study) if t.params]
    copy = optuna.create_study(direction="maximize")
    copy.add_trials(trials)
    return copy, len(trials)


def study_importance(study: optuna.Study, evaluator: str = "ped_anova", *, seed: int = 0) -> dict[str, Any]:
    """Importances of the search parameters (summing to 1), their sums per design choice
    (``groups``), and for each choice the accuracy of every value over the completed trials
    (``best_per_choice``: best, mean, count and best trial), and for each choice the best
    value with its best composition (``best_composition_per_choice``). Raises ``ValueError`` when the
    study has fewer than :data:`MIN_TRIALS` completed trials with parameters."""
    searched, n = _searched_trials_study(study)
    if n < MIN_TRIALS:
        raise ValueError(f"study {study.study_name!r} has {n} completed trials with search parameters; "
                         f"importance needs at least {MIN_TRIALS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature and small-sample warnings
        raw = optuna.importance.get_param_importances(searched, evaluator=_evaluator(evaluator, seed),
                                                      normalize=False)
    raw = {k: float(v) for k, v in raw.items()}
    total = sum(raw.values())
    degenerate = total <= 0
    if degenerate:  # the evaluator found nothing to tell the parameters apart
        log.warning("study %s: %s found no differences between parameters; reporting equal importances",
                    study.study_name, evaluator)
        importances = {k: 1.0 / len(raw) for k in raw}
    else:
        importances = {k: v / total for k, v in raw.items()}
    importances = dict(sorted(importances.items(), key=lambda kv: -kv[1]))
    groups = {g: 0.0 for g in GROUPS}
    for param, value in importances.items():
        group = choice_group(param)
        groups[group] = groups.get(group, 0.0) + value
    trials = completed(study)
    by_number = {t.number: t for t in trials}
    best_per_choice, best_composition = {}, {}
    for choice in (*CHOICES, "terms", "kd"):
        stats = choice_stats(trials, choice)
        ranked = sorted(stats.items(), key=lambda kv: -kv[1].best)
        best_per_choice[choice] = {
            value: {"best": s.best, "mean": s.mean, "count": s.count, "best_trial": s.best_trial}
            for value, s in ranked
        }
        if ranked:
            value, s = ranked[0]
            best_composition[choice] = {"value": value, "trial": s.best_trial, "validation_accuracy": s.best,
                                        "objective_config": by_number[s.best_trial].user_attrs["objective_config"]}
    return {
        "study": study.study_name,
        "evaluator": evaluator,
        "trials_used": n,
        "degenerate": degenerate,
        "importances": importances,
        "groups": {g: v for g, v in groups.items() if v > 0 or g in GROUPS},
        "best_per_choice": best_per_choice,
        "best_composition_per_choice": best_composition,
    }
