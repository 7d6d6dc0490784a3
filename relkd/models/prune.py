"""Structural filter pruning: remove channels from a model, giving smaller layers (not masks).

A *channel group* is a set of channels that must be kept or dropped together: the output
channels of one conv-BN(-ReLU), or, in a residual network, every tensor added into the same
residual stream. :func:`channel_groups` lists a model's groups with the ``state_dict`` keys
(of ``model.net``) that index them on dim 0 (producers) and dim 1 (consumers);
:func:`prune_channels` returns a new, narrower model with the chosen channels of each group
and the weights sliced from the original. :func:`structure` / :func:`build_structure`
describe and rebuild a pruned architecture (to load a pruned checkpoint), and
:func:`count_macs`, :func:`l1_scores` and :func:`activation_statistics` give the cost and
the usual importance criteria::

    model = create_model("resnet8", in_channels=3)
    scores = l1_scores(model)                                  # {group: (channels,)}
    keep = {g: sorted(s.argsort(descending=True)[: len(s) // 2].tolist()) for g, s in scores.items()}
    small = prune_channels(model, keep)                        # half the channels of every group
    twin = build_structure(structure(small), num_classes=10, in_channels=3)
    twin.load_state_dict(small.state_dict())

Families: ``cnn`` (:class:`~relkd.models.cnn.ConvNet`) and ``cifar_resnet``
(:class:`~relkd.models.cifar.CifarResNet`); the others (``wrn``, torchvision) raise
:class:`UnprunableError`. Group names:

* ``cnn``: ``stage{i}.{k}``, block ``k`` (0-based) of stage ``i`` (1-based).
* ``cifar_resnet``: ``stem`` (the stem conv's output, only when ``layer1`` starts with a
  downsample shortcut, as in resnet8x4; otherwise the stem is added into ``layer1``'s
  residual stream and belongs to ``layer1.out``), ``layer{s}.{b}.inner`` (block ``b``'s
  ``conv1`` output) and ``layer{s}.out`` (stage ``s``'s residual channels: every block's
  ``conv2``/``bn2`` and the downsample shortcut's conv/BN).
"""
from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relkd.models.cifar import CifarResNet, ResNetWidths, WideResNet, build_cifar_resnet
from relkd.models.cnn import ConvNet, build_cnn
from relkd.models.taps import TappedModel
from relkd.models.zoo import MODELS
from relkd.registry import did_you_mean

__all__ = ["UnprunableError", "ChannelGroup", "PRUNABLE", "family_of", "channel_groups", "structure",
           "build_structure", "prune_channels", "count_macs", "l1_scores", "activation_statistics"]

log = logging.getLogger(__name__)

#: The model families :func:`prune_channels` supports.
PRUNABLE = ("cnn", "cifar_resnet")
_BN = ("weight", "bias", "running_mean", "running_var")  # num_batches_tracked is per layer, not per channel


class UnprunableError(ValueError):
    """A model of a family whose channels cannot be pruned (yet): the message names it and
    lists the supported families."""


@dataclass(frozen=True)
class ChannelGroup:
    """Channels of a model that are kept or dropped together.

    ``name``: stable and readable (module docstring). ``size``: its number of channels now.
    ``producers``: ``state_dict`` keys of ``model.net`` whose dim 0 indexes the channels
    (conv weights, BN weight/bias/running_mean/running_var). ``consumers``: keys whose dim 1
    indexes them (the next convs' weights, downsample convs, ``fc.weight``).
    ``activations``: modules of ``model.net`` whose forward output carries the channels as
    the network uses them, with ``relu[i]`` telling whether ReLU must be applied to
    ``activations[i]``'s output first: a cnn block (conv-BN-ReLU) and a ResNet block are
    already post-ReLU (``False``); a ResNet ``bn1`` (the stem's or a block's, followed by an
    in-place ReLU) is hooked before its ReLU (``True``).
    """

    name: str
    size: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    activations: tuple[str, ...]
    relu: tuple[bool, ...]


def _unprunable(model: nn.Module, family: str) -> UnprunableError:
    name = getattr(model, "model_name", type(model).__name__)
    return UnprunableError(f"model {name!r} of family {family!r} cannot be pruned: supported families are "
                           + ", ".join(repr(f) for f in PRUNABLE))


