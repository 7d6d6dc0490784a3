"""relkd.relation.loss: each loss against its formula; zero when the matrices agree."""
import math

import pytest
import torch

from relkd.relation.loss import LOSSES, cosine, js, kl, l1, mse, smooth_l1

S = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
T = torch.tensor([[0.25, 0.75], [0.9, 0.1]])


@pytest.mark.parametrize("loss", [mse, l1, smooth_l1, kl, js, cosine])
def test_zero_for_identical_matrices(loss):
    assert float(loss(T, T.clone())) == pytest.approx(0.0, abs=1e-6)


def test_values_on_a_small_pair():
    assert float(mse(S, T)) == pytest.approx(2 * 0.25 ** 2 / 4)
    assert float(l1(S, T)) == pytest.approx(0.5 / 4)
    assert float(smooth_l1(S, T, beta=0.1)) == pytest.approx(2 * (0.25 - 0.05) / 4)  # past the quadratic zone
    expected = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)) / 4
    assert float(kl(S, T)) == pytest.approx(expected, rel=1e-4)
    assert float(cosine(torch.zeros(2, 2), torch.zeros(2, 2))) == 0.0


def test_kl_is_asymmetric_and_js_is_not():
    assert float(kl(S, T)) != pytest.approx(float(kl(T, S)))
    assert float(js(S, T)) == pytest.approx(float(js(T, S)))
    assert LOSSES.get("kl").property("symmetric") is False and LOSSES.get("kl").property("requires") == "distribution"
