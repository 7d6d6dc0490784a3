"""Accuracy against student size: the Pareto front of a study, and the most accurate student
within a size.

A multi-objective study (``directions=["maximize", "minimize"]``) has no single best trial:
each completed trial's ``values`` are ``[validation accuracy, size]``, the size being what the
study user attribute ``relkd.objectives`` names (``params`` or ``macs``). Its answer is the
**Pareto front**, the trials no other trial beats on both: :func:`pareto_front`. A user who
knows the budget picks from it with :func:`best_within` (``relkd study export --max-params``).

Trials also record their student's size as user attributes (``student_params``,
``student_macs``) and the student section they trained (``student``), single-objective
trials too since relkd recorded them; so a single-objective study that trained students of
several sizes has a front as well, over ``student_params``. Older studies record no sizes.

::

    from relkd.results.pareto import best_within, pareto_front
    for row in pareto_front(study):
        print(row["trial"], row["val_accuracy"], row["params"], row["ratio"])
    trial = best_within(study, max_params=50_000)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..terms import term_summary
from .record import OBJECTIVES_ATTR, TrialRecord
from .ranking import compositions

__all__ = ["DEFAULT_OBJECTIVES", "SIZES", "FRONT_COLUMNS", "Point", "is_multi_objective", "objective_names",
           "size_measure", "single_objective", "objectives_phrase", "accuracy", "trial_size", "ratio_of",
           "composition_summary", "sized_points", "non_dominated", "pareto_front", "best_within", "front_cells",
           "format_front"]

#: What a multi-objective study's values are when it does not say (``relkd.objectives``).
DEFAULT_OBJECTIVES = ("val_accuracy", "params")
#: The size measures, as the objectives name them, with their words; a trial records each
#: as the user attribute ``student_<measure>``.
SIZES = {"params": "parameters", "macs": "MACs"}
#: The columns of the front as a table (:func:`front_cells`).
FRONT_COLUMNS = ("trial", "val acc %", "params", "MACs", "ratio", "composition")
_COUNTS = {1: "one", 2: "two", 3: "three"}


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study optimises more than one value (``study.directions``); on such a study
    ``best_trial``, ``best_value`` and ``trial.value`` raise."""
    return len(study.directions) > 1


def objective_names(study: optuna.Study) -> list[str]:
    """What each of the trials' values is: the study's ``relkd.objectives``, by default
    ``["val_accuracy", "params"]`` on a multi-objective study; ``["val_accuracy"]`` on a
    single-objective one."""
    if not is_multi_objective(study):
        return ["val_accuracy"]
    names = study.user_attrs.get(OBJECTIVES_ATTR)
    if isinstance(names, (list, tuple)) and len(names) == len(study.directions) and all(
            isinstance(n, str) for n in names):
        return list(names)
    return list(DEFAULT_OBJECTIVES)


def size_measure(study: optuna.Study) -> str:
    """The size the study trades accuracy against: its second objective on a multi-objective
    study (``params`` or ``macs``), else ``params``."""
    names = objective_names(study)
    return names[1] if len(names) > 1 and names[1] in SIZES else "params"


def single_objective(study: optuna.Study, what: str, advice: str) -> None:
    """Raise ``ValueError`` when ``what`` (a command, a section) cannot serve the study because
    it has several objectives: the message names them and gives ``advice``."""
    if is_multi_objective(study):
        raise ValueError(f"study {study.study_name!r} has {objectives_phrase(study)}; {what} needs one: {advice}")


def objectives_phrase(study: optuna.Study) -> str:
    """``two objectives (val_accuracy, params)``: what a message says of a study's objectives."""
    names = objective_names(study)
    count = _COUNTS.get(len(names), str(len(names)))
    return f"{count} objective{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def accuracy(trial: FrozenTrial) -> float:
    """A completed trial's validation accuracy: its (first) value, whatever the study's kind."""
    return float(trial.values[0])


