"""The fidelity ladder: compositions are screened at short budgets (rungs) and only the best
fraction of each rung goes on training to the next, up to the setting's budget (the top rung).

It is asynchronous successive halving (ASHA, Li et al. 2020) as an Optuna pruner, so the
study's storage, workers, heartbeats, resume and ``n_trials`` accounting work as for any
pruner: a trial trains with the top rung's learning-rate schedule and, at each rung's epoch,
goes on only when its validation accuracy is among the best ``1/reduction`` of the values
that comparable trials recorded at that rung (itself included). Promotion is continuing, so
no composition is trained twice and a killed worker's trial is retried by Optuna's heartbeat
like any other.

Why not Optuna's ``SuccessiveHalvingPruner``: it compares a trial with every trial of the
study, and the study's anchors mix methods with and without KD; at epoch 1 KD runs lag
(``kd`` 54.5% against ``none`` 62.6% in the study driver's measurements) but finish ahead, so
the anchors' early values pruned every searched KD trial. The ladder compares a searched trial
with the other searched trials only (``compare: searched``, the default); anchors always
train to the top rung, they are the baseline. Its rungs are listed explicitly (chosen by
``benchmarks/fidelity.py``), not tied to powers of the reduction factor.

In a study file::

    optuna:
      ladder: {rungs: [1], reduction: 3, min_trials: 3, compare: searched}

``rungs``: the screening epochs, each below the budget (the top rung is the budget);
``reduction``: the factor ``eta``, a trial goes on when in the best ``ceil(n / eta)`` of the
``n`` values at its rung; ``min_trials``: until a rung holds that many values every trial goes
on (the rung first needs references); ``compare``: ``searched`` or ``all``. The study
attribute ``relkd.ladder`` keeps the ladder (rungs with the top one), so readers know the
rungs each trial could reach.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..fields import FieldChecker, join_path
from ..results.record import is_searched

__all__ = ["Ladder", "LadderPruner", "validate_ladder", "LADDER_FIELDS", "COMPARE", "ladder_of"]

LADDER_FIELDS = ("rungs", "reduction", "min_trials", "compare")
COMPARE = ("searched", "all")


@dataclass(frozen=True)
class Ladder:
    """A validated ladder: screening ``rungs`` (epochs, ascending, below ``top``) and the top rung."""

    rungs: tuple[int, ...]
    top: int
    reduction: float = 3.0
    min_trials: int = 3
    compare: str = "searched"

    @property
    def all_rungs(self) -> tuple[int, ...]:
        """The screening rungs and the top rung."""
        return (*self.rungs, self.top)

    def describe(self) -> dict[str, Any]:
        """The ladder as its study-file section (canonical form)."""
        return {"rungs": list(self.rungs), "reduction": self.reduction, "min_trials": self.min_trials,
                "compare": self.compare}

    def record(self) -> dict[str, Any]:
        """What the study attribute ``relkd.ladder`` holds."""
        return {**self.describe(), "rungs": list(self.all_rungs)}

    def pruner(self) -> LadderPruner:
        return LadderPruner(self.rungs, self.reduction, self.min_trials, self.compare)


def validate_ladder(c: FieldChecker, value: Any, path: str, budget_epochs: int | None) -> Ladder | None:
    """Check an ``optuna.ladder`` section; errors go to ``c`` with their field paths."""
    if not c.mapping(value, path, LADDER_FIELDS):
        return None
    rungs_value = value.get("rungs")
    rungs: list[int] = []
    if not isinstance(rungs_value, (list, tuple)) or not rungs_value:
        c.error(join_path(path, "rungs"), f"expected a list of screening epochs such as [1, 3], each below the "
                                          f"budget's epochs, got {rungs_value!r}")
    else:
        for i, r in enumerate(rungs_value):
            got = c.integer(r, f"{join_path(path, 'rungs')}[{i}]", minimum=1)
            if got is not None:
                rungs.append(got)
        if len(rungs) == len(rungs_value):
            if rungs != sorted(set(rungs)):
                c.error(join_path(path, "rungs"), f"expected ascending epochs, each once, got {list(rungs_value)}")
            elif budget_epochs is not None and rungs[-1] >= budget_epochs:
                c.error(join_path(path, "rungs"), f"each screening rung must be below the budget's {budget_epochs} "
                                                  f"epochs (the top rung), got {list(rungs_value)}")
    reduction = c.number(value.get("reduction", 3.0), join_path(path, "reduction"), minimum=1.0, strict=True)
    min_trials = c.integer(value.get("min_trials", 3), join_path(path, "min_trials"), minimum=1)
    compare = c.choice(value.get("compare", "searched"), join_path(path, "compare"), COMPARE)
    if (None in (reduction, min_trials, compare) or budget_epochs is None or not rungs
            or len(rungs) != len(rungs_value) or rungs != sorted(set(rungs)) or rungs[-1] >= budget_epochs):
        return None
    return Ladder(tuple(rungs), budget_epochs, float(reduction), int(min_trials), str(compare))


class LadderPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving over explicit rungs, comparing like with like (see
    the module's docstring). Steps are epochs trained; a trial whose report is not at a
    rung is never pruned there."""

    def __init__(self, rungs: tuple[int, ...] | list[int], reduction: float = 3.0, min_trials: int = 3,
                 compare: str = "searched"):
        if not rungs or list(rungs) != sorted(set(rungs)) or rungs[0] < 1:
            raise ValueError(f"rungs: expected ascending epochs >= 1, got {list(rungs)}")
        if reduction <= 1:
            raise ValueError(f"reduction: expected a number > 1, got {reduction}")
        if compare not in COMPARE:
            raise ValueError(f"compare: expected one of {', '.join(COMPARE)}, got {compare!r}")
        self.rungs = tuple(rungs)
        self.reduction = float(reduction)
        self.min_trials = int(min_trials)
        self.compare = compare

    def _comparable(self, trial: FrozenTrial) -> bool:
        if self.compare == "all":
            return True
        return is_searched(trial)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs or not self._comparable(trial):
            return False
        value = trial.intermediate_values[step]
        if isinstance(value, float) and math.isnan(value):
            return True
        values = [t.intermediate_values[step]
                  for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.RUNNING))
                  if t.number != trial.number and step in t.intermediate_values and self._comparable(t)
                  and not math.isnan(t.intermediate_values[step])]
        values.append(value)
        if len(values) < self.min_trials:
            return False
        promoted = math.ceil(len(values) / self.reduction)
        better = sum(1 for v in values if v > value)  # ties go on
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        if not maximize:
            better = sum(1 for v in values if v < value)
        return better >= promoted


def ladder_of(record: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """The rungs (top included) a study's ``relkd.ladder`` attribute holds, or ``None``."""
    if not isinstance(record, Mapping) or not isinstance(record.get("rungs"), list):
        return None
    return tuple(int(r) for r in record["rungs"])
