"""Ranking by the mean over seeds, and the verdict whether the search beat the known methods.

A composition is not better because one seed said so. A study's re-runs
(:mod:`relkd.study.seeds`) train its leaders again with more seeds; :func:`compositions` folds
each re-run into the trial it re-runs, so a composition's ``values`` are one validation
accuracy per seed, and ranks them by their mean (a re-run composition above one on a single
seed). :func:`search_verdict` compares the best searched composition with the best known
method over the seeds both ran, leaving out the seed both were picked on; :func:`verdict_line`
says it in one sentence. Ranking, ``best``, export, status, confirm and the report all read
the study through these functions.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..stats import welch_difference, welch_interval
from ..text import percent
from .record import BEST_ATTR, TrialRecord

__all__ = ["Composition", "compositions", "search_verdict", "verdict_line", "SIGNIFICANCE", "record_best"]

#: The Welch p-value below which a lead over the best anchor counts as a win.
SIGNIFICANCE = 0.05


@dataclass
class Composition:
    """A completed trial with the values of its re-runs: ``values`` maps seed -> validation accuracy."""

    trial: FrozenTrial
    values: dict[int, float] = field(default_factory=dict)

    @property
    def record(self) -> TrialRecord:
        return TrialRecord.of(self.trial)

    @property
    def anchor(self) -> str | None:
        return self.record.anchor

    @property
    def tuned(self) -> str | None:
        """The anchor whose hyperparameters this trial tuned (:mod:`relkd.study.tuned_anchors`)."""
        return self.record.tuned_anchor

    @property
    def known(self) -> bool:
        """A known method: an anchor or a tuned anchor (the side the search is measured against)."""
        return self.anchor is not None or self.tuned is not None

    @property
    def label(self) -> str:
        if self.anchor:
            return f"anchor {self.anchor}"
        return f"tuned {self.tuned} (trial {self.trial.number})" if self.tuned else f"trial {self.trial.number}"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None

    @property
    def n(self) -> int:
        return len(self.values)

    def spread(self) -> str:
        """``80.12%`` or, with several seeds, ``80.12% ± 0.40% (3 seeds)``."""
        text = percent(self.mean, unit="%")
        return text if self.std is None else f"{text} ± {percent(self.std, unit='%')} ({self.n} seeds)"

    def summary(self) -> dict[str, Any]:
        return {"trial": self.trial.number, "label": self.label, "mean": self.mean, "std": self.std,
                "seeds": sorted(self.values), "values": [self.values[s] for s in sorted(self.values)]}


def _seed(trial: FrozenTrial, default: int = 0) -> int:
    seed = TrialRecord.of(trial).seed
    return int(seed) if isinstance(seed, (int, float)) else default


def compositions(study: optuna.Study, *, include_anchors: bool = True,
                 replicated_first: bool = True) -> list[Composition]:
    """Completed compositions (re-runs folded into the trial they re-run), best mean first;
    ties broken by trial number; ``include_anchors=False``: the searched ones only (no anchors,
    no tuned anchors). A trial's accuracy is its first value, so a multi-objective
    study (values: accuracy, size) ranks by accuracy alone.

    ``replicated_first``: compositions re-run with more seeds rank above those on one seed.
    Many compositions close together on the selection seed are the winner's curse at work:
    a re-run leader's mean falls back, and a composition nobody re-ran would lead on its one
    lucky seed, against means it cannot be compared with. (The re-run plan ranks by the mean
    alone, to find the next leaders to re-run.)"""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    found: dict[int, Composition] = {}
    for t in trials:
        record = TrialRecord.of(t)
        if record.rerun is None and record.config is not None:
            found[t.number] = Composition(t, {_seed(t): float(t.values[0])})
    for t in trials:
        rerun = TrialRecord.of(t).rerun
        if isinstance(rerun, dict) and rerun.get("of") in found:
            found[rerun["of"]].values.setdefault(int(rerun["seed"]), float(t.values[0]))
    ranked = [c for c in found.values() if include_anchors or not c.known]
    return sorted(ranked, key=lambda c: (-(replicated_first and c.n > 1), -c.mean, c.trial.number))


def search_verdict(study: optuna.Study) -> dict[str, Any] | None:
    """Whether the best searched composition beat the best known method (an anchor, or a
    tuned anchor: :mod:`relkd.study.tuned_anchors`), as plain data, or ``None`` without a
    completed known method and a completed searched composition.

    Both are ranked by their mean over seeds, and both were picked as leaders on the seed
    their first trial ran with: among many compositions, the best one on that seed is
    lucky on it (the winner's curse), more so for the search, which picks among more. So
    the difference is taken over the **re-run seeds** both have, leaving the selection seed
    out, when there are at least two of them; otherwise over all the seeds both have
    (``selection_seed_left_out`` says which). It comes with its standard error (Welch), its
    95% confidence interval and Welch's p-value. ``outcome`` is ``beat`` (ahead with p <
    :data:`SIGNIFICANCE`), ``ahead within noise`` (ahead, but p is larger or undefined: fewer
    than two seeds each) or ``did not beat``. ``none`` holds CE alone's mean (the student
    trained without a teacher, at the study's recipe) where it is an anchor, and whether the
    best searched composition (over the verdict's seeds) is above it. ``None`` on a multi-objective
    study too: a pruned student is not beaten by a larger anchor, the Pareto front
    (:mod:`relkd.results.pareto`) says what the search found."""
    if len(study.directions) > 1:
        return None
    ranked = compositions(study)
    anchors = [c for c in ranked if c.known]
    searched = [c for c in ranked if not c.known]
    if not anchors or not searched:
        return None
    anchor, best = anchors[0], searched[0]
    common = sorted(set(anchor.values) & set(best.values))
    selection = {_seed(anchor.trial), _seed(best.trial)}
    fresh = [s for s in common if s not in selection]
    seeds = fresh if len(fresh) >= 2 else common
    a = [anchor.values[s] for s in seeds] if seeds else list(anchor.values.values())
    b = [best.values[s] for s in seeds] if seeds else list(best.values.values())
    difference, se, p = welch_difference(b, a)
    if difference > 0 and p is not None and p < SIGNIFICANCE:
        outcome = "beat"
    elif difference > 0:
        outcome = "ahead within noise"
    else:
        outcome = "did not beat"
    none = next((c for c in ranked if c.anchor == "none"), None)
    return {"outcome": outcome, "best_anchor": anchor.summary(), "best_searched": best.summary(),
            "seeds": seeds, "selection_seed_left_out": seeds is fresh and bool(fresh),
            "anchor_mean": statistics.fmean(a), "searched_mean": statistics.fmean(b),
            "difference": difference, "standard_error": se, "p": p, "ci": welch_interval(b, a),
            "none": None if none is None else {"mean": none.mean, "seeds": none.n,
                                               "beaten": statistics.fmean(b) > none.mean}}


def verdict_line(verdict: dict[str, Any] | None) -> str:
    """The verdict in one plain sentence."""
    if verdict is None:
        return "no verdict yet: the study needs a completed anchor and a completed searched composition"
    a, b = verdict["best_anchor"], verdict["best_searched"]
    n = len(verdict["seeds"])
    diff = f"{100 * verdict['difference']:+.2f}"
    if verdict["standard_error"] is not None:
        diff += f" ± {100 * verdict['standard_error']:.2f}"
    over = f"mean over {n} seeds" if n > 1 else "on one seed, without uncertainty"
    if verdict.get("selection_seed_left_out"):
        over = f"mean over the {n} re-run seeds, leaving out the seed they were picked on"
    p = "" if verdict["p"] is None else (", Welch p < 0.001" if verdict["p"] < 0.001
                                         else f", Welch p = {verdict['p']:.3f}")
    if verdict.get("ci"):
        diff += f" (95% CI {100 * verdict['ci'][0]:+.2f} .. {100 * verdict['ci'][1]:+.2f})"
    head = {"beat": "the search beat the known methods",
            "ahead within noise": "the search did not beat the known methods beyond seed noise",
            "did not beat": "the search did not beat the known methods"}[verdict["outcome"]]
    none = verdict.get("none")
    first = ""
    if none is not None and not none["beaten"]:
        first = (f"the search did not beat CE alone (none {percent(none['mean'], unit='%')}, the student without a "
                 f"teacher at this recipe); ")
    return (f"{first}{head}: best searched {b['label']} {percent(verdict['searched_mean'], unit='%')} vs best known "
            f"{a['label'].removeprefix('anchor ')} {percent(verdict['anchor_mean'], unit='%')} (validation accuracy, "
            f"{over}): {diff} points{p}")


def record_best(study: optuna.Study) -> dict[str, Any] | None:
    """Record relkd's best composition as the study attribute ``relkd.best`` (trial, label, mean
    and std of validation accuracy over its seeds, the seeds), where optuna-dashboard and
    ``optuna`` show study attributes, and return it (``None`` before any completed trial or on a
    multi-objective study, whose answer is its Pareto front).

    Optuna's best trial (``study.best_trial``, the dashboard's "best") is the best single
    run, a re-run with a lucky seed included; relkd ranks compositions by the mean over
    their seeds (:func:`compositions`), so the two may name different trials. ``relkd.best``
    holds relkd's answer beside Optuna's."""
    if len(study.directions) > 1:
        return None
    ranked = compositions(study)
    if not ranked:
        return None
    best = ranked[0].summary()
    best = {k: best[k] for k in ("trial", "label", "mean", "std", "seeds")}
    if study.user_attrs.get(BEST_ATTR) != best:
        study.set_user_attr(BEST_ATTR, best)
    return best
