"""Tests of the model zoo and its tap mechanism (relkd.models)."""
from __future__ import annotations

import copy
import logging
import pickle

import pytest
import torch
import torchvision
from torch import nn

from relkd.models import (
    MODELS,
    ModelInfo,
    TappedModel,
    body_stages,
    count_params,
    create_model,
    describe_models,
    list_models,
    model_entry,
)
from relkd.models import tv
from relkd.registry import Param

# Every model test reads the registry, so a new model is tested without editing this file.
ALL_REGISTERED = MODELS.list()


def family_of(name: str) -> str:
    return MODELS.info(name).property("family")


CNN = [n for n in ALL_REGISTERED if family_of(n) == "cnn"]
CIFAR = [n for n in ALL_REGISTERED if family_of(n) in ("cifar_resnet", "wrn")]
TV_LISTED = ["tv:" + n for n in tv.LISTED]
#: The natural input of the families whose sizes are written down by hand.
FAMILY_INPUT = {"cnn": (1, 28, 28), "cifar_resnet": (3, 32, 32), "wrn": (3, 32, 32), "torchvision": (3, 32, 32)}


def _input(model: TappedModel, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.input_size)


@pytest.fixture(scope="module")
def built() -> dict[str, TappedModel]:
    """Each registered model, built once (eval mode), natural input channels, 10 classes."""
    out = {}
    for name in MODELS.list():
        size = MODELS.info(name).property("input_size")
        torch.manual_seed(0)
        out[name] = create_model(name, num_classes=10, in_channels=size[0]).eval()
    return out


# ---------------------------------------------------------------------- registry
def test_registered_names() -> None:
    assert list_models() == sorted(MODELS) == ALL_REGISTERED
    assert {"cnn_tiny", "cnn_small", "cnn_large"} <= set(list_models("cnn_*"))
    assert {"wrn_16_2", "wrn_40_1", "wrn_40_2"} <= set(list_models("wrn*"))
    assert all(n.startswith("wrn") for n in list_models("wrn*")) and list_models("nothing*") == []
    assert set(TV_LISTED) <= set(ALL_REGISTERED)


@pytest.mark.parametrize("name", ALL_REGISTERED)
def test_every_entry_documented_with_properties(name: str) -> None:
    entry = MODELS.get(name)
    assert entry.doc and entry.description
    family = entry.property("family")
    assert isinstance(family, str) and family
    size = entry.property("input_size")
    assert len(size) == 3 and all(isinstance(n, int) and n > 0 for n in size)
    assert size == FAMILY_INPUT.get(family, size)
    if family == "cnn":
        assert [p.name for p in entry.params] == ["width", "depth", "stages"]
    for p in entry.params:  # the defaults satisfy their own bounds
        assert p.check(p.default) == p.default
    assert entry.resolve_params({}) == entry.defaults()


