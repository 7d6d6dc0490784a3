"""Re-runs: the leading compositions trained again with more seeds inside the study (the
ranking by the mean over seeds and the verdict they feed are :mod:`relkd.results.ranking`).

A composition is not better because one seed said so. When a study's search ends, the
``top_k`` best searched compositions and the ``anchors`` best anchors are trained again with
further seeds (the study's seed + 1, + 2, ...), so that each has ``seeds`` values. Each re-run
is an ordinary trial of the study carrying the user attribute ``rerun`` (``{"of": N, "seed":
S}``: the trial whose composition it re-runs and its seed); its value is the validation
accuracy of that run. Re-runs never count towards ``n_trials``, are never pruned and are not
compositions of their own: :func:`~relkd.results.ranking.compositions` folds them into the trial they re-run, whose
``values`` are then one accuracy per seed. Ranking, ``best``, export, status, confirm and the
report use the mean over seeds and show the spread. In a study file::

    optuna:
      rerun: {top_k: 2, anchors: 1, seeds: 3}   # seeds: how many each gets in all

Anchors get the same seeds as the searched compositions, so the comparison is fair; the
verdict (:func:`~relkd.results.ranking.search_verdict`) compares the best searched composition with the best
anchor over the seeds both were run with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..fields import FieldChecker, join_path
from ..results.ranking import compositions
from ..results.record import TrialRecord, trial_attrs

__all__ = ["Rerun", "validate_rerun", "RERUN_FIELDS", "rerun_plan", "enqueue_reruns"]

RERUN_FIELDS = ("top_k", "anchors", "seeds")


@dataclass(frozen=True)
class Rerun:
    """How many compositions are re-run at the end of the search, and with how many seeds in all."""

    top_k: int = 2
    anchors: int = 1
    seeds: int = 3

    def describe(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "anchors": self.anchors, "seeds": self.seeds}


def validate_rerun(c: FieldChecker, value: Any, path: str) -> Rerun | None:
    """Check an ``optuna.rerun`` section; errors go to ``c`` with their field paths."""
    if not c.mapping(value, path, RERUN_FIELDS):
        return None
    top_k = c.integer(value.get("top_k", 2), join_path(path, "top_k"), minimum=1)
    anchors = c.integer(value.get("anchors", 1), join_path(path, "anchors"), minimum=0)
    seeds = c.integer(value.get("seeds", 3), join_path(path, "seeds"), minimum=2)
    if None in (top_k, anchors, seeds):
        return None
    return Rerun(top_k, anchors, seeds)


def rerun_plan(study: optuna.Study, rerun: Rerun, base_seed: int) -> list[tuple[int, int]]:
    """``(trial number, seed)`` of every re-run still missing: the ``top_k`` best searched
    compositions and the ``anchors`` best anchors, each with seeds ``base_seed + 1 ..
    base_seed + seeds - 1``, less those with a completed, running or waiting re-run."""
    ranked = compositions(study, replicated_first=False)
    chosen = [c for c in ranked if not c.known][:rerun.top_k]
    chosen += [c for c in ranked if c.known][:rerun.anchors]
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    taken = {(r["of"], int(r["seed"])) for t in study.get_trials(deepcopy=False, states=live)
             if isinstance(r := TrialRecord.of(t).rerun, dict)}
    seeds = [base_seed + i for i in range(1, rerun.seeds)]
    return [(c.trial.number, s) for c in chosen for s in seeds
            if (c.trial.number, s) not in taken and s not in c.values]


def enqueue_reruns(study: optuna.Study, rerun: Rerun, base_seed: int) -> int:
    """Enqueue the missing re-runs (:func:`rerun_plan`); return how many."""
    plan = rerun_plan(study, rerun, base_seed)
    for number, seed in plan:
        study.enqueue_trial({}, user_attrs=trial_attrs(rerun={"of": number, "seed": seed}))
    return len(plan)