def family_of(model: TappedModel) -> str:
    """``'cnn'`` or ``'cifar_resnet'``: the prunable family of ``model``, known from its
    network's class. Any other model raises :class:`UnprunableError`."""
    net = getattr(model, "net", None)
    if isinstance(net, ConvNet):
        return "cnn"
    if isinstance(net, CifarResNet):
        return "cifar_resnet"
    name = str(getattr(model, "model_name", ""))
    if isinstance(net, WideResNet):
        family = "wrn"
    elif name in MODELS:
        family = str(MODELS.get(name).property("family", default=type(net).__name__))
    elif name.startswith("tv:"):
        family = "torchvision"
    else:
        family = type(net).__name__
    raise _unprunable(model, family)


# --------------------------------------------------------------------------- groups
def _conv_bn(conv: str, bn: str) -> tuple[str, ...]:
    return (f"{conv}.weight", *(f"{bn}.{t}" for t in _BN))


def _cnn_groups(net: ConvNet) -> list[ChannelGroup]:
    blocks = [(f"stages.{stage}.{i}", block) for stage, seq in net.stages.named_children()
              for i, block in enumerate(seq) if isinstance(block, nn.Sequential)]
    depth = net.arch["depth"]
    groups = []
    for j, (where, block) in enumerate(blocks):
        consumer = f"{blocks[j + 1][0]}.0.weight" if j + 1 < len(blocks) else "fc.weight"
        groups.append(ChannelGroup(f"stage{j // depth + 1}.{j % depth}", block[0].out_channels,
                                   _conv_bn(f"{where}.0", f"{where}.1"), (consumer,), (where,), (False,)))
    return groups


def _resnet_groups(net: CifarResNet) -> list[ChannelGroup]:
    """Stem (when separate), then stage by stage: its blocks' inner groups, its residual group.

    Residual streams joined by a block without a downsample shortcut form one group (the
    stem and ``layer1`` in resnet8/20/32...), named after the stream's last stage."""
    stages = [(f"layer{s}", getattr(net, f"layer{s}")) for s in (1, 2, 3)]
    # the residual stream's segments: the stem, then each stage; a stage without a downsample joins the previous
    segments: list[dict[str, Any]] = [dict(stages=[], producers=list(_conv_bn("conv1", "bn1")), consumers=[],
                                           activations=["bn1"], relu=[True], size=net.conv1.out_channels)]
    inner: dict[str, list[ChannelGroup]] = {}
    for stage, layer in stages:
        first = layer[0]
        if first.downsample is None:
            seg = segments[-1]
            seg["consumers"].append(f"{stage}.0.conv1.weight")
        else:
            segments[-1]["consumers"] += [f"{stage}.0.conv1.weight", f"{stage}.0.downsample.0.weight"]
            seg = dict(stages=[], producers=list(_conv_bn(f"{stage}.0.downsample.0", f"{stage}.0.downsample.1")),
                       consumers=[], activations=[], relu=[], size=first.bn2.num_features)
            segments.append(seg)
        seg["stages"].append(stage)
        inner[stage] = []
        for b, block in enumerate(layer):
            where = f"{stage}.{b}"
            if b > 0:
                seg["consumers"].append(f"{where}.conv1.weight")
            seg["producers"] += _conv_bn(f"{where}.conv2", f"{where}.bn2")
            seg["activations"].append(where)
            seg["relu"].append(False)
            inner[stage].append(ChannelGroup(f"{where}.inner", block.conv1.out_channels,
                                             _conv_bn(f"{where}.conv1", f"{where}.bn1"), (f"{where}.conv2.weight",),
                                             (f"{where}.bn1",), (True,)))
    segments[-1]["consumers"].append("fc.weight")
    groups = []
    for seg in segments:
        name = f"{seg['stages'][-1]}.out" if seg["stages"] else "stem"
        group = ChannelGroup(name, seg["size"], tuple(seg["producers"]), tuple(seg["consumers"]),
                             tuple(seg["activations"]), tuple(seg["relu"]))
        if not seg["stages"]:
            groups.append(group)
        for stage in seg["stages"]:
            groups += inner[stage]
        if seg["stages"]:
            groups.append(group)
    return groups


