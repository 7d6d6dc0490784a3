"""The relation design space: affinity, normalisation and loss registries, views, the
validity rules and the relation term."""
from .affinity import AFFINITIES
from .loss import LOSSES
from .normalise import NORMALISATIONS
from .rules import combination_problems, is_valid_combination, nonnegative_affinities
from .term import TOKENS_RANK, VIEWS, RelationTerm, views_for_every_tap

__all__ = [
    "AFFINITIES",
    "NORMALISATIONS",
    "LOSSES",
    "VIEWS",
    "RelationTerm",
    "combination_problems",
    "is_valid_combination",
    "nonnegative_affinities",
    "views_for_every_tap",
    "TOKENS_RANK",
]
