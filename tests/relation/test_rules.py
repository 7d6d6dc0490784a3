"""relkd.relation.rules: which affinity, normalisation and loss go together, and why not."""
import pytest

from relkd.relation.rules import (combination_problems, elementwise_normalisations, is_valid_combination,
                                  nonnegative_affinities)


def test_the_lists_the_messages_offer():
    assert {"euclidean", "cosine01", "rbf"} <= set(nonnegative_affinities())
    assert "cosine" not in nonnegative_affinities() and "dot" not in nonnegative_affinities()
    assert "center" not in elementwise_normalisations() and "row_l2" in elementwise_normalisations()


def test_each_rule_says_what_to_use_instead():
    (problem,) = combination_problems("cosine", "row_sum", "mse")
    assert problem.startswith("normalisation 'row_sum' needs non-negative input, but affinity 'cosine'")
    (problem,) = combination_problems("angle", "center", "mse")
    assert "works on (B, B) matrices only" in problem and "row_l2" in problem
    (problem,) = combination_problems("cosine", "row_l2", "kl")
    assert problem.startswith("loss 'kl' compares rows as probability distributions") and "row_softmax" in problem
    assert is_valid_combination("cosine01", "row_sum", "kl")


def test_parameters_decide_rbf_taylor_sign():
    assert is_valid_combination({"name": "rbf_taylor", "order": 2}, "row_sum", "kl")
    assert not is_valid_combination({"name": "rbf_taylor", "order": 3}, "row_sum", "kl")


def test_an_unknown_name_raises():
    with pytest.raises(ValueError, match="cosin"):
        combination_problems("cosin", "none", "mse")