def trial_size(trial: FrozenTrial, measure: str, objectives: list[str] | None = None) -> int | None:
    """The trial's student size in ``measure`` (``params``, ``macs``): its user attribute
    ``student_<measure>``, else its value of that objective (``objectives``: the study's
    :func:`objective_names`), else ``None`` (a trial made before relkd recorded sizes)."""
    size = getattr(TrialRecord.of(trial), f"student_{measure}", None)
    if isinstance(size, (int, float)) and not isinstance(size, bool) and math.isfinite(size):
        return int(size)
    if objectives and measure in objectives and trial.values is not None:
        value = trial.values[objectives.index(measure)]
        if value is not None and math.isfinite(value):
            return int(value)
    return None


def ratio_of(trial: FrozenTrial) -> float:
    """The ratio the trial's student was adapted (pruned) to: ``student.adapt.ratio``, 1.0 when
    the student was not adapted (or the trial does not record its student)."""
    student = TrialRecord.of(trial).student
    adapt = student.get("adapt") if isinstance(student, dict) else None
    ratio = adapt.get("ratio") if isinstance(adapt, dict) else None
    return float(ratio) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) else 1.0


def composition_summary(config: Any) -> str:
    """A composition in a few words: ``kd + euclidean/mean/smooth_l1 + fitnet``, ``ce only``."""
    if not isinstance(config, dict):
        return "?"
    parts = ["kd"] if config.get("kd") else []
    parts += [term_summary(term) for term in config.get("terms") or []]
    return " + ".join(parts) or "ce only"


@dataclass(frozen=True)
class Point:
    """A completed trial placed by its validation accuracy and its student's size."""

    trial: FrozenTrial
    accuracy: float
    size: int

    @property
    def anchor(self) -> str | None:
        return TrialRecord.of(self.trial).anchor


def sized_points(study: optuna.Study, measure: str | None = None) -> list[Point]:
    """Every completed composition (re-runs with another seed left out) whose size is known, in
    ``measure`` (default :func:`size_measure`). On a multi-objective study the size of its
    size objective is the trial's value of it, as the sampler saw it."""
    measure = measure or size_measure(study)
    objectives = objective_names(study)
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(t)
        if record.rerun is not None or record.config is None or not t.values:
            continue
        size = trial_size(t, measure, objectives)
        if size is not None and math.isfinite(t.values[0]):
            points.append(Point(t, accuracy(t), size))
    return points


def non_dominated(points: Iterable[Point]) -> list[Point]:
    """The points no other point dominates, smallest size first.

    ``q`` dominates ``p`` when ``q`` is at least as accurate and at most as large, and better
    in one of the two. So of trials of equal size only the most accurate stay, a trial stays
    only if every smaller one is less accurate, and trials with the same accuracy **and** the
    same size (a tie: neither dominates the other) all stay, in trial-number order, as in
    Optuna's ``best_trials``. Sorted by size ascending (then accuracy descending, trial
    number): along the front accuracy rises with size."""
    ordered = sorted(points, key=lambda p: (p.size, -p.accuracy, p.trial.number))
    front: list[Point] = []
    best_smaller = -math.inf  # the highest accuracy of any strictly smaller student
    for _, group in groupby(ordered, key=lambda p: p.size):
        same = list(group)
        top = same[0].accuracy
        if top > best_smaller:
            front += [p for p in same if p.accuracy == top]
            best_smaller = top
    return front


def _row(point: Point, objectives: list[str]) -> dict[str, Any]:
    t = point.trial
    anchor = point.anchor
    config = TrialRecord.of(t).config
    return {"trial": t.number, "val_accuracy": point.accuracy, "params": trial_size(t, "params", objectives),
            "macs": trial_size(t, "macs", objectives), "ratio": ratio_of(t),
            "composition": f"anchor {anchor}" if anchor else f"trial {t.number}", "anchor": anchor,
            "terms": composition_summary(config), "objective_config": config}


def pareto_front(study: optuna.Study) -> list[dict[str, Any]]:
    """The non-dominated completed trials (:func:`non_dominated`: accuracy maximised, size
    minimised), smallest student first, as rows: ``trial``, ``val_accuracy``, ``params``,
    ``macs`` (``None`` where not recorded), ``ratio`` (:func:`ratio_of`), ``composition``
    (``trial 17`` or ``anchor kd``), ``anchor``, ``terms`` (:func:`composition_summary`) and
    ``objective_config``. Empty when no completed trial records its size."""
    objectives = objective_names(study)
    return [_row(p, objectives) for p in non_dominated(sized_points(study))]


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1 (a student size), got {value!r}")
    return value


