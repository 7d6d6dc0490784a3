"""The setting's ``tune`` section: the student's learning rate tuned before anything is compared.

A composition that beats the known methods at a learning rate that leaves the student far
from what the same epochs can reach has not shown that it transfers knowledge: a larger
gradient would have done as well. With a ``tune`` section, ``budget.lr`` is the rate as
written (the untuned baseline, which ablation resets to) and every run trains at the rate
the tuning chose (:mod:`relkd.tuning`)::

    budget: {epochs: 3, optimizer: sgd, lr: 0.05, schedule: cosine}
    tune:
      lr: [0.025, 0.05, 0.1, 0.2, 0.4]   # the grid (default: budget.lr x 1/2, 1, 2, 4, 8)
      seeds: 3                           # seeds per point, for CE alone (none) and for KD (kd)
      extend: 2                          # points added past an edge the best rate lands on

Each grid point trains the presets ``none`` (CE alone) and ``kd`` at the study's own budget
with ``seeds`` seeds; the chosen rate is the one with the best validation accuracy averaged
over both. When it lands on the grid's lowest or highest point, the grid is extended by a
factor of two in that direction, up to ``extend`` points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fields import FieldChecker, join_path

__all__ = ["TuneSpec", "check_tune", "default_tune", "TUNE_FIELDS", "TUNED_CONFIGS", "DEFAULT_FACTORS"]

TUNE_FIELDS = ("lr", "seeds", "extend")
#: What the tuning trains at every rate: CE alone and KD (the headroom compares them).
TUNED_CONFIGS = ("none", "kd")
#: The default grid: budget.lr times these.
DEFAULT_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class TuneSpec:
    """How the student's learning rate is tuned: the grid, the seeds per point, the extension."""

    lr: tuple[float, ...]
    seeds: int = 3
    extend: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {"lr": list(self.lr), "seeds": self.seeds, "extend": self.extend}


def default_tune(budget_lr: float) -> TuneSpec:
    """The tuning a bare ``tune: {}`` asks for: ``budget.lr`` times :data:`DEFAULT_FACTORS`."""
    return TuneSpec(tuple(budget_lr * f for f in DEFAULT_FACTORS))


def check_tune(c: FieldChecker, value: Any, path: str, budget_lr: float) -> TuneSpec | None:
    """Check a ``tune`` section (``{}`` takes every default); errors go to ``c`` with their paths."""
    value = {} if value is None else value
    if not c.mapping(value, path, TUNE_FIELDS):
        return None
    grid = value.get("lr")
    lr_path = join_path(path, "lr")
    if grid is None:
        rates = default_tune(budget_lr).lr
    elif not isinstance(grid, (list, tuple)) or len(grid) < 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 100 for v in grid):
        c.error(lr_path, f"expected a list of at least two learning rates in (0, 100], e.g. [0.025, 0.05, 0.1, "
                         f"0.2, 0.4], got {grid!r}")
        rates = ()
    elif len(set(grid)) != len(grid):
        c.error(lr_path, f"expected each learning rate once, got {list(grid)}")
        rates = ()
    else:
        rates = tuple(sorted(float(v) for v in grid))
    seeds = c.integer(value.get("seeds", 3), join_path(path, "seeds"), minimum=2)
    extend = c.integer(value.get("extend", 2), join_path(path, "extend"), minimum=0)
    if extend is not None and extend > 8:
        c.error(join_path(path, "extend"), f"expected at most 8 points past an edge (each doubles or halves the "
                                           f"rate), got {extend}")
    if not rates or seeds is None or extend is None or extend > 8:
        return None
    return TuneSpec(rates, int(seeds), int(extend))
