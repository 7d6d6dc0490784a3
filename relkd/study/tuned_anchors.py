"""Tuned anchors: the known methods get their hyperparameters tuned too, so that the search is
compared with the best *tuned* known method, not with weights published for another budget.

``kd`` and the ``anchors`` best other anchors (by validation accuracy, among those completed
when the trial starts; never ``none``, whose learning rate the recipe tunes) each get
``trials`` trials that change their hyperparameters only:
each term's weight times ``10**u`` (``u`` in ``[-weight_decades, weight_decades]``), KD's
temperature (times 1/4 .. 4) and weight (times 1/3 .. 3), CE's weight (times 1/10 .. 10),
the moves of :mod:`relkd.study.refine` without its structural ones (another tap, view or
term), which stay the search's. A tuned anchor is a trial with the user attribute
``tuned_anchor`` (the preset it tunes); its parameters are ``tuned.<preset>.*``, so the
sampler learns each anchor's tuning apart from the open space. Like anchors, tuned anchors
always train to the end, and the ranking, the re-runs and the verdict treat them as known
methods (:class:`relkd.results.ranking.Composition`).

Which searched trials tune an anchor is decided by their place among the searched trials
(trial numbers less the anchors'), so a resumed or distributed study gives the same trial
the same role: the first ``(1 + anchors) * trials`` searched trials, in turns. In a study file::

    optuna:
      tune_anchors: {anchors: 2, trials: 4, weight_decades: 1.0}
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import optuna

from ..config import validate_config
from ..fields import FieldChecker, join_path
from ..results.record import TrialRecord, replays
from .refine import scale_kd_and_ce, scale_term

__all__ = ["AnchorTuning", "validate_tune_anchors", "TUNE_ANCHORS_FIELDS", "searched_index"]

TUNE_ANCHORS_FIELDS = ("anchors", "trials", "weight_decades")
#: Always tuned: the method every distillation result is measured against.
ALWAYS = "kd"
#: Never tuned: CE alone has no hyperparameter but the learning rate, which the recipe tunes.
NEVER = "none"


@dataclass(frozen=True)
class AnchorTuning:
    """How many known methods get their hyperparameters tuned, with how many trials each."""

    anchors: int = 2
    trials: int = 4
    weight_decades: float = 1.0

    def describe(self) -> dict[str, Any]:
        return {"anchors": self.anchors, "trials": self.trials, "weight_decades": self.weight_decades}

    def choose(self, index: int, ranked: Sequence[tuple[str, dict[str, Any]]],
               anchors: Sequence[str]) -> str | None:
        """The preset that the searched trial ``index`` (0-based) tunes, or ``None`` when it is
        an ordinary searched trial: ``kd`` (when the study has it) and the ``anchors`` best
        others of ``ranked`` (completed anchors, best first: ``(name, config)``), in turns;
        never ``none``, whose only hyperparameter, the learning rate, is the recipe's."""
        others = [n for n, _ in ranked if n not in (ALWAYS, NEVER)]
        tuned = ([ALWAYS] if ALWAYS in anchors else []) + others[:self.anchors]
        if not tuned or index >= len(tuned) * self.trials:
            return None
        return tuned[index % len(tuned)]

    def sample(self, trial: Any, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """The anchor ``name``'s config with its hyperparameters drawn through ``trial``."""
        config = copy.deepcopy(validate_config(config))
        for i, term in enumerate(config["terms"]):
            scale_term(trial, term, f"tuned.{name}.term{i}.scale", self.weight_decades)
        scale_kd_and_ce(trial, config, f"tuned.{name}.")
        config.pop("meta", None)
        for term in config["terms"]:
            term.pop("name", None)
        return validate_config(config)


def searched_index(study: optuna.Study, number: int) -> int:
    """The place of trial ``number`` among the study's searched trials: how many trials before
    it are neither anchors nor re-runs (the same in every process). A copy that trains a
    stopped trial again in its role (:func:`relkd.results.record.replays`) takes no place: it
    stands in the place of the trial it copies."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number
               and (r := TrialRecord.of(t)).anchor is None and r.rerun is None and not replays(r, t.system_attrs))


def validate_tune_anchors(c: FieldChecker, value: Any, path: str) -> AnchorTuning | None:
    """Check an ``optuna.tune_anchors`` section; errors go to ``c`` with their field paths."""
    if not c.mapping(value, path, TUNE_ANCHORS_FIELDS):
        return None
    anchors = c.integer(value.get("anchors", 2), join_path(path, "anchors"), minimum=0)
    trials = c.integer(value.get("trials", 4), join_path(path, "trials"), minimum=1)
    decades = c.number(value.get("weight_decades", 1.0), join_path(path, "weight_decades"), minimum=0.0,
                       strict=True, maximum=6.0)
    if None in (anchors, trials, decades):
        return None
    return AnchorTuning(int(anchors), int(trials), float(decades))
