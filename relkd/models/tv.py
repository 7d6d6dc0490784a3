"""Torchvision classification models as relkd models: ``tv:<name>``.

``create_model("tv:resnet18", num_classes=10, in_channels=1)`` builds
``torchvision.models.get_model("resnet18", weights=None, num_classes=10)`` (never
downloads anything) and wraps it in a :class:`~relkd.models.taps.TappedModel`. Weights
come only from a local file: ``weights="path/to/state_dict.pt"``, read with
``torch.load(path, weights_only=True, map_location="cpu")``, or from torchvision's named
weights already in the local torch cache: ``weights="IMAGENET1K_V1"`` (or ``"DEFAULT"``) reads
``$TORCH_HOME/hub/checkpoints/<the file torchvision would download>`` (:func:`named_weights_file`)
and never downloads; when the file is absent the error names it and where it is expected.
A file whose classifier was trained for another number of classes loads everything else
(a warning says so). A 1-channel input is repeated to 3 channels. Note that torchvision's
weights expect their own input normalisation (ImageNet's mean and std), not the data's.

How the taps are found (once, at construction, with a dummy forward pass on a 64x64
input in eval mode): the network's top-level submodules are taken in execution order,
``nn.Sequential`` containers that span several resolutions (``features``,
``trunk_output``, ``layers``) are opened, and the 4-D outputs before the global pooling
are grouped into runs of equal output stride (input size / output height, rounded
to a power of two). Each run is a stage and its last module is
the stage's tap: one stage per output stride, timm's ``features_only`` convention, so a
ResNet has 5 stages (the stem at stride 2, then ``layer1..layer4``) and a MobileNet or
EfficientNet has 5 as well. The first stage is the stem (or, for VGG and AlexNet, the
first block before any pooling), which RepDistiller's feature lists hold as ``f0`` and its
multi-layer methods leave out: the every-stage presets read ``stage2..stageK``
(:attr:`~relkd.models.taps.TappedModel.body_stages`). ``pool`` is the input of the classifier (the last top-level
module, or the dropout just before it), flattened; ``logits`` is the model's output.

Supported families (every one is tested to build and give taps):
``resnet*``, ``resnext*``, ``wide_resnet*``, ``regnet_*``, ``mobilenet_v2``,
``mobilenet_v3_*``, ``efficientnet_*`` (v1 and v2), ``mnasnet*``, ``shufflenet_v2_*``,
``densenet*``, ``convnext_*``, ``vgg*``, ``alexnet``, ``googlenet`` and ``inception_v3``
(both built with ``aux_logits=False``). ``alexnet`` needs inputs of at least 63x63 and
``inception_v3`` at least 75x75 (their ``input_size`` property says 64x64 and 80x80); the
others run on 32x32.
Not supported: ``squeezenet*`` (its classifier is a convolution over an unpooled map, so
there is no (B, D) embedding) and the transformers ``vit_*``, ``swin_*``, ``maxvit_t``
(no convolutional stages).
"""
from __future__ import annotations

import functools
import logging
import math
import re
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from relkd.models.taps import TapPoints, TappedModel
from relkd.models.zoo import MODELS
from relkd.registry import CHECK_PARAMS, Entry, Param, unknown_name_message

__all__ = [
    "PREFIX",
    "SUPPORTED_FAMILIES",
    "build_torchvision",
    "discover_tap_points",
    "dynamic_entry",
    "load_weights",
    "named_weights_file",
    "supported_names",
    "torchvision_names",
]

log = logging.getLogger(__name__)

PREFIX = "tv:"
TV_INPUT = (3, 32, 32)
#: natural input size of families that cannot run on 32x32
_INPUT_SIZE: dict[str, tuple[int, int, int]] = {"alexnet": (3, 64, 64), "inception": (3, 80, 80)}
DISCOVERY_SIZES = (64, 128)

#: family -> pattern over torchvision model names.
SUPPORTED_FAMILIES: dict[str, str] = {
    "resnet": r"resnet\d+",
    "resnext": r"resnext.*",
    "wide_resnet": r"wide_resnet.*",
    "regnet": r"regnet_.*",
    "mobilenet": r"mobilenet_v[23].*",
    "efficientnet": r"efficientnet_.*",
    "mnasnet": r"mnasnet.*",
    "shufflenet": r"shufflenet_v2_.*",
    "densenet": r"densenet.*",
    "convnext": r"convnext_.*",
    "vgg": r"vgg.*",
    "alexnet": r"alexnet",
    "googlenet": r"googlenet",
    "inception": r"inception_v3",
}
UNSUPPORTED_FAMILIES: dict[str, str] = {
    r"squeezenet.*": "its classifier is a convolution over an unpooled feature map, so it has no (B, D) embedding",
    r"vit_.*|swin_.*|maxvit.*": "it is a transformer without convolutional stages",
}
#: extra keyword arguments for get_model, per family: one output, no deprecation warning.
_EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception": {"aux_logits": False, "init_weights": True},
}

