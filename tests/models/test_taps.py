"""relkd.models.taps: named taps from one forward pass of any network."""
import pytest
import torch
from torch import nn

from relkd.models.taps import TappedModel, TapPoints, count_params, stage_tap_names


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.block = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.block(self.stem(x)), 1)))


def tapped(**points):
    return TappedModel(Net(), TapPoints(("stem", "block"), "fc", **points), model_name="net", input_size=(1, 4, 4))


def test_tap_names_and_points():
    assert stage_tap_names(3) == ("stage1", "stage2", "stage3")
    assert TapPoints(("a",), "fc").tap_names() == ("stage1", "last_stage", "pool", "logits")
    with pytest.raises(ValueError, match="at least one stage"):
        TapPoints((), "fc")


def test_one_forward_gives_every_tap_and_last_stage_is_the_last_stage():
    model = tapped()
    out = model(torch.randn(5, 1, 4, 4))
    assert list(out) == ["stage1", "stage2", "last_stage", "pool", "logits"]
    assert out["last_stage"] is out["stage2"] and out["pool"].shape == (5, 16) and out["logits"].shape == (5, 3)
    assert torch.equal(model.net(torch.zeros(1, 1, 4, 4)), model(torch.zeros(1, 1, 4, 4))["logits"])
    assert not model.net.block._forward_hooks  # the hooks live for one call


def test_a_selection_is_returned_in_model_order_with_the_logits():
    model = tapped()
    assert list(model(torch.randn(2, 1, 4, 4), taps=["pool", "stage1"])) == ["stage1", "pool", "logits"]
    with pytest.raises(ValueError, match="model 'net' has no tap 'stage3'.*Its taps: stage1, stage2"):
        model.resolve_taps("stage3")


def test_pool_input_and_shapes_without_the_batch():
    model = tapped(pool_input="drop", stem=True)
    assert model.tap_module_names()["pool"] == "drop" and model.body_stages == ("last_stage",)
    model.train()
    assert model.tap_shapes() == {"stage1": (2, 4, 4), "stage2": (4, 2, 2), "last_stage": (4, 2, 2), "pool": (16,),
                                  "logits": (3,)}
    assert model.training  # restored
    assert model.num_params() == count_params(model.net) == sum(p.numel() for p in Net().parameters())
    with pytest.raises(IndexError, match="out of range 1..2"):
        model.stage_module(3)


def test_a_tap_point_that_is_no_submodule_is_named():
    with pytest.raises(ValueError, match="tap point 'head' is not a submodule of Net"):
        TappedModel(Net(), TapPoints(("stem",), "head"), model_name="net", input_size=(1, 4, 4))


def test_frozen_norms_stay_in_eval_mode():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    model = TappedModel(net, TapPoints(("1",), "3"), model_name="seq", input_size=(1, 1, 1))
    model.frozen_norms = ("1",)
    model.train()
    assert model.training and not net[1].training
