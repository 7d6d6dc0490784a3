"""CIFAR ResNets and Wide ResNets of the distillation literature.

The definitions follow the CRD repository (HobbitLong/RepDistiller, ``models/resnet.py``
and ``models/wrn.py``) module for module, with the same submodule names (so its
``state_dict`` keys are the same, under the wrapper's ``net.`` prefix) and the same
initialisation. Two deliberate differences:

* global average pooling is adaptive (``AdaptiveAvgPool2d(1)`` instead of ``AvgPool2d(8)``
  / ``avg_pool2d(out, 8)``): identical on 32x32 inputs, and it also works on 28x28;
* the first convolution takes ``in_channels`` inputs (3 for CIFAR, 1 for Fashion-MNIST).

Parameter counts for ``num_classes=100, in_channels=3`` (the figures the CRD paper
reports): resnet8 0.08M, resnet20 0.28M, resnet32 0.47M, resnet56 0.86M, resnet110 1.74M,
resnet8x4 1.23M, resnet32x4 7.43M, wrn_16_2 0.70M, wrn_40_1 0.57M, wrn_40_2 2.26M.

Taps (for a 32x32 input): ResNets ``stage1..3`` are ``layer1..3`` (32x32, 16x16, 8x8);
WRNs ``stage1..3`` are ``block1..3``, the raw outputs of the pre-activation groups, as
RepDistiller's ``feat[1:4]`` (its ``f3``, the ``last_stage`` that SP, AT, NST and VID read,
is ``block3``'s output before the final BN-ReLU). The BN-ReLU map that is pooled is not a
tap of its own: its global average is ``pool``.

A CIFAR ResNet also takes optional per-layer widths (:class:`ResNetWidths`): the shape of
a filter-pruned network (:mod:`relkd.models.prune`). Which blocks have a downsample
shortcut is decided by ``num_filters`` alone, so a narrowed network has exactly the
modules and ``state_dict`` keys of the full one.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relkd.models.taps import TapPoints, TappedModel
from relkd.models.zoo import MODELS

__all__ = ["CifarResNet", "ResNetWidths", "WideResNet", "build_cifar_resnet", "build_wrn"]

CIFAR_INPUT = (3, 32, 32)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN, + shortcut, ReLU.

    ``conv1`` maps ``inplanes`` to ``planes`` channels, ``conv2`` maps those to
    ``out_planes`` (default ``planes``; another value only in a pruned network).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 out_planes: int | None = None):
        super().__init__()
        out_planes = planes if out_planes is None else out_planes
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, out_planes)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + residual
        return F.relu(out)


class ResNetWidths(NamedTuple):
    """Per-layer channels of a :class:`CifarResNet` (a pruned network's shape).

    ``stem``: the stem conv's output; ``stages``: the residual (block output) channels of
    each of the three stages; ``inner``: per stage, each block's ``conv1`` output. A block
    without a downsample shortcut adds its input to its output, so their widths must agree
    (e.g. ``stem == stages[0]`` when ``layer1`` has no downsample).
    """

    stem: int
    stages: tuple[int, int, int]
    inner: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @classmethod
    def full(cls, num_filters: Sequence[int], blocks: int) -> ResNetWidths:
        """The widths of the unpruned network: ``num_filters`` with ``blocks`` blocks per stage."""
        return cls(num_filters[0], tuple(num_filters[1:4]), tuple((w,) * blocks for w in num_filters[1:4]))


def _check_widths(widths: ResNetWidths, blocks: int) -> ResNetWidths:
    flat = [widths.stem, *widths.stages, *(w for stage in widths.inner for w in stage)]
    if len(widths.stages) != 3 or len(widths.inner) != 3 or any(len(stage) != blocks for stage in widths.inner) \
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in flat):
        raise ValueError(f"widths: expected a stem, 3 stage widths and 3 x {blocks} inner widths, all positive "
                         f"integers; got {widths}")
    return ResNetWidths(widths.stem, tuple(widths.stages), tuple(tuple(stage) for stage in widths.inner))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, section 4.2) as in RepDistiller.

    ``depth = 6n + 2``; a 3x3 stem conv with ``num_filters[0]`` channels, then three
    stages of ``n`` basic blocks with ``num_filters[1:]`` channels at strides 1, 2, 2,
    global average pooling and a linear classifier.

    ``widths`` (a :class:`ResNetWidths`) narrows layers below ``num_filters`` (a pruned
    network); which blocks have a downsample shortcut still follows ``num_filters``.
    ``arch`` keeps ``depth`` and ``num_filters`` so a pruned copy can be described and rebuilt.
    """

    tap_points = TapPoints(stages=("layer1", "layer2", "layer3"), classifier="fc")

    def __init__(self, depth: int, num_filters: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3,
                 widths: ResNetWidths | None = None):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.arch = {"depth": depth, "num_filters": tuple(num_filters)}
        w = _check_widths(ResNetWidths(*widths), n) if widths is not None else ResNetWidths.full(num_filters, n)
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_channels, w.stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w.stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n, 1, w.stem, w.inner[0], w.stages[0])
        self.layer2 = self._make_layer(num_filters[2], n, 2, w.stages[0], w.inner[1], w.stages[1])
        self.layer3 = self._make_layer(num_filters[3], n, 2, w.stages[1], w.inner[2], w.stages[2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w.stages[2] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int, in_width: int, inner: Sequence[int],
                    out_width: int) -> nn.Sequential:
        """A stage of ``blocks`` blocks. ``planes`` and ``self.inplanes`` (the full widths)
        decide whether the first block has a downsample shortcut; ``in_width``, ``inner``
        and ``out_width`` are the actual channels (the full ones unless pruned)."""
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(in_width, out_width, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_width),
            )
        elif in_width != out_width:
            raise ValueError(f"widths: a stage without a downsample shortcut adds its input ({in_width} channels) "
                             f"to its output, so its width must be {in_width}, got {out_width}")
        layers = [BasicBlock(in_width, inner[0], stride, downsample, out_planes=out_width)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(out_width, inner[i], out_planes=out_width) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class WideBasicBlock(nn.Module):
    """Pre-activation wide residual block (BN-ReLU-conv-BN-ReLU-conv + shortcut)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` wide blocks; the first one changes width and stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016) as in RepDistiller: ``depth = 6n + 4``,
    widths 16, 16k, 32k, 64k, pre-activation blocks, final BN-ReLU, global pooling, linear."""

    # version 2: stage3 is block3's output (version 1 read the final BN-ReLU)
    tap_points = TapPoints(stages=("block1", "block2", "block3"), classifier="fc", version=2)

    def __init__(
        self,
        depth: int,
        widen_factor: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (16, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        self.nChannels = channels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # RepDistiller: normal(0, sqrt(2 / (k*k*out_channels))), i.e. Kaiming fan_out.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


def build_cifar_resnet(
    name: str, depth: int, num_filters: tuple[int, int, int, int], num_classes: int, in_channels: int,
    widths: ResNetWidths | None = None,
) -> TappedModel:
    """A :class:`CifarResNet` wrapped with its taps (``widths``: per-layer channels, see CifarResNet)."""
    net = CifarResNet(depth, num_filters, num_classes=num_classes, in_channels=in_channels, widths=widths)
    return TappedModel(net, net.tap_points, model_name=name, input_size=CIFAR_INPUT)


def build_wrn(name: str, depth: int, widen_factor: int, num_classes: int, in_channels: int) -> TappedModel:
    """A :class:`WideResNet` wrapped with its taps."""
    net = WideResNet(depth, widen_factor, num_classes=num_classes, in_channels=in_channels)
    return TappedModel(net, net.tap_points, model_name=name, input_size=CIFAR_INPUT)


# ---------------------------------------------------------------------- registry entries
_RESNET_DOC = """CIFAR ResNet-{depth}{suffix} (RepDistiller ``{name}``): widths {widths}, {n} basic block(s) per stage.

    Stem 3x3 conv ({w0} ch), stages at strides 1/2/2 with {w1}/{w2}/{w3} channels, global
    average pooling, linear classifier. {params} parameters for 100 classes and RGB input.
    Taps (32x32x3 input): stage1 ({w1}, 32, 32), stage2 ({w2}, 16, 16), stage3 ({w3}, 8, 8),
    last_stage = stage3, pool ({w3},), logits.
    """

_WRN_DOC = """Wide ResNet WRN-{depth}-{k} (RepDistiller ``{name}``): widths 16/{w1}/{w2}/{w3}, {n} block(s) per stage.

    Pre-activation basic blocks at strides 1/2/2, final BN-ReLU, global average pooling,
    linear classifier. {params} parameters for 100 classes and RGB input.
    Taps (32x32x3 input): stage1 ({w1}, 32, 32), stage2 ({w2}, 16, 16), stage3 ({w3}, 8, 8)
    (the groups' raw outputs, before the final BN-ReLU, as RepDistiller's features), last_stage
    = stage3, pool ({w3},), logits.
    """

#: name -> (depth, num_filters, params for 100 classes as reported by CRD)
_RESNETS: dict[str, tuple[int, tuple[int, int, int, int], str]] = {
    "resnet8": (8, (16, 16, 32, 64), "0.08M"),
    "resnet20": (20, (16, 16, 32, 64), "0.28M"),
    "resnet32": (32, (16, 16, 32, 64), "0.47M"),
    "resnet56": (56, (16, 16, 32, 64), "0.86M"),
    "resnet110": (110, (16, 16, 32, 64), "1.74M"),
    "resnet8x4": (8, (32, 64, 128, 256), "1.23M"),
    "resnet32x4": (32, (32, 64, 128, 256), "7.43M"),
}

#: name -> (depth, widen factor, params for 100 classes)
_WRNS: dict[str, tuple[int, int, str]] = {
    "wrn_16_2": (16, 2, "0.70M"),
    "wrn_40_1": (40, 1, "0.57M"),
    "wrn_40_2": (40, 2, "2.26M"),
}


def _register_resnet(name: str, depth: int, filters: tuple[int, int, int, int], params: str) -> None:
    def factory(num_classes: int = 10, in_channels: int = 1) -> TappedModel:
        return build_cifar_resnet(name, depth, filters, num_classes, in_channels)

    w0, w1, w2, w3 = filters
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = _RESNET_DOC.format(
        depth=depth, suffix="x4" if w0 == 32 else "", name=name, widths="/".join(map(str, filters)),
        n=(depth - 2) // 6, w0=w0, w1=w1, w2=w2, w3=w3, params=params,
    )
    MODELS.add(
        name, factory, family="cifar_resnet", input_size=CIFAR_INPUT, depth=depth,
        widths=filters, reference="RepDistiller models/resnet.py", params_100=params,
    )


def _register_wrn(name: str, depth: int, k: int, params: str) -> None:
    def factory(num_classes: int = 10, in_channels: int = 1) -> TappedModel:
        return build_wrn(name, depth, k, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = _WRN_DOC.format(
        depth=depth, k=k, name=name, w1=16 * k, w2=32 * k, w3=64 * k, n=(depth - 4) // 6, params=params
    )
    MODELS.add(
        name, factory, family="wrn", input_size=CIFAR_INPUT, depth=depth, widen_factor=k,
        reference="RepDistiller models/wrn.py", params_100=params,
    )


for _name, (_depth, _filters, _params) in _RESNETS.items():
    _register_resnet(_name, _depth, _filters, _params)
for _name, (_depth, _k, _params) in _WRNS.items():
    _register_wrn(_name, _depth, _k, _params)
