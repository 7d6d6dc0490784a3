"""relkd.relation.affinity: each affinity against its formula on a tiny batch."""
import math

import pytest
import torch

from relkd.relation.affinity import (AFFINITIES, angle, cosine, cosine01, dot, euclidean, pearson, rbf, rbf_taylor,
                                     sq_euclidean)

X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])


def test_distances_and_gram_matrix():
    assert torch.equal(dot(X), X @ X.T)
    assert torch.allclose(sq_euclidean(X), torch.cdist(X, X) ** 2, atol=1e-5)
    assert torch.allclose(euclidean(X), torch.cdist(X, X), atol=1e-5)
    assert torch.all(euclidean(X).diagonal() == 0)


def test_euclidean_has_a_finite_gradient_for_coinciding_samples():
    x = torch.ones(2, 3, requires_grad=True)
    euclidean(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_cosines_and_pearson():
    assert cosine(X)[0, 1] == pytest.approx(0.0) and cosine(X)[1, 2] == pytest.approx(0.8)
    assert torch.allclose(cosine01(X), (cosine(X) + 1) / 2)
    assert cosine(torch.zeros(2, 3)).abs().max() == 0  # zero vectors give 0, not NaN
    shifted = X + 10  # the correlation of rows is blind to a shift of each row
    assert torch.allclose(pearson(X + torch.tensor([[5.0], [1.0], [-2.0]])), pearson(X), atol=1e-6)
    assert not torch.allclose(cosine(shifted), cosine(X))


def test_rbf_is_one_on_the_diagonal_and_scale_free_when_adaptive():
    a = rbf(X, gamma=0.5)
    assert torch.allclose(a.diagonal(), torch.ones(3)) and a.max() <= 1 and a.min() > 0
    assert torch.allclose(rbf(10 * X, gamma=0.5), a, atol=1e-6)
    assert rbf(X, gamma=1.0, adaptive=False)[0, 1] == pytest.approx(math.exp(-5.0), rel=1e-5)


def test_rbf_taylor_is_the_truncated_series_and_its_sign_property_follows_the_order():
    gamma, c = 0.4, cosine(X)
    series = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * c ** p for p in range(3))
    assert torch.allclose(rbf_taylor(X, gamma=gamma, order=2), series, atol=1e-6)
    assert torch.allclose(rbf_taylor(X, order=0), torch.full((3, 3), math.exp(-0.8)))
    entry = AFFINITIES.get("rbf_taylor")
    assert entry.property("nonnegative", {"order": 2}) and not entry.property("nonnegative", {"order": 3})


def test_angle_is_a_triplet_tensor_of_cosines():
    a = angle(X)
    assert a.shape == (3, 3, 3)
    e10, e20 = X[1] - X[0], X[2] - X[0]  # vertex 0: the angle between samples 1 and 2
    assert a[0, 1, 2] == pytest.approx(float(e10 @ e20 / (e10.norm() * e20.norm())), abs=1e-6)
    assert a[0, 1, 1] == pytest.approx(1.0) and a[0, 0, 1] == 0  # e_jj = 0
