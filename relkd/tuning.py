"""The student's learning rate tuned before anything is compared, and the headroom it shows.

A setting with a ``tune`` section (:mod:`relkd.setting_tune`) trains CE alone (``none``) and
KD (``kd``) at every rate of a grid, with several seeds, at its own epoch budget; the rate
with the best validation accuracy averaged over both is the recipe every later run trains
at. The same runs measure the **headroom**: what distillation can gain on this pair, tuned
KD against tuned CE at that rate, and the tuned student against its teacher.

>>> setting, tuning = resolve_recipe(setting)      # the setting at the tuned rate; tuning: a Tuning
>>> tuning.lr, tuning.headroom()["outcome"]         # (0.4, 'room') or (0.4, 'little room')

The result is cached by a hash of everything that determines it (the setting without its
rate, the teacher, the grid and the seeds), so a study, ``relkd train`` and ``relkd compare``
on the same setting tune once. A setting without a ``tune`` section trains at its rate as
written; when a tuning of the same setting is in the cache and its CE student at that rate
is more than a point below the tuned one, :func:`resolve_recipe` warns and names the field.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .cache import cached, peek
from .engine import TeacherResult, get_teacher, run_trial, teacher_key
from .pretrain import prepare_inits
from .setting import Setting, comparable_setting, setting_record
from .setting_tune import TUNED_CONFIGS, default_tune
from .stats import welch_difference

__all__ = ["Tuning", "tuning_key", "tune_recipe", "cached_tuning", "resolve_recipe", "tuned", "headroom_line",
           "TUNING_FORMAT", "WARN_POINTS", "ROOM_SDS"]

log = logging.getLogger(__name__)

#: Raised when what a tuning records changes, so older cache entries are not read.
TUNING_FORMAT = 1
#: A fixed rate whose CE student is this far (accuracy, 0.01 = one point) below the tuned one is warned about.
WARN_POINTS = 0.01
#: Tuned KD must beat tuned CE by more than this many seed standard deviations for the pair to have room.
ROOM_SDS = 2.0


def _rate(lr: float) -> str:
    """A rate as a stable key (JSON keys are strings)."""
    return repr(float(lr))


@dataclass
class Tuning:
    """A tuned learning rate and the runs that chose it.

    ``curves[config][rate]`` holds the validation accuracy of each seed (in ``seeds``'
    order) of ``config`` (``none`` or ``kd``) trained at ``rate`` (a :func:`_rate` key);
    ``baseline`` is ``budget.lr`` as written, ``lr`` the chosen rate."""

    key: str
    baseline: float
    lr: float
    seeds: list[int]
    curves: dict[str, dict[str, list[float]]]
    teacher_val: float | None = None
    seconds: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> list[float]:
        return sorted(float(r) for r in self.curves[TUNED_CONFIGS[0]])

    def values(self, config: str, lr: float) -> list[float]:
        return list(self.curves[config][_rate(lr)])

    def mean(self, config: str, lr: float) -> float:
        return statistics.fmean(self.values(config, lr))

    def std(self, config: str, lr: float) -> float:
        return statistics.stdev(self.values(config, lr))

    def score(self, lr: float) -> float:
        """What the choice maximises: the mean over the tuned configs of their mean over seeds."""
        return statistics.fmean(self.mean(c, lr) for c in TUNED_CONFIGS)

    def best_lr(self, config: str) -> float:
        """The rate at which ``config`` alone does best (for the curve; the recipe is :attr:`lr`)."""
        return max(self.grid, key=lambda lr: (self.mean(config, lr), -lr))

    def gain_over_baseline(self, config: str = "none") -> float:
        """Accuracy of ``config`` at the tuned rate minus at ``budget.lr`` as written."""
        return self.mean(config, self.lr) - self.mean(config, self.baseline)

    def headroom(self) -> dict[str, Any]:
        """What distillation can gain on this pair, measured at the tuned rate: tuned KD against
        tuned CE over the tuning seeds (difference, Welch standard error and p-value, and the
        difference in pooled seed standard deviations), the tuned CE student against its
        teacher's validation accuracy. ``outcome`` is ``room`` when KD leads by more than
        :data:`ROOM_SDS` pooled standard deviations, else ``little room``; ``why`` says which."""
        ce, kd = self.values("none", self.lr), self.values("kd", self.lr)
        difference, se, p = welch_difference(kd, ce)
        pooled = math.sqrt((statistics.variance(ce) + statistics.variance(kd)) / 2)
        in_sds = difference / pooled if pooled > 0 else (math.inf if difference > 0 else 0.0)
        gap = None if self.teacher_val is None else self.teacher_val - statistics.fmean(ce)
        room = in_sds > ROOM_SDS
        if room:
            why = f"tuned KD beats tuned CE by {in_sds:.1f} seed standard deviations"
        elif gap is not None and gap < 0:
            why = f"the tuned CE student beats its teacher by {-100 * gap:.2f} points: the teacher is too weak"
        elif gap is not None and gap < WARN_POINTS:
            why = (f"the tuned CE student is within {100 * gap:.2f} points of its teacher: the teacher is too weak "
                   f"or the student too close to it")
        elif gap is not None:
            why = (f"the teacher leads the tuned CE student by {100 * gap:.2f} points, but KD at this budget does "
                   f"not transfer it beyond seed noise ({in_sds:.1f} seed standard deviations)")
        else:
            why = f"tuned KD leads tuned CE by {in_sds:.1f} seed standard deviations only"
        return {"outcome": "room" if room else "little room", "why": why, "lr": self.lr, "seeds": len(ce),
                "ce_mean": statistics.fmean(ce), "ce_std": statistics.stdev(ce),
                "kd_mean": statistics.fmean(kd), "kd_std": statistics.stdev(kd),
                "difference": difference, "standard_error": se, "p": p, "in_sds": in_sds,
                "teacher_val": self.teacher_val, "teacher_gap": gap}

    def record(self) -> dict[str, Any]:
        """Plain data (what a study stores as its ``relkd.recipe`` attribute and the cache holds)."""
        return {"format": TUNING_FORMAT, "key": self.key, "field": "budget.lr", "baseline": self.baseline,
                "lr": self.lr, "seeds": list(self.seeds), "curves": self.curves, "teacher_val": self.teacher_val,
                "seconds": self.seconds, "spec": self.spec}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Tuning:
        return cls(record["key"], float(record["baseline"]), float(record["lr"]), [int(s) for s in record["seeds"]],
                   {c: {k: [float(v) for v in vs] for k, vs in curve.items()} for c, curve in record["curves"].items()},
                   record.get("teacher_val"), float(record.get("seconds", 0.0)), dict(record.get("spec") or {}))


def tuning_key(setting: Setting) -> str:
    """A hash of what determines the tuning of ``setting`` (which has a ``tune`` section): the
    setting without its rate (data, models, the rest of the budget, seed), the init files'
    content, the teacher, the rate as written and the tuning's own fields."""
    if setting.tune is None:
        raise ValueError("tune: the setting has no tune section; add tune: {} to tune budget.lr")
    record = comparable_setting(setting_record(setting))
    record["budget"] = {k: v for k, v in record["budget"].items() if k != "lr"}
    record.pop("tune", None)
    ident = {"format": TUNING_FORMAT, "setting": record, "inits": prepare_inits(setting),
             "teacher": teacher_key(setting), "tune": setting.tune.to_dict(), "baseline": setting.budget.lr}
    if setting.data.labelled is not None:  # since CE alone trains on the labelled samples only
        ident["none"] = "labelled samples only"
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _check(value: Any, meta: dict[str, Any]) -> None:
    if not isinstance(value, dict) or value.get("format") != TUNING_FORMAT or not value.get("curves"):
        raise ValueError("it is not a tuning of this version")


