"""Which affinity x normalisation x loss combinations are valid, and why not.

One function, :func:`combination_problems`, answers this from the registries' metadata.
Config validation and the Optuna search space both call it, so an invalid combination is
rejected before anything trains.
"""
from __future__ import annotations

from typing import Any, Mapping, Union

from ..registry import split_spec
from .affinity import AFFINITIES
from .loss import LOSSES
from .normalise import NORMALISATIONS

Spec = Union[str, Mapping[str, Any]]


def nonnegative_affinities() -> list[str]:
    """Affinities that are non-negative with their default parameters."""
    return [e.name for e in AFFINITIES.entries() if e.property("nonnegative", default=False)]


def elementwise_normalisations() -> list[str]:
    """Normalisations that work on any affinity, (B, B) matrices and (B, B, B) tensors alike."""
    return [e.name for e in NORMALISATIONS.entries() if not e.property("matrix_only", default=False)]


def combination_problems(affinity: Spec, normalisation: Spec, loss: Spec) -> list[str]:
    """Every rule the combination breaks, as sentences that say what to do instead;
    an empty list means the combination is valid. Each argument is a registry name or a
    ``{"name": ..., **params}`` mapping (parameters matter for e.g. ``rbf_taylor``'s order).
    Unknown names raise ``ValueError``."""
    a_name, a_params = split_spec(affinity)
    n_name, _ = split_spec(normalisation)
    l_name, _ = split_spec(loss)
    a_entry, n_entry, l_entry = AFFINITIES.get(a_name), NORMALISATIONS.get(n_name), LOSSES.get(l_name)
    problems = []
    a_nonneg = bool(a_entry.property("nonnegative", a_params, default=False))
    if n_entry.property("requires_nonnegative") and not a_nonneg:
        problems.append(
            f"normalisation '{n_name}' needs non-negative input, but affinity '{a_name}' can be negative; "
            f"use one of the affinities {', '.join(nonnegative_affinities())} or another normalisation"
        )
    if n_entry.property("matrix_only") and a_entry.property("order") != 2:
        problems.append(
            f"normalisation '{n_name}' works on (B, B) matrices only, but affinity '{a_name}' "
            f"gives a (B, B, B) tensor; use one of the normalisations {', '.join(elementwise_normalisations())}"
        )
    if l_entry.property("requires") == "distribution" and n_entry.property("output") != "distribution":
        producers = [e.name for e in NORMALISATIONS.entries() if e.property("output") == "distribution"]
        problems.append(
            f"loss '{l_name}' compares rows as probability distributions, but normalisation '{n_name}' "
            f"does not produce them; use normalisation {' or '.join(producers)}"
        )
    return problems


def is_valid_combination(affinity: Spec, normalisation: Spec, loss: Spec) -> bool:
    """``True`` when :func:`combination_problems` finds nothing."""
    return not combination_problems(affinity, normalisation, loss)
