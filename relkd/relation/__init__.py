"""The relation design space: affinity, normalisation and loss registries, views, the
validity rules and the relation term."""
from .affinity import AFFINITIES
from .loss import LOSSES
from .normalise import NORMALISATIONS
from .rules import combination_problems, is_valid_combination, nonnegative_affinities
from .term import VIEWS, RelationTerm

__all__ = [
    "AFFINITIES",
    "NORMALISATIONS",
    "LOSSES",
    "VIEWS",
    "RelationTerm",
    "combination_problems",
    "is_valid_combination",
    "nonnegative_affinities",
]
