"""Which design choices matter: parameter importances, grouped by choice, with the best
value of each choice beside them.

Importances are computed over every searched trial that trained, pruned ones included: with
a median pruner or a successive-halving ladder most searched trials are pruned, and counting
only the completed ones would leave little or nothing to analyse. Each trial is scored at the
highest rung it reached (:func:`rung_scores`): ``rung index + validation accuracy at that
rung``, so a trial ranks above every trial stopped at a lower rung and, within its rung, by
accuracy, the order in which the ladder promoted trials. The rungs are the study's ladder
(user attribute ``relkd.ladder``) or else every epoch. Trials pruned before training (invalid
draws, skipped trials) and anchors (no search parameters) do not count. The accuracies of
each choice's values (``best_per_choice``, ``best_composition_per_choice``) stay over the
completed trials.

PED-ANOVA (the default) handles conditional parameters such as ``term1.*``, which exist
only in trials with two terms. fANOVA and MDI (``evaluator="fanova" | "mdi"``) see only the
parameters every trial has.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Iterable

import optuna
from optuna.trial import TrialState

from ..study.ladder import ladder_of
from ..results.record import LADDER_ATTR, TrialRecord
from .choices import CHOICES, FAMILY_CHOICES, GROUPS, choice_group, choice_stats, completed, uses_features
from ..results.pareto import single_objective

__all__ = ["EVALUATORS", "study_importance", "rung_scores", "MIN_TRIALS", "SCORE"]

log = logging.getLogger(__name__)

EVALUATORS: dict[str, type] = {
    "ped_anova": optuna.importance.PedAnovaImportanceEvaluator,
    "fanova": optuna.importance.FanovaImportanceEvaluator,
    "mdi": optuna.importance.MeanDecreaseImpurityImportanceEvaluator,
}
MIN_TRIALS = 3
#: what the importances are computed on (reported as ``score`` in :func:`study_importance`)
SCORE = "rung index + accuracy at the highest rung reached"


def _evaluator(name: str, seed: int) -> Any:
    if name not in EVALUATORS:
        raise ValueError(f"--evaluator: expected one of {', '.join(EVALUATORS)}, got {name!r}")
    cls = EVALUATORS[name]
    return cls() if name == "ped_anova" else cls(seed=seed)


def _trained_searched_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials with search parameters that trained: completed, or pruned after reporting at
    least one epoch (not the invalid draws or skipped trials, which were pruned before training)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if not t.params or TrialRecord.of(t).tuned_anchor is not None:
            continue  # anchors outside the space, trials that drew nothing, tuned anchors (their own parameters)
        if t.state == TrialState.PRUNED and not t.intermediate_values:
            continue  # pruned before training: invalid combination, skipped
        out.append(t)
    return out


def _rungs(study: optuna.Study, trials: Iterable[optuna.trial.FrozenTrial], rungs: Iterable[int] | None) -> list[int]:
    if rungs is None:
        rungs = ladder_of(study.user_attrs.get(LADDER_ATTR))
        if not rungs:
            top = max((step for t in trials for step in t.intermediate_values), default=0)
            return list(range(1, top + 1))
    rungs = list(rungs)
    out = sorted({int(r) for r in rungs})
    if not out or out[0] < 1:
        raise ValueError(f"rungs: expected epochs (integers >= 1), got {rungs!r}")
    return out


def rung_scores(study: optuna.Study, rungs: Iterable[int] | None = None) -> dict[int, float]:
    """Score of every searched trial that trained (trial number -> score), pruned trials included.

    The trials: those with search parameters that are completed, or pruned after reporting at
    least one intermediate value (each trial reports its validation accuracy after every epoch,
    step = epochs trained). Trials pruned before training (invalid draws, skipped trials) have
    no intermediate values and are left out, as are anchors (no search parameters).

    The rungs: ``rungs`` (epochs) if given; otherwise those of the study's successive-halving
    ladder (study user attribute ``relkd.ladder``, ``{"rungs": [...]}``, the top rung being the
    budget) if it has one; otherwise every epoch from 1 to the last one any trial reported.

    A trial's rung is the highest rung ``r`` at which it reported a (finite) accuracy; a trial
    that did not reach even the lowest rung is left out (a trial pruned for a non-finite loss
    counts at the rung it reached before, if any). Its score is ``index of its rung in the
    sorted rungs + its accuracy at that rung``. Accuracies lie in [0, 1], so a trial ranks
    above every trial that stopped at a lower rung, and among the trials of its rung by
    accuracy: the order in which the ladder promoted trials, and the only comparison that is
    fair between trials trained for different numbers of epochs. A completed trial without
    any intermediate value (a study recorded before trials reported each epoch) counts at the
    top rung with its final value.
    """
    trials = _trained_searched_trials(study)
    return _scores(trials, _rungs(study, trials, rungs))


def _scores(trials: list[optuna.trial.FrozenTrial], ladder: list[int]) -> dict[int, float]:
    """:func:`rung_scores` of ``trials`` on the sorted rungs ``ladder``."""
    scores: dict[int, float] = {}
    for t in trials:
        if not t.intermediate_values:  # completed without per-epoch reports
            if t.value is not None and math.isfinite(t.value):
                scores[t.number] = float(max(len(ladder) - 1, 0)) + float(t.value)
            continue
        for index in range(len(ladder) - 1, -1, -1):
            value = t.intermediate_values.get(ladder[index])
            if value is not None and math.isfinite(value):
                scores[t.number] = index + float(value)
                break
    return scores


def _searched_trials_study(study: optuna.Study) -> tuple[optuna.Study, int, int]:
    """An in-memory copy holding, for every trial :func:`rung_scores` scores, a completed trial
    with its search parameters and its score as value; with the number of those trials and how
    many of them were pruned."""
    trained = _trained_searched_trials(study)
    scores = _scores(trained, _rungs(study, trained, None))
    trials = [t for t in trained if t.number in scores]
    copy = optuna.create_study(direction="maximize")
    copy.add_trials([optuna.trial.create_trial(state=TrialState.COMPLETE, params=t.params,
                                               distributions=t.distributions, value=scores[t.number])
                     for t in trials])
    return copy, len(trials), sum(1 for t in trials if t.state == TrialState.PRUNED)


def study_importance(study: optuna.Study, evaluator: str = "ped_anova", *, seed: int = 0) -> dict[str, Any]:
    """Importances of the search parameters (summing to 1), their sums per design choice
    (``groups``), and for each choice the accuracy of every value over the completed trials
    (``best_per_choice``: best, mean, count and best trial), and for each choice the best
    value with its best composition (``best_composition_per_choice``).

    The importances are computed over the scores of :func:`rung_scores` (``score``): every
    searched trial that trained counts, a pruned one at the highest rung it reached.
    ``trials_used`` is how many trials were scored, ``pruned_used`` how many of those were
    pruned. Raises ``ValueError`` when fewer than :data:`MIN_TRIALS` trials are scored, and on a
    multi-objective study (no single value to explain)."""
    single_objective(study, "importance", "it explains one value by the design choices; read the Pareto front "
                     f"instead (relkd study status --study-name {study.study_name}, or relkd study report)")
    searched, n, n_pruned = _searched_trials_study(study)
    if n < MIN_TRIALS:
        raise ValueError(f"study {study.study_name!r} has {n} trained trials with search parameters "
                         f"(completed, or pruned after reaching a rung); importance needs at least {MIN_TRIALS}")
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
    for choice in (*CHOICES, "terms", "kd", *(FAMILY_CHOICES if uses_features(trials) else ())):
        stats = choice_stats(trials, choice)
        ranked = sorted(stats.items(), key=lambda kv: -kv[1].best)
        best_per_choice[choice] = {
            value: {"best": s.best, "mean": s.mean, "count": s.count, "best_trial": s.best_trial}
            for value, s in ranked
        }
        if ranked:
            value, s = ranked[0]
            best_composition[choice] = {"value": value, "trial": s.best_trial, "validation_accuracy": s.best,
                                        "objective_config": TrialRecord.of(by_number[s.best_trial]).config}
    return {
        "study": study.study_name,
        "evaluator": evaluator,
        "trials_used": n,
        "pruned_used": n_pruned,
        "score": SCORE,
        "degenerate": degenerate,
        "importances": importances,
        "groups": {g: v for g, v in groups.items() if v > 0 or g in GROUPS},
        "best_per_choice": best_per_choice,
        "best_composition_per_choice": best_composition,
    }