def channel_groups(model: TappedModel) -> list[ChannelGroup]:
    """The channel groups of ``model`` in forward order (for a ResNet: the separate stem,
    then per stage its blocks' inner groups and its residual group). Raises
    :class:`UnprunableError` for a family that cannot be pruned."""
    family = family_of(model)
    return _cnn_groups(model.net) if family == "cnn" else _resnet_groups(model.net)


# --------------------------------------------------------------------------- structure
def _io(net: nn.Module) -> tuple[int, int]:
    """``(num_classes, in_channels)`` of a prunable network."""
    first = net.conv1 if isinstance(net, CifarResNet) else net.stages[0][0][0]
    return net.fc.out_features, first.in_channels


def structure(model: TappedModel) -> dict[str, Any]:
    """A JSON-serialisable description of ``model``'s architecture, pruned or not::

        {"family": "cifar_resnet", "model": "resnet8",
         "arch": {"depth": 8, "num_filters": [16, 16, 32, 64]},   # cnn: width, depth, stages
         "widths": {"layer1.0.inner": 16, "layer1.out": 16, ...}}   # {group: channels}

    :func:`build_structure` rebuilds it (the number of classes and input channels are its
    arguments)."""
    family = family_of(model)
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in model.net.arch.items()}
    return {"family": family, "model": model.model_name, "arch": arch,
            "widths": {g.name: g.size for g in channel_groups(model)}}


def _builder(family: str, name: str, arch: Mapping[str, Any]) -> Callable[..., TappedModel]:
    """``f(widths_by_group | None, num_classes, in_channels)`` building ``family``'s ``arch``."""
    if family == "cnn":
        def build_cnn_widths(widths: Mapping[str, int] | None, num_classes: int, in_channels: int) -> TappedModel:
            depth = int(arch["depth"])
            order = None if widths is None else \
                [widths[f"stage{i + 1}.{k}"] for i in range(int(arch["stages"])) for k in range(depth)]
            return build_cnn(name, int(arch["width"]), depth, int(arch["stages"]), num_classes, in_channels, order)
        return build_cnn_widths

    def build_resnet_widths(widths: Mapping[str, int] | None, num_classes: int, in_channels: int) -> TappedModel:
        depth, filters = int(arch["depth"]), tuple(int(f) for f in arch["num_filters"])
        if widths is None:
            return build_cifar_resnet(name, depth, filters, num_classes, in_channels)
        n = (depth - 2) // 6
        stages = tuple(widths[f"layer{s}.out"] for s in (1, 2, 3))
        inner = tuple(tuple(widths[f"layer{s}.{b}.inner"] for b in range(n)) for s in (1, 2, 3))
        resnet = ResNetWidths(widths.get("stem", stages[0]), stages, inner)
        return build_cifar_resnet(name, depth, filters, num_classes, in_channels, resnet)
    return build_resnet_widths


def build_structure(structure: Mapping[str, Any], num_classes: int, in_channels: int) -> TappedModel:
    """The model :func:`structure` described, freshly initialised from torch's global RNG,
    with the same ``model_name`` and taps (load the pruned ``state_dict`` into it). Raises
    ``ValueError`` for a description that does not fit (unknown family, missing or extra
    group widths), :class:`UnprunableError` for a family that cannot be pruned."""
    try:
        family, name, arch, widths = (structure[k] for k in ("family", "model", "arch", "widths"))
    except (KeyError, TypeError):
        raise ValueError("structure: expected a mapping with family, model, arch and widths "
                         f"(relkd.models.prune.structure's output), got {structure!r}") from None
    if family not in PRUNABLE:
        raise UnprunableError(f"structure of family {family!r}: supported families are "
                              + ", ".join(repr(f) for f in PRUNABLE))
    build = _builder(family, str(name), arch)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the full model's groups, to check the widths
        expected = [g.name for g in channel_groups(build(None, num_classes, in_channels))]
    if set(widths) != set(expected):
        missing, extra = [g for g in expected if g not in widths], sorted(set(widths) - set(expected))
        raise ValueError(f"structure of {name!r}: widths must give every channel group ({', '.join(expected)}); "
                         f"missing {missing}, unknown {extra}")
    model = build({k: int(v) for k, v in widths.items()}, num_classes, in_channels)
    if [g.name for g in channel_groups(model)] != expected:  # a stem width that breaks a residual stream
        raise ValueError(f"structure of {name!r}: its widths change the channel groups")
    return model


