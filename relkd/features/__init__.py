"""Feature-level distillation terms with trainable parts (FitNets, AT, NST, VID, CRD, SRM): the
``feature`` registry and the feature term, the second family of terms beside
:mod:`relkd.relation`."""
from .methods import FEATURES, FeatureMethod, match_spatial
from .srm import SparseRepresentation
from .term import FeatureTerm

__all__ = ["FEATURES", "FeatureMethod", "FeatureTerm", "SparseRepresentation", "match_spatial"]