TV_PARAMS = [
    Param(
        "weights",
        "",
        str,
        help="a local state_dict file (.pt/.pth/.safetensors), or the name of torchvision weights in the local "
        "torch cache (IMAGENET1K_V1, DEFAULT); empty: random init",
    )
]
#: a ``weights`` value that names torchvision weights rather than a file
_WEIGHTS_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


# ---------------------------------------------------------------------- names
@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """All torchvision classification model names (``torchvision.models.list_models``)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def family_of(tv_name: str) -> str | None:
    """The supported family of a torchvision model name, or ``None``."""
    for family, pattern in SUPPORTED_FAMILIES.items():
        if re.fullmatch(pattern, tv_name):
            return family
    return None


def input_size_of(tv_name: str) -> tuple[int, int, int]:
    """The natural input size ``(C, H, W)`` of a torchvision model: 32x32 RGB where it runs."""
    return _INPUT_SIZE.get(family_of(tv_name) or "", TV_INPUT)


def supported_names() -> list[str]:
    """``tv:<name>`` for every torchvision classification model of a supported family."""
    return [PREFIX + n for n in torchvision_names() if family_of(n) is not None]


def _split(name: str) -> str:
    tv_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    names = torchvision_names()
    if tv_name not in names:
        raise ValueError(
            unknown_name_message("torchvision model", tv_name, names)
            + f". Name one as '{PREFIX}<name>'."
        )
    if family_of(tv_name) is None:
        why = next(
            (reason for pattern, reason in UNSUPPORTED_FAMILIES.items() if re.fullmatch(pattern, tv_name)),
            "its family has not been checked to give taps",
        )
        raise ValueError(
            f"torchvision model {tv_name!r} is not supported: {why}. Supported families: "
            + ", ".join(SUPPORTED_FAMILIES)
            + f" (relkd.models.list_models('{PREFIX}*', torchvision=True) lists the models)"
        )
    return tv_name


# ---------------------------------------------------------------------- tap discovery
@dataclass
class _Record:
    order: int
    calls: int
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, Tensor) else None


def _trace(net: nn.Module, sizes: tuple[int, ...]) -> tuple[dict[nn.Module, _Record], int]:
    """Run ``net`` once in eval mode on zeros with hooks on every submodule; record each
    module's first-call order, call count and input/output shapes."""
    records: dict[nn.Module, _Record] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        rec = records.get(module)
        if rec is None:
            records[module] = _Record(len(records), 1, _shape(args[0]) if args else None, None)
        else:
            rec.calls += 1

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        records[module].out_shape = _shape(output)

    error: Exception | None = None
    was_training = net.training
    net.eval()
    try:
        for size in sizes:
            records.clear()
            handles = []
            try:
                for module in net.modules():
                    handles.append(module.register_forward_pre_hook(pre_hook))
                    handles.append(module.register_forward_hook(post_hook))
                with torch.no_grad():
                    net(torch.zeros(1, 3, size, size))
                return dict(records), size
            except RuntimeError as err:  # input too small for this architecture
                error = err
            finally:
                for handle in handles:
                    handle.remove()
    finally:
        net.train(was_training)
    raise ValueError(f"could not run a dummy forward pass at sizes {sizes}: {error}")


def _drops(shapes: list[tuple[int, ...] | None]) -> int:
    """Number of changes of spatial size along a chain of 4-D shapes."""
    sizes = [s[2:] for s in shapes if s is not None and len(s) == 4]
    return sum(1 for a, b in zip(sizes, sizes[1:]) if a != b)


def _sequence(net: nn.Module, records: Mapping[nn.Module, _Record]) -> list[tuple[str, nn.Module]]:
    """The executed top-level modules in order, opening Sequentials that span more than
    one resolution change."""

    def expand(module: nn.Module, prefix: str, force: bool) -> list[tuple[str, nn.Module]]:
        children = [(f"{prefix}{n}", c) for n, c in module.named_children() if c in records]
        children.sort(key=lambda item: records[item[1]].order)
        rec = records.get(module)
        chain = [rec.in_shape if rec else None] + [records[c].out_shape for _, c in children]
        if not force and not (isinstance(module, nn.Sequential) and _drops(chain) > 1):
            return [(prefix[:-1], module)]
        out: list[tuple[str, nn.Module]] = []
        for name, child in children:
            out += expand(child, name + ".", force=False)
        return out

    return expand(net, "", force=True)