# --------------------------------------------------------------------------- pruning
def _index(value: Any) -> int:
    """``value`` as a channel index: an int or numpy integer, not a bool (TypeError otherwise)."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a channel index")
    return operator.index(value)


def _check_keep(groups: Mapping[str, ChannelGroup], keep: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    out = {}
    for name, indices in keep.items():
        if name not in groups:
            hint = did_you_mean(str(name), list(groups)) or "."
            raise ValueError(f"keep: unknown channel group {name!r}{hint} The groups: {', '.join(groups)}")
        size = groups[name].size
        values = indices.tolist() if isinstance(indices, Tensor) else list(indices)
        if not values:
            raise ValueError(f"keep[{name!r}]: keep at least one of its {size} channels")
        try:  # ints, numpy integers
            values = [_index(i) for i in values]
        except TypeError:
            raise ValueError(f"keep[{name!r}]: channel indices must be integers, got {values}") from None
        if any(i < 0 or i >= size for i in values):
            raise ValueError(f"keep[{name!r}]: channel indices must be in 0..{size - 1}, got {values}")
        if any(a >= b for a, b in zip(values, values[1:])):
            raise ValueError(f"keep[{name!r}]: channel indices must be sorted and unique, got {values}")
        out[name] = values
    return out


def prune_channels(model: TappedModel, keep: Mapping[str, Sequence[int]]) -> TappedModel:
    """A new, smaller model keeping, for each group named in ``keep``, only the channels at
    those indices (sorted, unique, at least one, in range; otherwise ``ValueError`` naming
    the group); other groups are unchanged.

    Weights, BN affine parameters and running statistics are sliced from ``model``
    (producers on dim 0, consumers on dim 1); the result has ``model``'s device, dtype,
    train/eval mode, ``requires_grad`` flags, frozen norms, ``model_name`` and taps. Its
    outputs equal ``model``'s when the dropped channels' activations are zero. ``model`` is
    not changed and the global RNG is not used."""
    family = family_of(model)
    groups = {g.name: g for g in channel_groups(model)}
    chosen = _check_keep(groups, keep)
    net = model.net
    state = net.state_dict()
    index: dict[str, list[tuple[int, list[int]]]] = {}
    for name, values in chosen.items():
        for key in groups[name].producers:
            index.setdefault(key, []).append((0, values))
        for key in groups[name].consumers:
            index.setdefault(key, []).append((1, values))
    sliced = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        for dim, values in index.get(key, ()):
            tensor = tensor.index_select(dim, torch.tensor(values, device=tensor.device))
        sliced[key] = tensor.clone()
    desc = structure(model)
    desc["widths"].update({name: len(values) for name, values in chosen.items()})
    num_classes, in_channels = _io(net)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        pruned = _builder(family, model.model_name, desc["arch"])(desc["widths"], num_classes, in_channels)
    pruned.net.load_state_dict(sliced, assign=True)
    for name, param in pruned.net.named_parameters():
        param.requires_grad_(net.get_parameter(name).requires_grad)
    pruned.input_size = model.input_size
    pruned.gray_to_rgb = model.gray_to_rgb
    pruned.frozen_norms = tuple(getattr(model, "frozen_norms", ()))
    modes = {name: m.training for name, m in model.named_modules()}
    for name, module in pruned.named_modules():
        module.training = modes.get(name, model.training)
    log.debug("pruned %s: %s", model.model_name,
              ", ".join(f"{g} {groups[g].size}->{len(v)}" for g, v in chosen.items()) or "nothing")
    return pruned


# --------------------------------------------------------------------------- cost and criteria
def _run_eval(model: TappedModel, hooks: Mapping[str, Callable[..., None]], inputs: Iterable[Tensor]) -> None:
    """Run ``model`` on each input in eval mode under no_grad with forward hooks on the named
    modules of ``model.net``; restore every module's mode and remove the hooks afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    handles = [model.net.get_submodule(name).register_forward_hook(hook) for name, hook in hooks.items()]
    model.eval()
    try:
        with torch.no_grad():
            for x in inputs:
                model(x, taps="logits")
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    return (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)


