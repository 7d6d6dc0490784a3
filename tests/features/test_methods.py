"""relkd.features.methods: the feature registry, spatial matching, FitNets' regressor rule and AT."""
import pytest
import torch
from torch import nn

from relkd.features.methods import (FEATURES, Attention, FeatureMethod, FitNet, attention_map, conv_regressor,
                                    match_spatial, register_method)


def test_match_spatial_pools_the_larger_side_of_each_map():
    s, t = match_spatial(torch.ones(2, 3, 8, 4), torch.ones(2, 5, 4, 8))
    assert s.shape == (2, 3, 4, 4) and t.shape == (2, 5, 4, 4)
    vectors = torch.ones(2, 3)
    assert match_spatial(vectors, vectors)[0] is vectors


@pytest.mark.parametrize("student, teacher, first, pooled", [
    ((4, 8, 8), (6, 4, 4), nn.Conv2d, False),  # twice the teacher's size: stride 2
    ((4, 4, 4), (6, 8, 8), nn.ConvTranspose2d, False),  # half: transposed
    ((4, 6, 6), (6, 4, 4), nn.Conv2d, False),  # larger: a valid 3x3 conv
    ((4, 3, 3), (6, 7, 7), nn.Conv2d, True),  # no rule: pooled, 1x1
])
def test_conv_regressor_maps_to_the_teachers_shape(student, teacher, first, pooled):
    module, was_pooled = conv_regressor(student, teacher)
    assert type(module[0]) is first and was_pooled is pooled
    x = torch.randn(2, *student)
    if pooled:
        x, _ = match_spatial(x, torch.zeros(2, *teacher))
        assert module(x).shape[1] == teacher[0]
    else:
        assert module(x).shape == (2, *teacher)


def test_fitnet_builds_a_regressor_then_its_loss_is_the_mse():
    fitnet = FitNet()
    assert not fitnet.built and FitNet.has_parts()
    s, t = torch.randn(4, 3), torch.randn(4, 5)
    fitnet.build(s, t, num_samples=4)
    assert isinstance(fitnet.regressor, nn.Linear) and fitnet.built
    with torch.no_grad():
        assert float(fitnet(s, t)) == pytest.approx(float(((fitnet.regressor(s) - t) ** 2).mean()))
    with pytest.raises(ValueError, match="fitnet: the student's features have shape"):
        FitNet().build(torch.randn(4, 3), torch.randn(4, 3, 2, 2), None)


def test_attention_maps_are_unit_rows_and_equal_maps_cost_nothing():
    f = torch.randn(2, 3, 4, 4)
    a = attention_map(f, 2.0)
    assert a.shape == (2, 16) and torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.allclose(attention_map(-f, 1.0), attention_map(f, 1.0))  # |f|: the sign does not cancel
    at = Attention(p=2.0)
    assert at.built and not Attention.has_parts()
    assert float(at(f, 10 * f)) == pytest.approx(0.0, abs=1e-10)  # scale-free
    assert float(at(f, torch.randn(2, 7, 8, 8))) > 0  # other channels and size: matched


def test_the_registry_reads_each_methods_properties_from_its_class():
    assert FEATURES.get("at").property("map") is True and FEATURES.get("at").property("trainable") is False
    assert FEATURES.get("fitnet").property("trainable") is True
    assert FEATURES.get("crd").property("index") is True
    assert FEATURES.create("at", p=3.0).p == 3.0


def test_a_method_needing_an_index_must_build_parts():
    class Indexed(FeatureMethod):
        needs_index = True

    with pytest.raises(TypeError, match="'indexed' needs an index or a stage, so it must build parts"):
        register_method("indexed", description="x")(Indexed)
    assert "indexed" not in FEATURES
