"""What a run of a student returns (:class:`RunResult`): :func:`relkd.engine.run_trial` returns
one, :func:`relkd.engine.run_population` one per member. Which of its fields a study keeps as
trial user attributes is said once, here (:data:`TRIAL_FIELDS`, :meth:`RunResult.trial_attrs`);
the study's writers (a search trial, a run queue, a population) store what that returns."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

__all__ = ["RunResult", "TRIAL_FIELDS"]

#: The fields a study stores on the run's trial as user attributes (under the same names),
#: when they are set. The accuracy is the trial's value; the seed, the objective config and
#: the student section are written by the trial before it trains.
TRIAL_FIELDS = ("part_means", "wall_seconds", "train_seconds", "val_history", "epochs", "samples_per_second",
                "test_accuracy", "init_sha256", "population", "student_params", "student_macs")


@dataclass
class RunResult:
    """One trained student's metrics. Optional fields are ``None`` where a run does not
    measure them (a result read from an older file, :meth:`from_dict`, has what the file has):
    ``test_accuracy`` without ``eval_test``; ``init_sha256`` unless the student
    starts from a checkpoint; the student's size (``student_params``, ``student_macs``: Conv2d
    and Linear multiply-accumulates for one input) on population members; ``member``,
    ``objective_config``, ``stopped``, ``error`` and ``population`` on single runs.
    ``model`` and ``objective_state`` (the trained parts of feature terms, on the CPU) are
    returned only when asked for, and are never part of :meth:`to_dict`."""

    seed: int
    val_accuracy: float | None  # after the last epoch; None for a member that left before one
    val_history: list[float] | None = None  # after each epoch (every run has it; None: not known)
    epochs: int | None = None
    stopped_early: bool = False
    part_means: dict[str, float] | None = None  # each loss part's mean over the run
    train_seconds: float | None = None
    samples_per_second: float | None = None
    test_accuracy: float | None = None
    init_sha256: str | None = None
    student_params: int | None = None
    student_macs: int | None = None
    wall_seconds: float | None = None
    # population members (relkd.engine.run_population)
    member: int | None = None
    objective_config: dict[str, Any] | None = None
    stopped: str | None = None  # None, "pruned" or "non-finite: PART"
    error: str | None = None  # the full message of a non-finite loss
    population: int | None = None  # how many students trained together
    curves: list[dict[str, Any]] | None = None  # one point per epoch (relkd.engine.curves)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    objective_state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready mapping (what ``metrics.json`` holds per seed): every
        field that is set, in field order; not the model or the objective's state."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("model", "objective_state") and getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, metrics: Mapping[str, Any]) -> "RunResult":
        """A result from a mapping (e.g. a line of an older confirm's ``runs.jsonl``); keys
        that are not fields are ignored, missing optional fields stay ``None``."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"seed": metrics.get("seed", 0), "val_accuracy": metrics.get("val_accuracy"),
                      **{k: v for k, v in metrics.items() if k in names}})

    def trial_attrs(self) -> dict[str, Any]:
        """The trial user attributes of this run: the fields of :data:`TRIAL_FIELDS` that are set."""
        return {name: getattr(self, name) for name in TRIAL_FIELDS if getattr(self, name) is not None}

    def size(self, measure: str) -> int:
        """The student's size by ``measure`` (``params`` or ``macs``), as a multi-objective
        study minimises it."""
        value = getattr(self, f"student_{measure}", None)
        if value is None:
            raise ValueError(f"measure: this run has no student size {measure!r}; it has params and macs")
        return value

    # Deprecated: runs returned dicts before this release. Indexing and ``in`` still work, with
    # a warning, for one release; read the fields as attributes.
    def __getitem__(self, key: str) -> Any:
        _deprecated(f"read result.{key}, not result[{key!r}]")
        if key not in self.to_dict() and key not in ("model", "objective_state"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        _deprecated(f"read result.{key}, not result.get({key!r})")
        value = getattr(self, key, None) if isinstance(key, str) else None
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        _deprecated(f"test result.{key} is not None, not {key!r} in result")
        return isinstance(key, str) and key in {f.name for f in dataclasses.fields(self)} and \
            getattr(self, key) is not None


def _deprecated(instead: str) -> None:
    warnings.warn(f"run results are RunResult objects now: {instead}; indexing goes away in the next release",
                  DeprecationWarning, stacklevel=3)
