"""Structural filter pruning (relkd.models.prune): channel groups, sliced smaller models that
compute what the original computes with the dropped channels at zero, structures that
rebuild them, MACs, the L1 and activation criteria, errors, and unchanged unpruned models."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relkd.models import count_params, create_model
from relkd.models.cifar import ResNetWidths, build_cifar_resnet
from relkd.models.cnn import build_cnn
from relkd.models.prune import (UnprunableError, activation_statistics, build_structure, channel_groups,
                                count_macs, family_of, l1_scores, prune_channels, structure)

SIZES = {"cnn_tiny": (1, 28, 28), "cnn_large": (1, 28, 28), "resnet8": (3, 16, 16), "resnet8x4": (3, 16, 16),
         "resnet20": (3, 16, 16)}
BN = ("weight", "bias", "running_mean", "running_var")


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_channels=SIZES[name][0])


def randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Random BN affine parameters and running statistics, so that every channel matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def random_keep(model: nn.Module, seed: int = 2) -> dict[str, list[int]]:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for group in channel_groups(model):
        k = int(torch.randint(1, group.size, (1,), generator=g))
        keep[group.name] = sorted(torch.randperm(group.size, generator=g)[:k].tolist())
    return keep


def conv_bn(conv: str, bn: str) -> set[str]:
    return {f"{conv}.weight", *(f"{bn}.{t}" for t in BN)}


# --------------------------------------------------------------------------- groups
def expected_groups(name: str) -> dict[str, tuple[set[str], set[str]]]:
    """{group: (producers, consumers)} written out by hand for each model."""
    if name == "cnn_tiny":
        return {"stage1.0": (conv_bn("stages.stage1.0.0", "stages.stage1.0.1"), {"stages.stage2.1.0.weight"}),
                "stage2.0": (conv_bn("stages.stage2.1.0", "stages.stage2.1.1"), {"stages.stage3.1.0.weight"}),
                "stage3.0": (conv_bn("stages.stage3.1.0", "stages.stage3.1.1"), {"fc.weight"})}
    if name == "cnn_large":
        blocks = ["stages.stage1.0", "stages.stage1.1", "stages.stage2.1", "stages.stage2.2", "stages.stage3.1",
                  "stages.stage3.2"]
        names = ["stage1.0", "stage1.1", "stage2.0", "stage2.1", "stage3.0", "stage3.1"]
        return {n: (conv_bn(f"{b}.0", f"{b}.1"), {f"{blocks[i + 1]}.0.weight"} if i < 5 else {"fc.weight"})
                for i, (n, b) in enumerate(zip(names, blocks))}
    n = 3 if name == "resnet20" else 1
    out: dict[str, tuple[set[str], set[str]]] = {}
    stem_separate = name == "resnet8x4"
    for s in (1, 2, 3):
        for b in range(n):
            out[f"layer{s}.{b}.inner"] = (conv_bn(f"layer{s}.{b}.conv1", f"layer{s}.{b}.bn1"),
                                          {f"layer{s}.{b}.conv2.weight"})
        producers = set().union(*(conv_bn(f"layer{s}.{b}.conv2", f"layer{s}.{b}.bn2") for b in range(n)))
        consumers = {f"layer{s}.{b}.conv1.weight" for b in range(1, n)}
        if s > 1 or stem_separate:
            producers |= conv_bn(f"layer{s}.0.downsample.0", f"layer{s}.0.downsample.1")
        else:
            producers |= conv_bn("conv1", "bn1")
            consumers.add("layer1.0.conv1.weight")
        if s < 3:
            consumers |= {f"layer{s + 1}.0.conv1.weight", f"layer{s + 1}.0.downsample.0.weight"}
        else:
            consumers.add("fc.weight")
        out[f"layer{s}.out"] = (producers, consumers)
    if stem_separate:
        out["stem"] = (conv_bn("conv1", "bn1"), {"layer1.0.conv1.weight", "layer1.0.downsample.0.weight"})
    return out


@pytest.mark.parametrize("name", list(SIZES))
def test_groups_cover_exactly_the_expected_tensors(name):
    model = build(name)
    groups = channel_groups(model)
    expected = expected_groups(name)
    assert {g.name: (set(g.producers), set(g.consumers)) for g in groups} == expected
    assert len({g.name for g in groups}) == len(groups)
    state = model.net.state_dict()
    for g in groups:
        assert len(g.producers) == len(set(g.producers)) and len(g.consumers) == len(set(g.consumers))
        assert all(state[k].shape[0] == g.size for k in g.producers)
        assert all(state[k].shape[1] == g.size for k in g.consumers)
        assert len(g.activations) == len(g.relu) >= 1
    # every conv's output channels and every BN belong to exactly one group as producer
    produced = [k for g in groups for k in g.producers]
    convs = [f"{n}.weight" for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d)]
    bns = [f"{n}.{t}" for n, m in model.net.named_modules() if isinstance(m, nn.BatchNorm2d) for t in BN]
    assert sorted(produced) == sorted(convs + bns)
    consumed = [k for g in groups for k in g.consumers]
    assert sorted(consumed) == sorted([c for c in convs if c not in ("conv1.weight", "stages.stage1.0.0.weight")]
                                      + ["fc.weight"])


def test_group_order_and_activations():
    assert [g.name for g in channel_groups(build("resnet8x4"))] == [
        "stem", "layer1.0.inner", "layer1.out", "layer2.0.inner", "layer2.out", "layer3.0.inner", "layer3.out"]
    merged = {g.name: g for g in channel_groups(build("resnet20"))}["layer1.out"]
    assert merged.activations == ("bn1", "layer1.0", "layer1.1", "layer1.2")
    assert merged.relu == (True, False, False, False)
    inner = {g.name: g for g in channel_groups(build("resnet20"))}["layer2.1.inner"]
    assert (inner.activations, inner.relu) == (("layer2.1.bn1",), (True,))
    block = channel_groups(build("cnn_large"))[2]
    assert (block.name, block.activations, block.relu) == ("stage2.0", ("stages.stage2.1",), (False,))


# --------------------------------------------------------------------------- pruning
def zero_dropped(model: nn.Module, keep: dict[str, list[int]]) -> nn.Module:
    """A copy of ``model`` (eval) whose dropped channels are zero after their ReLU: the BN
    weight and bias of every producer of the group set to 0 at those channels."""
    import copy

    twin = copy.deepcopy(model).eval()
    groups = {g.name: g for g in channel_groups(model)}
    state = twin.net.state_dict()
    with torch.no_grad():
        for name, kept in keep.items():
            dropped = [i for i in range(groups[name].size) if i not in kept]
            for key in groups[name].producers:
                if key.endswith((".weight", ".bias")) and state[key].dim() == 1:
                    state[key][dropped] = 0
    return twin


@pytest.mark.parametrize("name", list(SIZES))
def test_pruned_model_computes_the_original_with_dropped_channels_zeroed(name):
    model = build(name).eval()
    randomise_bn(model)
    keep = random_keep(model)
    rng = torch.get_rng_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_channels(model, keep)
    assert torch.equal(torch.get_rng_state(), rng)  # prune_channels draws nothing
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert list(pruned.state_dict()) == list(model.state_dict())
    assert pruned.model_name == model.model_name and pruned.tap_names == model.tap_names
    assert not pruned.training
    x = torch.randn(3, *SIZES[name], generator=torch.Generator().manual_seed(3))
    expected = zero_dropped(model, keep)(x)["logits"]
    got = pruned(x)
    torch.testing.assert_close(got["logits"], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model(x)["logits"], expected, atol=1e-3)  # the dropped channels did matter
    widths = {g.name: g.size for g in channel_groups(pruned)}
    assert widths == {g: len(k) for g, k in keep.items()}
    last = [g for g in channel_groups(pruned)][-1].size
    full = model(x)
    for tap in pruned.tap_names:
        if tap.startswith("stage") or tap == "last_stage":
            assert got[tap].shape[2:] == full[tap].shape[2:] and got[tap].shape[1] <= full[tap].shape[1]
    assert got["last_stage"].shape[1] == got["pool"].shape[1] == last
    # training mode forward and backward
    pruned.train()
    loss = F.cross_entropy(pruned(x)["logits"], torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in pruned.parameters())


def test_pruned_cnn_tiny_parameter_count_by_hand():
    model = build("cnn_tiny")
    keep = {"stage1.0": [0, 3, 5], "stage2.0": list(range(0, 32, 3)), "stage3.0": [1, 2, 40, 63]}
    k1, k2, k3 = 3, len(keep["stage2.0"]), 4
    by_hand = (1 * k1 * 9 + 2 * k1) + (k1 * k2 * 9 + 2 * k2) + (k2 * k3 * 9 + 2 * k3) + (k3 * 10 + 10)
    pruned = prune_channels(model, keep)
    assert count_params(pruned) == by_hand
    assert pruned.tap_shapes((1, 28, 28))["stage2"] == (k2, 14, 14)
    # only the named groups change
    partial = prune_channels(model, {"stage2.0": [4]})
    assert [g.size for g in channel_groups(partial)] == [16, 1, 64]


def test_prune_keeps_mode_dtype_grad_flags_and_input():
    model = build("resnet8").double().train()
    model.net.conv1.weight.requires_grad_(False)
    pruned = prune_channels(model, {"layer1.out": [0, 1, 2], "layer2.0.inner": [5]})
    assert pruned.training and pruned.net.layer2[0].bn1.training
    assert all(p.dtype == torch.float64 for p in pruned.state_dict().values() if p.is_floating_point())
    assert not pruned.net.conv1.weight.requires_grad and pruned.net.fc.weight.requires_grad
    assert pruned.net.conv1.weight.data_ptr() != model.net.conv1.weight.data_ptr()
    assert pruned.input_size == model.input_size and isinstance(pruned.net.conv1.weight, nn.Parameter)
    assert prune_channels(model.eval(), {}).training is False


def test_a_pruned_stem_keeps_the_downsample_of_the_original():
    """resnet8x4: stem 32 -> layer1 64 has a downsample; pruning both to 16 channels must keep it."""
    model = build("resnet8x4")
    pruned = prune_channels(model, {"stem": list(range(16)), "layer1.out": list(range(16))})
    assert pruned.net.layer1[0].downsample is not None
    rebuilt = build_structure(structure(pruned), num_classes=10, in_channels=3)
    assert list(rebuilt.state_dict()) == list(model.state_dict())


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("name", ["cnn_large", "resnet8x4", "resnet20"])
def test_structure_round_trip(name):
    model = build(name).eval()
    randomise_bn(model)
    pruned = prune_channels(model, random_keep(model, seed=5))
    desc = json.loads(json.dumps(structure(pruned)))  # JSON-serialisable, and read back
    assert desc["family"] == family_of(model) and desc["model"] == name
    assert desc["widths"] == {g.name: g.size for g in channel_groups(pruned)}
    rebuilt = build_structure(desc, num_classes=10, in_channels=SIZES[name][0])
    assert rebuilt.model_name == name and rebuilt.tap_names == model.tap_names
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *SIZES[name])
    assert torch.equal(rebuilt.eval()(x)["logits"], pruned(x)["logits"])


def test_structure_of_an_unpruned_model_rebuilds_it_identically():
    desc = structure(build("resnet8"))
    assert desc["arch"] == {"depth": 8, "num_filters": [16, 16, 32, 64]}
    torch.manual_seed(0)
    rebuilt = build_structure(desc, num_classes=10, in_channels=3)
    original = build("resnet8")
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), original.state_dict().values()))
    assert structure(build("cnn_large"))["arch"] == {"width": 32, "depth": 2, "stages": 3}


def test_build_structure_rejects_bad_descriptions():
    desc = structure(build("resnet8"))
    missing = dict(desc, widths={k: v for k, v in desc["widths"].items() if k != "layer2.out"})
    with pytest.raises(ValueError, match="layer2.out"):
        build_structure(missing, 10, 3)
    extra = dict(desc, widths={**desc["widths"], "stem": 8})
    with pytest.raises(ValueError, match="stem"):
        build_structure(extra, 10, 3)
    with pytest.raises(UnprunableError, match="cifar_resnet"):
        build_structure(dict(desc, family="wrn"), 10, 3)
    with pytest.raises(ValueError, match="family"):
        build_structure({"widths": {}}, 10, 3)


# --------------------------------------------------------------------------- cost and criteria
def test_count_macs_by_hand():
    model = build("cnn_tiny").train()
    by_hand = 28 * 28 * 16 * 1 * 9 + 14 * 14 * 32 * 16 * 9 + 7 * 7 * 64 * 32 * 9 + 64 * 10
    rng = torch.get_rng_state()
    assert count_macs(model, (1, 28, 28)) == by_hand == 1_919_872
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    pruned = prune_channels(model, {"stage1.0": list(range(8)), "stage3.0": [0, 1]})
    assert count_macs(pruned, (1, 28, 28)) == 28 * 28 * 8 * 9 + 14 * 14 * 32 * 8 * 9 + 7 * 7 * 2 * 32 * 9 + 2 * 10
    resnet = build("resnet20")
    assert count_macs(prune_channels(resnet, random_keep(resnet)), (3, 16, 16)) < count_macs(resnet, (3, 16, 16))


def test_l1_scores_by_hand():
    model = build("cnn_tiny")
    scores = l1_scores(model)
    weight = model.net.stages.stage2[1][0].weight.detach()
    expected = torch.stack([weight[c].abs().sum() for c in range(32)]).double()
    torch.testing.assert_close(scores["stage2.0"], expected)
    resnet = build("resnet8")
    net = resnet.net
    by_hand = (net.conv1.weight.abs().sum(dim=(1, 2, 3)) + net.layer1[0].conv2.weight.abs().sum(dim=(1, 2, 3)))
    torch.testing.assert_close(l1_scores(resnet)["layer1.out"], by_hand.detach().double())
    assert {k: v.shape[0] for k, v in l1_scores(resnet).items()} == {g.name: g.size for g in channel_groups(resnet)}


def test_activation_statistics_match_hooks():
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(4, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)]
    model = build("resnet8").train()
    randomise_bn(model)
    running = model.net.bn1.running_mean.clone()
    stats = activation_statistics(model, batches)
    assert model.training and torch.equal(model.net.bn1.running_mean, running)  # ran in eval, mode restored
    seen: dict[str, list[torch.Tensor]] = {"bn1": [], "block": [], "inner": []}
    net = model.net
    hooks = [net.bn1.register_forward_hook(lambda m, a, o: seen["bn1"].append(F.relu(o).clone())),
             net.layer1[0].register_forward_hook(lambda m, a, o: seen["block"].append(o.clone())),
             net.layer2[0].bn1.register_forward_hook(lambda m, a, o: seen["inner"].append(F.relu(o).clone()))]
    model.eval()
    with torch.no_grad():
        for x in batches:
            net(x)
    for h in hooks:
        h.remove()
    mean = {k: torch.cat(v).double().mean(dim=(0, 2, 3)) for k, v in seen.items()}
    torch.testing.assert_close(stats["layer1.out"], mean["bn1"] + mean["block"])
    torch.testing.assert_close(stats["layer2.0.inner"], mean["inner"])
    assert stats["layer1.out"].dtype == torch.float64

    cnn = build("cnn_tiny")
    xs = [torch.randn(5, 1, 28, 28, generator=g)]
    out = []
    h = cnn.net.stages.stage2[1].register_forward_hook(lambda m, a, o: out.append(o.clone()))
    with torch.no_grad():
        cnn.eval().net(xs[0])
    h.remove()
    torch.testing.assert_close(activation_statistics(cnn.train(), [(xs[0], None)])["stage2.0"],
                               out[0].double().mean(dim=(0, 2, 3)))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("keep, message", [
    ({"stage4.0": [0]}, "stage4.0"),
    ({"stage2.0": []}, "stage2.0"),
    ({"stage2.0": [0, 32]}, "stage2.0"),
    ({"stage2.0": [-1, 3]}, "stage2.0"),
    ({"stage3.0": [1, 1, 2]}, "stage3.0"),
    ({"stage3.0": [2, 1]}, "stage3.0"),
])
def test_bad_keep_names_the_group(keep, message):
    with pytest.raises(ValueError, match=message):
        prune_channels(build("cnn_tiny"), keep)


@pytest.mark.parametrize("name, family", [("wrn_16_2", "wrn"), ("tv:resnet18", "torchvision")])
def test_unprunable_families(name, family):
    model = create_model(name, num_classes=10, in_channels=3)
    for call in (family_of, channel_groups, structure, lambda m: prune_channels(m, {})):
        with pytest.raises(UnprunableError, match=rf"{family}.*'cnn', 'cifar_resnet'"):
            call(model)
    assert count_macs(model, (3, 16, 16)) > 0  # MACs work for every model


# --------------------------------------------------------------------------- unpruned models unchanged
@pytest.mark.parametrize("name", ["cnn_tiny", "cnn_large", "resnet8", "resnet8x4", "resnet20"])
def test_widths_none_and_full_widths_are_todays_model(name):
    reference = build(name, seed=11).state_dict()
    after = torch.rand(1)
    c = SIZES[name][0]
    if name.startswith("cnn"):
        width, depth = (16, 1) if name == "cnn_tiny" else (32, 2)
        full = [width * 2**i for i in range(3) for _ in range(depth)]
        builders = [lambda: build_cnn(name, width, depth, 3, 10, c, widths=None),
                    lambda: build_cnn(name, width, depth, 3, 10, c, widths=full)]
    else:
        depth, filters = {"resnet8": (8, (16, 16, 32, 64)), "resnet8x4": (8, (32, 64, 128, 256)),
                          "resnet20": (20, (16, 16, 32, 64))}[name]
        n = (depth - 2) // 6
        builders = [lambda: build_cifar_resnet(name, depth, filters, 10, c, widths=None),
                    lambda: build_cifar_resnet(name, depth, filters, 10, c, ResNetWidths.full(filters, n))]
    for make in builders:
        torch.manual_seed(11)
        state = make().state_dict()
        assert list(state) == list(reference)
        assert all(torch.equal(state[k], reference[k]) for k in state)
        assert torch.equal(torch.rand(1), after)  # the same RNG consumption


def test_widths_that_break_a_residual_stream_are_refused():
    with pytest.raises(ValueError, match="downsample"):
        build_cifar_resnet("resnet8", 8, (16, 16, 32, 64), 10, 3, ResNetWidths(8, (16, 32, 64), ((16,),) * 3))
    with pytest.raises(ValueError, match="widths"):
        build_cnn("cnn_tiny", 16, 1, 3, widths=[16, 32])


def test_pruning_twice_is_pruning_once_with_the_composed_indices():
    model = build("resnet8x4").eval()
    randomise_bn(model)
    first = {"stem": list(range(0, 32, 2)), "layer2.out": list(range(64, 128)), "layer3.0.inner": [3, 9, 100, 200]}
    second = {"stem": [1, 2, 15], "layer2.out": [0, 63], "layer3.0.inner": [1, 3]}
    twice = prune_channels(prune_channels(model, first), second)
    once = prune_channels(model, {g: [first[g][i] for i in second[g]] for g in first})
    assert all(torch.equal(a, b) for a, b in zip(twice.state_dict().values(), once.state_dict().values()))
    import numpy as np

    assert channel_groups(prune_channels(model, {"stem": np.array([0, 5])}))[0].size == 2
    assert channel_groups(prune_channels(model, {"stem": torch.tensor([0, 5, 6])}))[0].size == 3
    with pytest.raises(ValueError, match="stem"):
        prune_channels(model, {"stem": [True]})
    with pytest.raises(ValueError, match="stem"):
        prune_channels(model, {"stem": [0.5]})