def _grid(setting: Setting) -> list[float]:
    """The grid with ``budget.lr`` in it (the rate as written is always measured)."""
    return sorted({*setting.tune.lr, float(setting.budget.lr)})


def tune_recipe(setting: Setting, *, teacher: TeacherResult | None = None, progress: bool = False) -> Tuning:
    """Tune ``setting``'s learning rate (its ``tune`` section; the setting's inits and student
    resolved, as for :func:`relkd.engine.run_trial`), or read the tuning from the cache."""
    spec = setting.tune
    key = tuning_key(setting)

    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        start = time.perf_counter()
        nonlocal teacher
        teacher = teacher or get_teacher(setting, progress=progress)
        seeds = [setting.seed + i for i in range(spec.seeds)]
        curves: dict[str, dict[str, list[float]]] = {c: {} for c in TUNED_CONFIGS}
        configs = {c: setting.preset(c) for c in TUNED_CONFIGS}

        def measure(lr: float) -> None:
            at = setting.with_budget(lr=lr)
            for c in TUNED_CONFIGS:
                curves[c][_rate(lr)] = [float(run_trial(at, configs[c], seed=s, teacher=teacher,
                                                        every_epoch=False).val_accuracy) for s in seeds]
            log.info("tuning %s: lr %g: none %.4f, kd %.4f", setting.name, lr,
                     statistics.fmean(curves["none"][_rate(lr)]), statistics.fmean(curves["kd"][_rate(lr)]))

        grid = _grid(setting)
        for lr in grid:
            measure(lr)
        tuning = Tuning(key, float(setting.budget.lr), grid[0], seeds, curves, teacher.val_accuracy,
                        spec=spec.to_dict())
        for _ in range(spec.extend):  # past an edge the best rate lands on, by factors of two
            best = max(tuning.grid, key=lambda lr: (tuning.score(lr), -lr))
            if best == tuning.grid[-1]:
                measure(best * 2)
            elif best == tuning.grid[0]:
                measure(best / 2)
            else:
                break
        tuning.lr = max(tuning.grid, key=lambda lr: (tuning.score(lr), -lr))
        tuning.seconds = time.perf_counter() - start
        return tuning.record(), {"lr": tuning.lr, "seconds": tuning.seconds}

    entry = cached("tuning", key, build, name=setting.name, filename="tuning.pt", load=_check, what="recipe tuning")
    tuning = Tuning.from_record(entry.value)
    if entry.built:
        log.info("tuned %s: budget.lr %g -> %g in %.0f s", setting.name, tuning.baseline, tuning.lr, tuning.seconds)
    return tuning