def discover_tap_points(net: nn.Module, num_classes: int, sizes: tuple[int, ...] = DISCOVERY_SIZES) -> TapPoints:
    """Find the stages, pool and classifier of a torchvision-style classifier (see the
    module docstring). Raises ``ValueError`` when the network does not fit the pattern."""
    records, size = _trace(net, sizes)
    seq = _sequence(net, records)
    # the body: 4-D outputs up to the global pooling / the first non-4-D output
    body: list[tuple[str, nn.Module]] = []
    for name, module in seq:
        shape = records[module].out_shape
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or shape is None or len(shape) != 4:
            break
        body.append((name, module))
    if not body:
        raise ValueError("found no convolutional stage (no 4-D outputs before the pooling)")
    def stride(module: nn.Module) -> int:
        # output stride, rounded to a power of two (valid convolutions shave a few pixels)
        height = records[module].out_shape[2]
        return round(math.log2(size / max(height, 1)))

    stages: list[str] = []
    for i, (name, module) in enumerate(body):
        if i + 1 == len(body) or stride(body[i + 1][1]) != stride(module):
            if records[module].calls != 1:
                raise ValueError(f"stage module {name!r} runs {records[module].calls} times per forward")
            stages.append(name)
    # the head: the last top-level module run; the pool tap is its input (or that of the
    # dropout layers right before it)
    cls_index = len(seq) - 1
    classifier_name, classifier = seq[cls_index]
    out_shape = records[classifier].out_shape
    if out_shape != (1, num_classes):
        raise ValueError(
            f"the last module run, {classifier_name!r}, outputs {out_shape}, not logits (1, {num_classes})"
        )
    pool_index = cls_index
    while pool_index > 0 and isinstance(seq[pool_index - 1][1], nn.Dropout):
        pool_index -= 1
    pool_name, pool_module = seq[pool_index]
    in_shape = records[pool_module].in_shape
    if in_shape is None or (len(in_shape) > 2 and any(s != 1 for s in in_shape[2:])):
        raise ValueError(f"the classifier input {in_shape} is not a pooled (B, D) embedding")
    log.debug(
        "discovered taps at %dx%d: stages=%s classifier=%s pool=%s", size, size, stages, classifier_name, pool_name
    )
    return TapPoints(
        stages=tuple(stages),
        classifier=classifier_name,
        pool_input=None if pool_name == classifier_name else pool_name,
        stem=True,
    )


# ---------------------------------------------------------------------- weights
def is_weights_name(weights: str) -> bool:
    """Whether a ``weights`` value names torchvision weights (``IMAGENET1K_V1``) rather than a file."""
    return bool(_WEIGHTS_NAME.fullmatch(weights)) and not Path(weights).exists()


def named_weights_file(name: str, weights: str) -> Path:
    """The local file of torchvision's weights ``weights`` (``IMAGENET1K_V1``, ``DEFAULT``) for
    ``tv:<name>``: where ``torch.hub`` keeps what torchvision downloads
    (``torch.hub.get_dir()/checkpoints/<file name of the weights' URL>``). Nothing is downloaded:
    ``ValueError`` names the weights torchvision knows for the model, or the file expected and
    where it is expected when it is absent."""
    import torch.hub
    import torchvision

    tv_name = _split(name)
    try:
        enum = torchvision.models.get_model_weights(tv_name)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision has no named weights for {tv_name!r}; give weights a local file") from None
    known = [k for k in enum.__members__]
    if weights not in enum.__members__:
        raise ValueError(unknown_name_message(f"torchvision weights of {tv_name!r}", weights, known)
                         + " (or a local state_dict file)")
    entry = enum[weights]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(urlparse(entry.url).path).name
    if not path.is_file():
        raise ValueError(
            f"torchvision weights {tv_name}.{weights} ({entry}) are not in the local torch cache: expected "
            f"{str(path)!r} (the folder is torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it). relkd "
            f"never downloads: copy {entry.url} there from a machine that has it")
    return path


def weights_problem(name: str, weights: str) -> str | None:
    """Why ``weights`` cannot be read for ``tv:<name>`` (a missing file, unknown or absent
    named weights), or ``None``: the setting's check, before anything trains."""
    if not weights:
        return None
    if is_weights_name(weights):
        try:
            named_weights_file(name, weights)
        except ValueError as err:
            return str(err)
        return None
    if not Path(weights).is_file():
        return f"weights file {weights!r} does not exist (give a local state_dict file or torchvision weights' name)"
    return None


