"""relkd.relation.normalise: each normalisation against its formula."""
import pytest
import torch

from relkd.relation.normalise import (NORMALISATIONS, center, frobenius, max_abs, mean, minmax, none, row_l2,
                                      row_softmax, row_sum, zscore)

M = torch.tensor([[0.0, 2.0, 4.0], [1.0, -3.0, 0.0], [2.0, 2.0, 2.0]])


def test_scalings():
    assert none(M) is M
    assert torch.allclose(row_l2(M).norm(dim=1), torch.ones(3))
    assert torch.allclose(mean(M), M / (13.0 / 6))  # the mean of the six positive entries
    assert torch.equal(mean(torch.zeros(2, 2)), torch.zeros(2, 2))
    assert max_abs(M).abs().max() == 1 and max_abs(M)[1, 1] == pytest.approx(-0.75)
    assert frobenius(M).norm() == pytest.approx(1.0)


def test_distributions_sum_to_one_per_row():
    assert torch.allclose(row_softmax(M).sum(dim=1), torch.ones(3))
    cold = row_softmax(M, temperature=0.01)
    assert cold[0, 2] == pytest.approx(1.0)  # a low temperature picks the row's largest
    positive = M.abs()
    assert torch.allclose(row_sum(positive).sum(dim=1), torch.ones(3))


def test_minmax_zscore_and_double_centering():
    n = minmax(M)
    assert n.min() == 0 and n.max() == 1
    z = zscore(M)
    assert z.mean() == pytest.approx(0.0, abs=1e-6) and z.pow(2).mean() == pytest.approx(1.0, abs=1e-5)
    c = center(M)
    assert torch.allclose(c.mean(dim=0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(c.mean(dim=1), torch.zeros(3), atol=1e-6)
    h = torch.eye(3) - torch.ones(3, 3) / 3
    assert torch.allclose(c, h @ M @ h, atol=1e-6)


def test_the_registry_properties_the_rules_read():
    assert NORMALISATIONS.get("row_sum").property("requires_nonnegative") is True
    assert NORMALISATIONS.get("center").property("matrix_only") is True
    assert {e.name for e in NORMALISATIONS.entries() if e.property("output") == "distribution"} \
        == {"row_softmax", "row_sum"}
