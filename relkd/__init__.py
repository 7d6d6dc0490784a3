"""relkd: search the design space of relation-based knowledge distillation.

Public API::

    import relkd
    objective = relkd.build_objective(relkd.preset("rkd+kd"))   # or a dict / a YAML path
    parts = objective(student_taps, teacher_taps, targets)       # parts["total"].backward()
    relkd.save_config(objective.to_config(), "best.yaml")
    relkd.list_affinities(), relkd.list_normalisations(), relkd.list_losses(), relkd.list_presets()
"""
from __future__ import annotations

import logging

from .fields import ConfigError

from .config import load_config, save_config, validate_config
from .features import FEATURES, FeatureTerm
from .objective import Objective, build_objective, kd_loss
from .relation import (
    AFFINITIES,
    LOSSES,
    NORMALISATIONS,
    VIEWS,
    RelationTerm,
    combination_problems,
    is_valid_combination,
)
from .presets import PRESETS, list_presets, preset

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_objective",
    "load_config",
    "save_config",
    "validate_config",
    "preset",
    "list_presets",
    "list_affinities",
    "list_normalisations",
    "list_losses",
    "combination_problems",
    "is_valid_combination",
    "kd_loss",
    "Objective",
    "RelationTerm",
    "FeatureTerm",
    "ConfigError",
    "AFFINITIES",
    "NORMALISATIONS",
    "LOSSES",
    "VIEWS",
    "FEATURES",
    "PRESETS",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def list_affinities(pattern: str = "*") -> list[str]:
    """Affinity names matching a wildcard pattern."""
    return AFFINITIES.list(pattern)


def list_normalisations(pattern: str = "*") -> list[str]:
    """Normalisation names matching a wildcard pattern."""
    return NORMALISATIONS.list(pattern)


def list_losses(pattern: str = "*") -> list[str]:
    """Loss names matching a wildcard pattern."""
    return LOSSES.list(pattern)
