"""relkd.features.term: ``FeatureTerm``, its checks and its config."""
import pytest
import torch

from relkd.features.term import MAP_TAPS_HINT, FeatureTerm


def test_a_term_without_parts_computes_at_once_and_round_trips():
    term = FeatureTerm("stage2", {"name": "at", "p": 2.0}, weight=1000.0, name="attn")
    assert not term.trainable and term.method.built
    maps = torch.randn(2, 3, 4, 4)
    assert float(term(maps, maps.clone())) == pytest.approx(0.0, abs=1e-10)
    config = term.to_config()
    assert config == {"kind": "feature", "name": "attn", "tap": "stage2", "method": {"name": "at", "p": 2.0},
                      "weight": 1000.0}
    assert FeatureTerm(config["tap"], config["method"], weight=config["weight"], name="attn").to_config() == config


def test_a_trainable_method_must_be_built_before_its_first_call():
    term = FeatureTerm("pool", "fitnet", pairs=2)
    assert term.trainable and len(term.methods) == 2
    s, t = torch.randn(4, 3), torch.randn(4, 5)
    with pytest.raises(RuntimeError, match="the fitnet term at tap 'pool': the fitnet method has trainable parts"):
        term(s, t)
    term.build(s, t, num_samples=4)
    assert term.methods[0].built and not term.methods[1].built  # each layer pair has its own parts
    assert float(term(s, t).detach()) >= 0


def test_shapes_are_checked_with_the_terms_label():
    term = FeatureTerm("pool", "at", name="a")
    with pytest.raises(ValueError, match=f"term 'a' at tap 'pool': at compares feature maps .*{MAP_TAPS_HINT}"):
        term(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="expected the same samples"):
        term(torch.randn(2, 3, 2, 2), torch.randn(3, 3, 2, 2))


def test_an_unknown_method_raises():
    with pytest.raises(ValueError, match="fitnett"):
        FeatureTerm("pool", "fitnett")
