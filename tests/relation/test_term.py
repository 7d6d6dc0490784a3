"""relkd.relation.term: views, ``in_float32`` and ``RelationTerm``."""
import pytest
import torch

from relkd.relation.affinity import euclidean
from relkd.relation import VIEWS, views_for_every_tap
from relkd.relation.term import RelationTerm, auto, avgpool, cls, flatten, in_float32, maxpool

MAPS = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)


def test_views():
    assert flatten(MAPS).shape == (2, 12)
    assert torch.equal(avgpool(MAPS), MAPS.mean(dim=(2, 3)))
    assert torch.equal(maxpool(MAPS), MAPS.amax(dim=(2, 3)))
    assert torch.equal(auto(MAPS), avgpool(MAPS))
    flat = torch.randn(4, 5)
    assert torch.equal(auto(flat), flat)


def test_token_features_are_pooled_over_tokens_or_read_at_the_class_token():
    tokens = torch.randn(4, 5, 3)  # (B, N, D): a transformer block's output
    assert torch.equal(auto(tokens), tokens.mean(dim=1)) and torch.equal(avgpool(tokens), tokens.mean(dim=1))
    assert torch.equal(maxpool(tokens), tokens.amax(dim=1))
    assert torch.equal(cls(tokens), tokens[:, 0])
    assert torch.equal(cls(MAPS), auto(MAPS))  # a CNN's map meets a ViT's class token pooled
    term = RelationTerm("last_stage", "cosine", view="cls")
    assert term(torch.randn(4, 8, 2, 2), tokens).item() > 0  # a CNN student, a ViT teacher: B x B on both sides
    # `view: all` in a study: every view but those that differ from another only on tokens
    assert "cls" in VIEWS.list() and "cls" not in views_for_every_tap()
    assert set(views_for_every_tap()) == set(VIEWS.list()) - {"cls"}


def test_the_loss_is_zero_between_equal_features_and_positive_otherwise():
    term = RelationTerm("pool", "euclidean", "mean", {"name": "smooth_l1", "beta": 1.0}, weight=25.0)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    assert float(term(x, x.clone())) == pytest.approx(0.0, abs=1e-7)
    assert float(term(x, 3 * x)) == pytest.approx(0.0, abs=1e-6)  # 'mean' makes distances scale-free
    assert float(term(x, torch.randn(4, 6))) > 0
    r = term.relation(x)
    assert torch.allclose(r, euclidean(x) / euclidean(x)[euclidean(x) > 0].mean())


def test_config_round_trip_and_an_invalid_combination_names_the_term():
    term = RelationTerm("pool", "cosine01", "row_sum", "kl", weight=2.0, name="pkt")
    config = term.to_config()
    assert config["name"] == "pkt" and config["weight"] == 2.0 and config["loss"] == {"name": "kl", "eps": 1e-7}
    assert RelationTerm(**config).to_config() == config
    with pytest.raises(ValueError, match="relation term 'last_stage': normalisation 'row_sum' needs non-negative"):
        RelationTerm("last_stage", "cosine", "row_sum", "kl")


@pytest.mark.parametrize("student, teacher, message", [
    (torch.zeros(3, 2), torch.zeros(4, 2), "the student's batch has 3 samples and the teacher's 4"),
    (torch.zeros(1, 2), torch.zeros(1, 2), "a batch of 1 sample"),
    (torch.tensor(1.0), torch.tensor(1.0), "expected batched features"),
])
def test_batches_are_checked(student, teacher, message):
    with pytest.raises(ValueError, match=message):
        RelationTerm("pool", "dot", name="sp")(student, teacher)


def test_in_float32_computes_half_inputs_in_float32():
    seen = []
    out = in_float32(lambda s, t: (seen.append((s.dtype, t.dtype)), s + t)[1],
                     torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=torch.bfloat16))
    assert seen == [(torch.float32, torch.float32)] and out.dtype == torch.float32
    assert in_float32(torch.add, torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)).dtype \
        == torch.float64
