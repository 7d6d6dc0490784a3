"""A small parametric CNN family for 28x28 inputs (Fashion-MNIST, MNIST, KMNIST).

One implementation, :class:`ConvNet`, and three presets that differ only in parameters:

=========  =====  =====  ======  ===========  ==============
name       width  depth  stages  params (10)  MACs (28x28x1)
=========  =====  =====  ======  ===========  ==============
cnn_tiny   16     1      3       24 K         1.9 M
cnn_small  32     1      3       94 K         7.4 M
cnn_large  32     2      3       0.29 M       29 M
=========  =====  =====  ======  ===========  ==============

cnn_large is the default teacher: ``relkd teacher train --setting studies/fmnist_full.yaml``
trains it to about 92.7 % Fashion-MNIST test accuracy in about 9 minutes on 2 CPU cores
(docs/benchmarks.md).

Stage ``i`` (1-based) has ``width * 2**(i-1)`` channels and ``depth`` conv3x3-BN-ReLU
blocks; stages after the first start with a 2x2 max-pool, so a 28x28 input gives
28x28, 14x14, 7x7 feature maps. Global average pooling and a linear classifier follow.

``widths`` (optional, one output width per block) gives each block its own number of
channels: the shape of a filter-pruned network (:mod:`relkd.models.prune`), whose modules
and ``state_dict`` keys are those of the unpruned one.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from relkd.models.taps import TapPoints, TappedModel
from relkd.models.zoo import MODELS
from relkd.registry import Param

__all__ = ["ConvNet", "build_cnn"]

MNIST_INPUT = (1, 28, 28)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (no bias), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """Stages of conv-BN-ReLU blocks, 2x2 max-pool between stages, GAP, linear classifier.

    Args:
        width: channels of the first stage; stage ``i`` has ``width * 2**(i-1)``.
        depth: conv-BN-ReLU blocks per stage.
        stages: number of stages (each after the first halves the resolution).
        num_classes, in_channels: output classes and input channels.
        widths: output channels of every block, stage by stage (``stages * depth`` values),
            instead of those ``width`` gives: a pruned network's shape. ``None``: ``width``'s.

    ``arch`` keeps ``width``, ``depth`` and ``stages`` (what the constructor needs besides
    ``widths``), so a pruned copy can be described and rebuilt.
    """

    def __init__(self, width: int = 32, depth: int = 1, stages: int = 3, num_classes: int = 10, in_channels: int = 1,
                 widths: Sequence[int] | None = None):
        super().__init__()
        self.arch = {"width": width, "depth": depth, "stages": stages}
        if widths is None:
            widths = [width * 2**i for i in range(stages) for _ in range(depth)]
        widths = list(widths)
        if len(widths) != stages * depth or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                                                 for w in widths):
            raise ValueError(f"widths: expected {stages * depth} positive integers (stages * depth), got {widths}")
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i in range(stages):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for j in range(depth):
                out_channels = widths[i * depth + j]
                layers.append(conv_bn_relu(channels, out_channels))
                channels = out_channels
            blocks[f"stage{i + 1}"] = nn.Sequential(*layers)
        self.stages = nn.Sequential(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.tap_points = TapPoints(stages=tuple(f"stages.stage{i + 1}" for i in range(stages)), classifier="fc")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_cnn(
    name: str, width: int, depth: int, stages: int, num_classes: int = 10, in_channels: int = 1,
    widths: Sequence[int] | None = None,
) -> TappedModel:
    """A :class:`ConvNet` wrapped with its taps (``widths``: per-block channels, see ConvNet)."""
    net = ConvNet(width, depth, stages, num_classes=num_classes, in_channels=in_channels, widths=widths)
    return TappedModel(net, net.tap_points, model_name=name, input_size=MNIST_INPUT)


def _params(width: int, depth: int, stages: int = 3) -> list[Param]:
    return [
        Param("width", width, int, help="channels of the first stage (doubled at each later stage)", min=1),
        Param("depth", depth, int, help="conv-BN-ReLU blocks per stage", min=1),
        Param("stages", stages, int, help="number of stages; each after the first halves the resolution",
              min=1, max=5),
    ]


_COMMON = dict(family="cnn", input_size=MNIST_INPUT)


def _register_cnn(name: str, width: int, depth: int, role: str, summary: str) -> Callable[..., TappedModel]:
    """Register a ConvNet preset: a factory whose defaults are ``width`` and ``depth``."""

    def factory(num_classes: int = 10, in_channels: int = 1, width: int = width, depth: int = depth,
                stages: int = 3) -> TappedModel:
        return build_cnn(name, width, depth, stages, num_classes, in_channels)

    c = (width, 2 * width, 4 * width)
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"""{summary}

    ConvNet(width={width}, depth={depth}, stages=3): channels {c[0]}/{c[1]}/{c[2]}, {depth} conv3x3-BN-ReLU
    per stage, 2x2 max-pool between stages, GAP, linear.
    Taps (28x28x1 input): stage1 ({c[0]}, 28, 28), stage2 ({c[1]}, 14, 14), stage3 ({c[2]}, 7, 7),
    last_stage = stage3, pool ({c[2]},), logits.
    """
    MODELS.add(name, factory, params=_params(width, depth), role=role, **_COMMON)
    return factory


cnn_tiny = _register_cnn("cnn_tiny", 16, 1, "student",
                         "Tiny CNN for 28x28 inputs (~24K parameters, 1.9M MACs): a fast student.")
cnn_small = _register_cnn("cnn_small", 32, 1, "student",
                          "Small CNN for 28x28 inputs (~94K parameters, 7.4M MACs): a student.")
cnn_large = _register_cnn("cnn_large", 32, 2, "teacher",
                          "Large CNN for 28x28 inputs (~0.29M parameters, 29M MACs): the default teacher.")