def best_within(study: optuna.Study, max_params: int | None = None, max_macs: int | None = None) -> FrozenTrial:
    """The most accurate completed trial whose student has at most ``max_params`` parameters
    and at most ``max_macs`` MACs (at least one limit given), on a single- or a multi-objective
    study. Accuracy is the mean over seeds where a trial was re-run
    (:func:`relkd.results.ranking.compositions`); equal accuracies go to the smaller student, then
    to the lower trial number. Raises ``ValueError`` naming the limit when no trial fits (with
    the smallest student trained) or when the trials record no sizes."""
    limits = {m: v for m, v in (("params", _limit("max_params", max_params)),
                                ("macs", _limit("max_macs", max_macs))) if v is not None}
    if not limits:
        raise ValueError("max_params: give max_params or max_macs, the largest student to consider")
    objectives = objective_names(study)
    ranked = compositions(study)
    if not ranked:
        raise ValueError(f"study {study.study_name!r} has no completed trial to export yet")
    sizes = {c.trial.number: {m: trial_size(c.trial, m, objectives) for m in limits} for c in ranked}
    for measure, limit in limits.items():
        known = [c.trial for c in ranked if sizes[c.trial.number][measure] is not None]
        if not known:
            raise ValueError(f"max_{measure}: the trials of study {study.study_name!r} record no student "
                             f"{SIZES[measure]} (student_{measure}): they were made before relkd recorded student "
                             f"sizes; choose a trial by number with the trial argument instead")
        if not any(sizes[t.number][measure] <= limit for t in known):
            smallest = min(known, key=lambda t: (sizes[t.number][measure], t.number))
            least = sizes[smallest.number][measure]
            raise ValueError(f"max_{measure}: no completed trial has at most {limit:,} {SIZES[measure]}; the "
                             f"smallest student trained has {least:,} {SIZES[measure]} (trial {smallest.number}); "
                             f"give at least {least:,}")
    fits = [c for c in ranked
            if all(sizes[c.trial.number][m] is not None and sizes[c.trial.number][m] <= v for m, v in limits.items())]
    if not fits:  # each limit alone is met, both together are not
        (first, a), (second, b) = limits.items()
        within = [s[second] for s in sizes.values() if s[first] is not None and s[first] <= a and s[second] is not None]
        least = f"; those within {a:,} {SIZES[first]} have at least {min(within):,} {SIZES[second]}" if within else ""
        raise ValueError(f"max_{first}: no completed trial has both at most {a:,} {SIZES[first]} and at most {b:,} "
                         f"{SIZES[second]}{least}; raise one of the two limits")
    measure = next(iter(limits))
    return min(fits, key=lambda c: (-c.mean, sizes[c.trial.number][measure], c.trial.number)).trial


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def front_cells(row: dict[str, Any]) -> list[str]:
    """A row of :func:`pareto_front` as the cells of :data:`FRONT_COLUMNS`: the composition is
    the anchor's name for an anchor, the composition in a few words for a searched trial."""
    composition = row["composition"] if row.get("anchor") else row["terms"]
    return [str(row["trial"]), f"{100 * row['val_accuracy']:.2f}", _count(row["params"]), _count(row["macs"]),
            f"{row['ratio']:.2f}", composition]


def format_front(rows: list[dict[str, Any]]) -> str:
    """The front as a plain-text table (:data:`FRONT_COLUMNS`), one line per trial."""
    if not rows:
        return "  no completed trial records its student's size yet\n"
    table = [list(FRONT_COLUMNS)] + [front_cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(FRONT_COLUMNS) - 1)]
    lines = []
    for cells in table:
        head = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        lines.append("  " + "  ".join(head + [cells[-1]]).rstrip())
    return "\n".join(lines) + "\n"