def cached_tuning(setting: Setting) -> Tuning | None:
    """The tuning of ``setting`` (which has a ``tune`` section) if the cache holds one; runs nothing."""
    found = peek("tuning", tuning_key(setting), name=setting.name, filename="tuning.pt", load=_check,
                 what="recipe tuning")
    return None if found is None else Tuning.from_record(found)


def resolve_recipe(setting: Setting, *, teacher: TeacherResult | None = None, progress: bool = False,
                   recorded: dict[str, Any] | None = None) -> tuple[Setting, Tuning | None]:
    """``setting`` at the rate its runs train at, with the tuning that chose it (``None``
    without a ``tune`` section). ``recorded``: a tuning a study already holds (its
    ``relkd.recipe`` attribute), used as it is so that every worker trains at the same rate.
    Without a ``tune`` section, a cached tuning of the same setting whose CE student at
    ``budget.lr`` is more than :data:`WARN_POINTS` below the tuned rate's makes it warn."""
    if setting.tune is None:
        _warn_if_untuned(setting)
        return setting, None
    tuning = Tuning.from_record(recorded) if recorded else tune_recipe(setting, teacher=teacher, progress=progress)
    return tuned(setting, tuning), tuning


def tuned(setting: Setting, tuning: Tuning) -> Setting:
    """``setting`` at the tuned rate, its ``tune`` section spent (so it is not tuned again)."""
    return setting.replace(tune=None).with_budget(lr=tuning.lr)


def _warn_if_untuned(setting: Setting) -> None:
    """Warn when the cache holds the default tuning of this setting and its CE student at the
    fixed ``budget.lr`` is more than :data:`WARN_POINTS` below the tuned rate's."""
    found = cached_tuning(setting.replace(tune=default_tune(setting.budget.lr)))
    if found is None:
        return
    lost = found.mean("none", found.lr) - found.mean("none", setting.budget.lr)
    if lost > WARN_POINTS:
        log.warning("budget.lr: %g leaves CE alone %.2f points below the tuned rate %g (%.2f%% vs %.2f%%, "
                    "validation); add a tune section (tune: {}) so every run trains at the tuned rate",
                    setting.budget.lr, 100 * lost, found.lr, 100 * found.mean("none", setting.budget.lr),
                    100 * found.mean("none", found.lr))


def headroom_line(tuning: Tuning) -> str:
    """The tuned recipe and the headroom in two plain sentences."""
    h = tuning.headroom()
    p = "" if h["p"] is None else f", Welch p = {h['p']:.3f}" if h["p"] >= 0.001 else ", Welch p < 0.001"
    teacher = "" if h["teacher_val"] is None else f"; teacher {100 * h['teacher_val']:.2f}%"
    head = ("room for distillation" if h["outcome"] == "room"
            else "this pair leaves distillation little room")
    return (f"tuned recipe: budget.lr {tuning.lr:g} (was {tuning.baseline:g}; CE alone "
            f"{100 * tuning.gain_over_baseline():+.2f} points). Headroom at it, {h['seeds']} seeds, validation: "
            f"tuned KD {100 * h['kd_mean']:.2f}% ± {100 * h['kd_std']:.2f} vs tuned CE {100 * h['ce_mean']:.2f}% "
            f"± {100 * h['ce_std']:.2f}: {100 * h['difference']:+.2f} points{p}{teacher}. {head}: {h['why']}.")