def test_every_model_is_listed_with_its_taps(built: dict[str, TappedModel], capsys) -> None:
    """``relkd list models`` shows every registered model, with the shapes a real build gives."""
    from relkd.cli import main

    rows = {row.name: row for row in describe_models()}
    assert list(rows) == ALL_REGISTERED
    for name, model in built.items():
        row = rows[name]
        assert row.family == family_of(name) and row.input_size == tuple(MODELS.info(name).property("input_size"))
        with torch.no_grad():
            out = model(_input(model, batch=1))
        assert row.taps == {tap: tuple(v.shape[1:]) for tap, v in out.items()}, name
        assert row.num_params == count_params(model), name
    assert main(["list", "models"]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {name} " in printed for name in ALL_REGISTERED)


def test_torchvision_listing() -> None:
    names = list_models("tv:*", torchvision=True)
    assert {"tv:resnet18", "tv:mobilenet_v3_small", "tv:densenet121"} <= set(names)
    assert not any(n.startswith(("tv:vit", "tv:swin", "tv:squeezenet")) for n in names)
    assert set(TV_LISTED) <= set(names)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        MODELS.add("cnn_tiny", lambda **kw: None, description="duplicate")
    assert MODELS.get("cnn_tiny").obj.__name__ == "cnn_tiny"


def test_unknown_model_did_you_mean() -> None:
    message = r"unknown model 'resnet8x5'; did you mean 'resnet8x4'\?.*Valid names: cnn_large"
    with pytest.raises(ValueError, match=message):
        create_model("resnet8x5")
    with pytest.raises(ValueError, match="did you mean 'cnn_tiny'"):
        create_model("cnn_tinny")


def test_unknown_torchvision_model() -> None:
    message = r"unknown torchvision model 'resnet19'; did you mean 'resnet18'\?.*Valid names: .*mobilenet_v3_small"
    with pytest.raises(ValueError, match=message):
        create_model("tv:resnet19")


@pytest.mark.parametrize(
    "name,why", [("tv:vit_b_16", "transformer"), ("tv:squeezenet1_1", "classifier is a convolution")]
)
def test_unsupported_torchvision_family(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"not supported: .*{why}.*Supported families: resnet"):
        create_model(name)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="has no parameter 'widht'; did you mean 'width'"):
        create_model("cnn_small", widht=8)
    with pytest.raises(ValueError, match="'depth'"):
        create_model("cnn_small", depth=0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_model("cnn_tiny", num_classes=0)
    with pytest.raises(ValueError, match="in_channels must be 1"):
        create_model("tv:resnet18", in_channels=4)


def test_dynamic_torchvision_entry_not_registered() -> None:
    entry = model_entry("tv:mnasnet0_5")
    assert entry.name == "tv:mnasnet0_5" and entry.doc and "tv:mnasnet0_5" not in MODELS
    assert entry.property("family") == "torchvision"
    assert model_entry("tv:resnet18") is MODELS.get("tv:resnet18")


# ---------------------------------------------------------------------- taps
EXPECTED_SHAPES = {
    "cnn_tiny": {"stage1": (16, 28, 28), "stage2": (32, 14, 14), "stage3": (64, 7, 7), "pool": (64,)},
    "cnn_small": {"stage1": (32, 28, 28), "stage2": (64, 14, 14), "stage3": (128, 7, 7), "pool": (128,)},
    "resnet20": {"stage1": (16, 32, 32), "stage2": (32, 16, 16), "stage3": (64, 8, 8), "pool": (64,)},
    "resnet8x4": {"stage1": (64, 32, 32), "stage2": (128, 16, 16), "stage3": (256, 8, 8), "pool": (256,)},
    "resnet32x4": {"stage1": (64, 32, 32), "stage2": (128, 16, 16), "stage3": (256, 8, 8), "pool": (256,)},
    "wrn_16_2": {"stage1": (32, 32, 32), "stage2": (64, 16, 16), "stage3": (128, 8, 8), "pool": (128,)},
    "wrn_40_2": {"stage1": (32, 32, 32), "stage2": (64, 16, 16), "stage3": (128, 8, 8), "pool": (128,)},
    "tv:resnet18": {"stage1": (64, 16, 16), "stage2": (64, 8, 8), "stage3": (128, 4, 4),
                    "stage4": (256, 2, 2), "stage5": (512, 1, 1), "pool": (512,)},
    "tv:mobilenet_v3_small": {"stage1": (16, 16, 16), "stage2": (16, 8, 8), "stage3": (24, 4, 4),
                              "stage4": (48, 2, 2), "stage5": (576, 1, 1), "pool": (576,)},
}


@pytest.mark.parametrize("name", ALL_REGISTERED)
def test_taps_of_every_registered_model(name: str, built: dict[str, TappedModel]) -> None:
    model = built[name]
    assert model.model_name == name
    k = model.num_stages
    assert model.tap_names == tuple(f"stage{i}" for i in range(1, k + 1)) + ("last_stage", "pool", "logits")
    x = _input(model)
    with torch.no_grad():
        out = model(x)
    assert tuple(out) == model.tap_names
    for i in range(1, k + 1):
        assert out[f"stage{i}"].dim() == 4 and out[f"stage{i}"].shape[0] == 2
    assert out["last_stage"] is out[f"stage{k}"]
    assert out["pool"].dim() == 2 and out["pool"].shape[0] == 2
    assert out["logits"].shape == (2, 10)
    # the pool embedding feeds the classifier
    torch.testing.assert_close(model.classifier(out["pool"]), out["logits"])
    expected = EXPECTED_SHAPES.get(name, {})  # the families whose shapes are written down by hand
    assert {t: tuple(v.shape[1:]) for t, v in out.items() if t in expected} == expected


@pytest.mark.parametrize("name", CNN + CIFAR)
def test_pool_is_global_average_of_last_stage(name: str, built: dict[str, TappedModel]) -> None:
    """On the CNNs and ResNets ``pool`` averages ``last_stage``; a WRN's ``last_stage`` is its
    last group's raw output, which the network passes through its final BN-ReLU first."""
    model = built[name].eval()
    with torch.no_grad():
        out = model(_input(model))
        last = out["last_stage"]
        if family_of(name) == "wrn":
            last = torch.relu(model.net.bn1(last))
    torch.testing.assert_close(out["pool"], last.mean(dim=(2, 3)))


def _repdistiller_features(model: TappedModel, x: torch.Tensor) -> list[torch.Tensor]:
    """RepDistiller's ``forward(x, is_feat=True)`` feature list [f0 (stem), f1 .. fK, pool],
    composed here from the network's modules as its models/resnet.py, models/wrn.py (and, for
    torchvision's ResNet, models/resnetv2.py) write it."""
    net = model.net
    if isinstance(net, torchvision.models.ResNet):
        f0 = net.relu(net.bn1(net.conv1(x)))
        feats, h = [f0], net.maxpool(f0)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            feats.append(h)
        return [*feats, torch.flatten(net.avgpool(h), 1)]
    if name_family(model) == "wrn":
        f0 = net.conv1(x)
        f1 = net.block1(f0)
        f2 = net.block2(f1)
        f3 = net.block3(f2)
        return [f0, f1, f2, f3, torch.relu(net.bn1(f3)).mean((2, 3))]
    f0 = net.relu(net.bn1(net.conv1(x)))
    f1 = net.layer1(f0)
    f2 = net.layer2(f1)
    f3 = net.layer3(f2)
    return [f0, f1, f2, f3, f3.mean((2, 3))]


def name_family(model: TappedModel) -> str:
    return str(MODELS.info(model.model_name).properties.get("family")) if model.model_name in MODELS else "torchvision"


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "wrn_16_2", "wrn_40_1", "tv:resnet18"])
def test_the_every_stage_layers_are_repdistillers_features(name: str) -> None:
    """``body_stages`` (what AT, NST, VID and SRM read) are RepDistiller's feat[1:-1], the
    second body stage FitNets' feat[2] (hint_layer 2), last_stage SP's feat[-2] and pool
    CRD's feat[-1]: on 3-stage CIFAR ResNets, WRNs (raw group outputs) and a 4-group
    torchvision ResNet (whose stem is stage1)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = _repdistiller_features(model, x)
        out = model(x)
    stages = model.body_stages
    assert stages == body_stages(name) and len(stages) == len(feats) - 2 == (4 if name.startswith("tv:") else 3)
    for tap, want in zip(stages, feats[1:-1]):
        torch.testing.assert_close(out[tap], want, rtol=0, atol=0)
    torch.testing.assert_close(out[stages[1]], feats[2], rtol=0, atol=0)
    torch.testing.assert_close(out["last_stage"], feats[-2], rtol=0, atol=0)
    torch.testing.assert_close(out["pool"], feats[-1], rtol=1e-6, atol=1e-6)


def test_mobilenet_v3_small_gray_input_taps() -> None:
    torch.manual_seed(0)
    model = create_model("tv:mobilenet_v3_small", num_classes=7, in_channels=1).eval()
    out = model(torch.randn(2, 1, 32, 32))
    assert out["logits"].shape == (2, 7)
    assert out["stage1"].shape == (2, 16, 16, 16) and out["pool"].shape == (2, 576)


def test_tap_shapes_and_describe() -> None:
    rows = describe_models("cnn_*")
    assert [r.name for r in rows] == list_models("cnn_*")
    tiny = {r.name: r for r in rows}["cnn_tiny"]
    assert isinstance(tiny, ModelInfo)
    assert tiny.family == "cnn" and tiny.input_size == (1, 28, 28)
    assert tiny.taps["stage3"] == (64, 7, 7) and tiny.taps["logits"] == (10,)
    assert 15_000 < tiny.num_params < 50_000
    assert tiny.description.startswith("Tiny CNN")
    assert isinstance(tiny.params[0], Param)
    # describing does not touch the global RNG
    torch.manual_seed(1)
    a = torch.rand(1)
    torch.manual_seed(1)
    describe_models("resnet8")
    assert torch.equal(torch.rand(1), a)


@pytest.mark.parametrize("name", ["tv:mobilenet_v3_small", "tv:regnet_x_400mf", "wrn_16_2"])
def test_describe_matches_a_real_build(name: str) -> None:
    # describe builds on the meta device where it can (regnet cannot: it falls back to the CPU)
    (row,) = describe_models(name, torchvision=True)
    model = create_model(name, in_channels=3)
    assert row.taps == model.tap_shapes() and row.num_params == count_params(model)
    assert row.input_size == model.input_size == (3, 32, 32)


def test_taps_selection(built: dict[str, TappedModel]) -> None:
    model = built["cnn_tiny"]
    x = _input(model)
    out = model(x, taps=["pool"])
    assert list(out) == ["pool", "logits"]
    out = model(x, taps="stage2")
    assert list(out) == ["stage2", "logits"]
    out = model(x, taps=["last_stage", "stage1"])
    assert list(out) == ["stage1", "last_stage", "logits"]
    assert list(model(x, taps=[])) == ["logits"]


def test_unknown_tap_lists_taps(built: dict[str, TappedModel]) -> None:
    model = built["cnn_tiny"]
    x = _input(model)
    message = r"model 'cnn_tiny' has no tap 'stage4'.* Its taps: stage1, stage2, stage3, last_stage, pool, logits$"
    with pytest.raises(ValueError, match=message):
        model(x, taps=["stage4"])
    with pytest.raises(ValueError, match="did you mean 'last_stage'"):
        model(x, taps=["laststage"])


@pytest.mark.parametrize("name", ["cnn_small", "resnet8", "wrn_16_2", "tv:resnet18"])
def test_one_forward_pass_per_call(name: str, built: dict[str, TappedModel]) -> None:
    model = built[name]
    calls: dict[str, int] = {}
    watched = {**{f"stage{i}": model.stage_module(i) for i in range(1, model.num_stages + 1)},
               "classifier": model.classifier}
    handles = [m.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
               for key, m in watched.items()]
    try:
        model(_input(model))
        assert calls == {key: 1 for key in watched}
        calls.clear()
        model(_input(model), taps=["pool"])
        assert calls == {key: 1 for key in watched}
    finally:
        for h in handles:
            h.remove()


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_each_call(built: dict[str, TappedModel]) -> None:
    model = built["resnet8"]
    assert _hook_count(model) == 0
    model(_input(model))
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 32, 32))  # wrong channel count fails inside the network
    assert _hook_count(model) == 0


def test_no_tensor_kept_between_calls() -> None:
    import weakref

    model = create_model("cnn_tiny").eval()
    out = model(torch.randn(2, 1, 28, 28))
    ref = weakref.ref(out["stage1"])
    del out
    assert ref() is None


def test_gradients_flow_through_taps() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", in_channels=3)
    out = model(torch.randn(4, 3, 32, 32))
    loss = out["stage1"].square().mean() + out["pool"].square().mean() + out["logits"].logsumexp(1).mean()
    loss.backward()
    assert model.net.conv1.weight.grad is not None and model.net.conv1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------- modes
@pytest.mark.parametrize("name", ["cnn_small", "wrn_16_2", "tv:resnet18"])
def test_channels_last_matches(name: str) -> None:
    torch.manual_seed(0)
    size = MODELS.info(name).property("input_size")
    model = create_model(name, in_channels=size[0]).eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert out.keys() == ref.keys()
    for tap in ref:
        torch.testing.assert_close(out[tap], ref[tap], atol=1e-4, rtol=1e-4)


def test_inference_mode(built: dict[str, TappedModel]) -> None:
    model = built["resnet20"]
    with torch.inference_mode():
        out = model(_input(model))
    assert all(t.is_inference() for t in out.values())
    assert not out["logits"].requires_grad


def test_deterministic_init() -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return create_model("wrn_16_2", num_classes=5).state_dict()

    a, b, c = build(0), build(0), build(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_deterministic_init_torchvision() -> None:
    torch.manual_seed(3)
    a = create_model("tv:mobilenet_v3_small").state_dict()
    torch.manual_seed(3)
    b = create_model("tv:mobilenet_v3_small").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deepcopy_and_pickle(built: dict[str, TappedModel]) -> None:
    model = built["cnn_tiny"]
    x = _input(model)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.tap_names == model.tap_names
        torch.testing.assert_close(clone(x)["pool"], model(x)["pool"])
        assert _hook_count(clone) == 0 and _hook_count(model) == 0


def test_train_mode_updates_batchnorm() -> None:
    torch.manual_seed(0)
    model = create_model("cnn_tiny")
    assert model.training
    bn = model.net.stages.stage1[0][1]
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 28, 28) + 1.0)
    assert not torch.equal(before, bn.running_mean)


# ---------------------------------------------------------------------- sizes
# Parameter counts with 100 classes and RGB input, as reported by CRD (Tian et al. 2020).
CRD_PARAMS = {
    "resnet8x4": 1.23e6,
    "resnet32x4": 7.43e6,
    "resnet56": 0.86e6,
    "resnet20": 0.28e6,
    "resnet110": 1.74e6,
    "wrn_40_2": 2.26e6,
    "wrn_16_2": 0.70e6,
    "wrn_40_1": 0.57e6,
}


@pytest.mark.parametrize("name,expected", sorted(CRD_PARAMS.items()))
def test_crd_parameter_counts(name: str, expected: float) -> None:
    model = create_model(name, num_classes=100, in_channels=3)
    assert count_params(model) == pytest.approx(expected, rel=0.02)


def test_cnn_family_sizes() -> None:
    sizes = {name: count_params(create_model(name)) for name in ("cnn_tiny", "cnn_small", "cnn_large")}
    assert 10_000 < sizes["cnn_tiny"] < 60_000
    assert sizes["cnn_tiny"] < sizes["cnn_small"] < sizes["cnn_large"]
    assert 0.25e6 <= sizes["cnn_large"] <= 1.5e6


def test_cnn_parameters_change_architecture() -> None:
    model = create_model("cnn_small", width=8, depth=2, stages=4)
    out = model(torch.randn(2, 1, 28, 28))
    assert model.num_stages == 4
    shapes = [tuple(out[f"stage{i}"].shape[1:]) for i in range(1, 5)]
    assert shapes == [(8, 28, 28), (16, 14, 14), (32, 7, 7), (64, 3, 3)]
    assert len(model.net.stages.stage2) == 3  # max-pool + two conv blocks


def test_cifar_models_accept_28x28_gray() -> None:
    model = create_model("resnet8", num_classes=10, in_channels=1)
    out = model(torch.randn(2, 1, 28, 28))
    assert out["stage3"].shape == (2, 64, 7, 7) and out["logits"].shape == (2, 10)


# ---------------------------------------------------------------------- torchvision
def test_torchvision_gray_input_repeated() -> None:
    torch.manual_seed(0)
    model = create_model("tv:resnet18", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        gray = model(x)
        rgb = model(x.repeat(1, 3, 1, 1))
    for tap in gray:
        torch.testing.assert_close(gray[tap], rgb[tap])


def _tv_state(model: TappedModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net.state_dict().items()}


@pytest.mark.parametrize("layout", ["net", "wrapper", "nested"])
def test_torchvision_weights_round_trip(tmp_path, layout: str) -> None:
    torch.manual_seed(0)
    source = create_model("tv:mobilenet_v3_small", num_classes=10)
    state = {"net": source.net.state_dict(), "wrapper": source.state_dict(),
             "nested": {"state_dict": source.net.state_dict(), "epoch": 3}}[layout]
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    torch.manual_seed(1)
    loaded = create_model("tv:mobilenet_v3_small", num_classes=10, weights=str(path))
    a, b = _tv_state(source), _tv_state(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(source.eval()(x)["logits"], loaded.eval()(x)["logits"])


def test_torchvision_weights_other_num_classes(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    source = create_model("tv:resnet18", num_classes=100)
    path = tmp_path / "r18_100.pt"
    torch.save(source.net.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="relkd.models.tv"):
        loaded = create_model("tv:resnet18", num_classes=10, weights=str(path))
    assert "fc.weight" in caplog.text and "another number of classes" in caplog.text
    a, b = _tv_state(source), _tv_state(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("fc."))
    assert b["fc.weight"].shape == (10, 512)


def test_torchvision_weights_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        create_model("tv:resnet18", weights=str(tmp_path / "missing.pt"))
    path = tmp_path / "other.pt"
    torch.save(create_model("tv:mobilenet_v3_small").net.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit ResNet"):
        create_model("tv:resnet18", weights=str(path))


@pytest.mark.slow
@pytest.mark.parametrize("tv_name", ["densenet121", "efficientnet_b0", "googlenet", "regnet_x_400mf",
                                     "shufflenet_v2_x0_5", "mnasnet0_5", "convnext_tiny", "mobilenet_v2",
                                     "inception_v3"])
def test_torchvision_families(tv_name: str) -> None:
    model = create_model("tv:" + tv_name, num_classes=10, in_channels=3).eval()
    side = 96 if tv_name == "inception_v3" else 32
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert model.num_stages >= 4
    assert out["last_stage"] is out[f"stage{model.num_stages}"]
    assert out["pool"].dim() == 2 and out["logits"].shape == (2, 10)
    if tv_name != "convnext_tiny":  # convnext's classifier starts with a LayerNorm2d on (B, C, 1, 1)
        torch.testing.assert_close(model.classifier(out["pool"]), out["logits"])
