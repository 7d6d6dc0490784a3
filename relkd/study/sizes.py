"""Accuracy against size: a multi-objective study searches the student's size (the ratio it
is adapted to, :mod:`relkd.adapt`) together with the loss composition, maximising validation
accuracy and minimising parameters (or MACs)::

    search:
      ratio: [0.25, 0.5, 0.75, 1.0]      # student.adapt.ratio per trial; 1.0: not pruned
      # ratio: {low: 0.2, high: 1.0}     # or a continuous range (every trial adapts anew)
      ...                                # the composition, as in any study
    optuna:
      objectives: [val_accuracy, params] # or [val_accuracy, macs]
      sampler: nsga2                     # or tpe (multi-objective TPE) or random

The student's ``adapt`` section (or its defaults) says how it is pruned; each trial's ratio
replaces its ``ratio``. Optuna cannot prune a multi-objective trial (``trial.report`` is for
one objective), so such a study has no pruner, ladder, refinement, re-runs or population:
every trial trains its full budget. Anchors (the known methods) train at every listed ratio
(once, at a ratio the sampler draws, for a continuous range). The trials' values are
``[val_accuracy, size]``; ``relkd study status``, the report and ``relkd study export
--max-params N`` read the Pareto front (:mod:`relkd.results.pareto`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import optuna

from ..fields import FieldChecker
from ..setting import Setting
from ..setting_models import PRUNABLE_FAMILIES

__all__ = ["SizeSearch", "validate_sizes", "ACCURACY", "SIZE_MEASURES", "MO_SAMPLERS"]

ACCURACY = "val_accuracy"
SIZE_MEASURES = ("params", "macs")
MO_SAMPLERS = ("tpe", "nsga2", "random")
_EXAMPLE = "e.g. search.ratio: [0.25, 0.5, 0.75, 1.0] with optuna.objectives: [val_accuracy, params]"


@dataclass(frozen=True)
class SizeSearch:
    """The size half of a multi-objective study: what is minimised and the ratios drawn."""

    measure: str  # "params" | "macs"
    ratios: tuple[float, ...] | None = None  # categorical choices
    low: float | None = None  # or a continuous range
    high: float | None = None

    @property
    def objectives(self) -> list[str]:
        return [ACCURACY, self.measure]

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"]

    def suggest(self, trial: optuna.Trial) -> float:
        """The trial's ratio (a parameter named ``ratio``, so importance and plots see it)."""
        if self.ratios is not None:
            return float(trial.suggest_categorical("ratio", list(self.ratios)))
        return trial.suggest_float("ratio", self.low, self.high)

    def anchor_params(self) -> list[dict[str, float]]:
        """The parameters each anchor is enqueued with: one per listed ratio, or one with
        the ratio left to the sampler."""
        return [{"ratio": r} for r in self.ratios] if self.ratios is not None else [{}]

    def describe(self) -> Any:
        return list(self.ratios) if self.ratios is not None else {"low": self.low, "high": self.high}


def _ratio(c: FieldChecker, value: Any, path: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        c.error(path, f"expected a size ratio in (0, 1] (1: the student as it is), got {value!r}")
        return None
    return float(value)


def _check_ratios(c: FieldChecker, value: Any) -> SizeSearch | None:
    path = "search.ratio"
    if isinstance(value, Mapping):
        if not c.mapping(value, path, ("low", "high")):
            return None
        low, high = _ratio(c, value.get("low"), f"{path}.low"), _ratio(c, value.get("high"), f"{path}.high")
        if low is None or high is None:
            return None
        if low >= high:
            c.error(path, f"expected low < high, got low {low} and high {high}")
            return None
        return SizeSearch("params", low=low, high=high)
    if not isinstance(value, list) or not value:
        c.error(path, f"expected a list of ratios in (0, 1] or {{low, high}}; {_EXAMPLE}; got {value!r}")
        return None
    ratios = [_ratio(c, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if None in ratios:
        return None
    if len(set(ratios)) != len(ratios):
        c.error(path, f"a ratio is given twice: {value!r}")
        return None
    return SizeSearch("params", ratios=tuple(sorted(ratios)))


def validate_sizes(c: FieldChecker, ratio: Any, optuna_section: Mapping[str, Any],
                   setting: Setting | None) -> SizeSearch | None:
    """``search.ratio`` and ``optuna.objectives`` together (both or neither), a student that
    can be adapted, and what a multi-objective study cannot have; problems go to ``c`` with
    their field."""
    objectives = optuna_section.get("objectives")
    if objectives is None or objectives == [ACCURACY]:
        if ratio is not None:
            c.error("search.ratio", f"searching the student's size needs two objectives: add optuna.objectives: "
                                    f"[{ACCURACY}, params] (or macs)")
        return None
    allowed = " or ".join(f"[{ACCURACY}, {m}]" for m in SIZE_MEASURES)
    if not (isinstance(objectives, list) and len(objectives) == 2 and objectives[0] == ACCURACY
            and objectives[1] in SIZE_MEASURES):
        c.error("optuna.objectives", f"expected [{ACCURACY}] (one objective, the default) or {allowed}, "
                                     f"got {objectives!r}")
        return None
    if ratio is None:
        c.error("search.ratio", f"missing: a study with optuna.objectives {objectives} searches the student's size; "
                                f"{_EXAMPLE}")
        return None
    size = _check_ratios(c, ratio)
    if setting is not None:
        from ..models import model_entry

        family = str(model_entry(setting.student.model).property("family", default=""))
        if setting.student.init is None:
            c.error("search.ratio", "the student is adapted to each ratio from a pretrained network: give "
                                    "student.init, e.g. init: {pretrain: studies/pretrain_fmnist_source.yaml}")
        if family not in PRUNABLE_FAMILIES:
            c.error("search.ratio", f"student model {setting.student.model!r} (family {family or 'unknown'}) cannot "
                                    f"be pruned; relkd adapts the families {', '.join(PRUNABLE_FAMILIES)}")
    why = "multi-objective trials cannot be pruned (Optuna's trial.report has one objective)"
    pruner = optuna_section.get("pruner")
    if pruner is not None and pruner != "none" and not (isinstance(pruner, Mapping) and pruner.get("name") == "none"):
        c.error("optuna.pruner", f"{why}: remove it or give none")
    for key, what in (("ladder", "a fidelity ladder prunes"), ("refine", "refinement ranks by one value"),
                      ("rerun", "re-runs rank by one value")):
        if optuna_section.get(key) is not None:
            c.error(f"optuna.{key}", f"{what}; a study with two objectives cannot have it: remove optuna.{key}")
    population = optuna_section.get("population", "auto")
    if population not in ("auto", 1):
        c.error("optuna.population", "a study with two objectives trains one trial at a time: remove it or give 1")
    sampler = optuna_section.get("sampler", "tpe")
    name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
    if isinstance(name, str) and name not in MO_SAMPLERS:
        c.error("optuna.sampler", f"{name} cannot search two objectives here; expected one of {', '.join(MO_SAMPLERS)}"
                                  f" (nsga2: NSGA-II, tpe: multi-objective TPE)")
    if size is None:
        return None
    return SizeSearch(objectives[1], size.ratios, size.low, size.high)