def load_weights(net: nn.Module, path: str | Path, classifier: str) -> list[str]:
    """Load a local state_dict file into ``net``.

    Accepts a plain state_dict, one under a ``state_dict``/``model`` key, and a relkd
    wrapper's state_dict (keys prefixed ``net.``). Tensors under ``classifier`` whose
    shapes differ (another number of classes) are skipped and logged; any other mismatch,
    missing or unexpected key raises ``ValueError``. Returns the skipped keys.
    (The file reading and matching are :mod:`relkd.models.transfer`'s, which ``init:``
    uses too.)
    """
    from relkd.models.transfer import fit_state, read_state_dict

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist (give a local state_dict file)")
    state = read_state_dict(path)
    kept, skipped = fit_state(net, state, classifier, replace_head=None, what=f"weights file {str(path)!r}")
    net.load_state_dict(kept, strict=False)
    if skipped:
        log.warning(
            "weights file %s: classifier %s has another shape (another number of classes); "
            "loaded everything else and left %s at its random initialisation",
            path, classifier, ", ".join(skipped),
        )
    else:
        log.info("loaded weights from %s", path)
    return list(skipped)


# ---------------------------------------------------------------------- building
def build_torchvision(name: str, num_classes: int = 10, in_channels: int = 1, weights: str = "") -> TappedModel:
    """Build ``tv:<name>`` (or ``<name>``) with random weights, or weights from a local file."""
    import torchvision

    tv_name = _split(name)
    if in_channels not in (1, 3):
        raise ValueError(
            f"torchvision models take RGB input; in_channels must be 1 (repeated to 3) or 3, got {in_channels}"
        )
    kwargs = dict(_EXTRA_KWARGS.get(family_of(tv_name) or "", {}))
    net = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    try:
        points = discover_tap_points(net, num_classes)
    except ValueError as err:
        raise ValueError(f"torchvision model {tv_name!r}: cannot derive taps: {err}") from None
    if weights:
        load_weights(net, named_weights_file(tv_name, weights) if is_weights_name(weights) else weights,
                     points.classifier)
    return TappedModel(net, points, model_name=PREFIX + tv_name, input_size=input_size_of(tv_name), gray_to_rgb=True)


def _factory(tv_name: str) -> Callable[..., TappedModel]:
    def factory(num_classes: int = 10, in_channels: int = 1, weights: str = "") -> TappedModel:
        return build_torchvision(tv_name, num_classes=num_classes, in_channels=in_channels, weights=weights)

    family = family_of(tv_name)
    factory.__name__ = factory.__qualname__ = tv_name
    factory.__doc__ = f"""torchvision ``{tv_name}`` ({family} family), random init or weights from a local file.

    Built with ``torchvision.models.get_model({tv_name!r}, weights=None, num_classes=...)``;
    ``weights`` is a path to a local state_dict or the name of torchvision weights in the
    local torch cache (``IMAGENET1K_V1``). A 1-channel input is repeated to RGB.
    Stages: one per output stride, found by a dummy forward pass; pool: the classifier's
    input (B, D); logits: the model's output.
    """
    return factory


def dynamic_entry(name: str) -> Entry:
    """A registry entry for ``tv:<name>`` built on the fly (not added to ``MODELS``)."""
    tv_name = _split(name)
    full = PREFIX + tv_name
    if full in MODELS:
        return MODELS.get(full)
    return Entry(
        full, _factory(tv_name), MODELS.kind, f"torchvision {tv_name}", tuple(TV_PARAMS),
        {"family": "torchvision", "tv_family": family_of(tv_name), "input_size": input_size_of(tv_name),
         CHECK_PARAMS: _params_check(tv_name)},
    )


def _params_check(tv_name: str) -> Callable[[Mapping[str, Any]], list[tuple[str, str]]]:
    """The entry's check of its parameters beyond their types: the weights can be read."""
    def check(params: Mapping[str, Any]) -> list[tuple[str, str]]:
        weights = params.get("weights")
        problem = weights_problem(tv_name, weights) if isinstance(weights, str) else None
        return [("weights", problem)] if problem else []

    return check


#: torchvision models registered up front so that they show in ``list_models()``; any
#: other supported ``tv:<name>`` resolves dynamically.
LISTED = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0")

for _tv_name in LISTED:
    MODELS.add(
        PREFIX + _tv_name, _factory(_tv_name), description=f"torchvision {_tv_name}", params=TV_PARAMS,
        family="torchvision", tv_family=family_of(_tv_name), input_size=TV_INPUT,
        **{CHECK_PARAMS: _params_check(_tv_name)},
    )
