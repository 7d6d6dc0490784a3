"""relkd.features (the package): its public surface is the registry, the term and SRM."""
import relkd.features as features
from relkd.features import FEATURES, FeatureMethod, FeatureTerm, SparseRepresentation, match_spatial


def test_the_package_exports_what_it_lists():
    assert sorted(features.__all__) == sorted(["FEATURES", "FeatureMethod", "FeatureTerm", "SparseRepresentation",
                                               "match_spatial"])
    assert callable(match_spatial) and issubclass(SparseRepresentation, FeatureMethod)


def test_importing_the_package_registers_every_method():
    assert {"fitnet", "at", "nst", "vid", "crd", "srm"} <= set(FEATURES)
    assert FEATURES.get("srm").obj is SparseRepresentation
    assert FeatureTerm("pool", "srm").entry.property("stage") is True