def count_macs(model: TappedModel, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of the ``Conv2d`` and ``Linear`` layers for one input of
    ``input_size`` ``(C, H, W)``: a conv counts ``output elements * in_channels / groups *
    kh * kw``, a linear layer ``in_features * out_features`` (per output row). BatchNorm,
    pooling, ReLU and residual additions are not counted (they are small and not
    multiply-accumulates). Works for any model; one forward pass on zeros in eval mode,
    which leaves the model's modes and the global RNG as they were."""
    total = [0]

    def conv(module: nn.Conv2d, args: Any, output: Tensor) -> None:
        kh, kw = module.kernel_size
        total[0] += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module: nn.Linear, args: Any, output: Tensor) -> None:
        total[0] += output.numel() * module.in_features

    hooks = {name: conv if isinstance(m, nn.Conv2d) else linear for name, m in model.net.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))}
    device, dtype = _device_dtype(model)
    with torch.random.fork_rng(devices=[]):
        _run_eval(model, hooks, [torch.zeros(1, *input_size, device=device, dtype=dtype)])
    return int(total[0])


def l1_scores(model: TappedModel) -> dict[str, Tensor]:
    """``{group: (size,) float64 CPU tensor}``: for each channel the L1 norm of its output
    filter, summed over the group's producer convolutions (Li et al. 2017, "Pruning Filters
    for Efficient ConvNets"; a residual group sums its blocks' ``conv2``, the downsample
    conv and a merged stem's conv)."""
    params = dict(model.net.named_parameters())
    scores = {}
    for group in channel_groups(model):
        total = torch.zeros(group.size, dtype=torch.float64)
        for key in group.producers:
            weight = params.get(key)
            if weight is not None and weight.dim() == 4:
                total += weight.detach().abs().sum(dim=(1, 2, 3)).to("cpu", torch.float64)
        scores[group.name] = total
    return scores


def activation_statistics(model: TappedModel, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """``{group: (size,) float64 CPU tensor}``: each channel's mean activation over samples
    and spatial positions (after ReLU where :class:`ChannelGroup` ``relu`` says), summed
    over the group's activation modules (each module's mean taken over its own positions).

    ``batches`` yields input tensors (or ``(inputs, ...)`` tuples, whose first element is
    used), moved to the model's device and dtype. Runs in eval mode under no_grad and
    restores every module's mode; accumulates in float64."""
    groups = channel_groups(model)
    sums: dict[tuple[str, str], Tensor] = {}
    counts: dict[tuple[str, str], int] = {}
    wanted: dict[str, list[tuple[str, bool]]] = {}
    for group in groups:
        for module, relu in zip(group.activations, group.relu):
            wanted.setdefault(module, []).append((group.name, relu))

    def hook_for(module_name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            # called before any in-place ReLU that follows modifies ``output``
            for group_name, relu in wanted[module_name]:
                value = (F.relu(output) if relu else output).detach().to(torch.float64)
                key = (group_name, module_name)
                sums[key] = sums.get(key, 0) + value.sum(dim=(0, *range(2, value.dim()))).cpu()
                counts[key] = counts.get(key, 0) + value.numel() // value.shape[1]
        return hook

    hooks = {name: hook_for(name) for name in wanted}
    device, dtype = _device_dtype(model)

    def inputs() -> Iterable[Tensor]:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)

    _run_eval(model, hooks, inputs())
    if not sums:
        raise ValueError("activation_statistics: batches gave no input")
    out = {}
    for group in groups:
        total = torch.zeros(group.size, dtype=torch.float64)
        for module in group.activations:
            total += sums[(group.name, module)] / counts[(group.name, module)]
        out[group.name] = total
    return out
