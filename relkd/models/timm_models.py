"""timm models as relkd models: ``timm:<name>`` (timm is an optional extra: ``pip install 'relkd[timm]'``).

``create_model("timm:resnet18", num_classes=10, in_channels=1)`` builds
``timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)`` (never
downloads anything) and wraps it in a :class:`~relkd.models.taps.TappedModel`. Any other
parameter goes to ``timm.create_model`` as it is (a setting's ``params:``), e.g. a small ViT
for 28x28 images::

    teacher:
      model: timm:vit_tiny_patch16_224
      params: {img_size: 28, patch_size: 4, depth: 4}

``weights`` is a local state_dict file (``.pt``/``.pth``/``.safetensors``, as timm and the
model hubs ship them), loaded as a ``tv:`` model's is (a head for another number of
classes stays at its initialisation, with a warning).

The taps come from timm's own feature information (``model.feature_info``: the module and
reduction of each stage, timm's ``features_only`` convention): ``stage1..stageK`` in its
order, ``last_stage`` the last of them, ``pool`` the classifier's input (B, D), ``logits`` the
output. A first stage at reduction 2 before the others is the stem, which the every-stage
presets leave out, as on ``tv:`` models. Convolutional networks give maps (B, C, H, W) (Swin's
channels-last maps are permuted to that); vision transformers (ViT, DeiT, EVA, BEiT, Mixer)
give their blocks' token features (B, N, D), which relation views read as the mean over
tokens (``auto``, ``avgpool``) or the class token (``cls``), and feature terms as the mean
over tokens. Refused, with the reason: models without feature information and models with
two heads (distilled DeiT).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Any, Callable, Mapping

from torch import nn

from relkd.models.taps import TapPoints, TappedModel
from relkd.models.zoo import MODELS
from relkd.registry import CHECK_PARAMS, OPEN_PARAMS, Entry, Param, did_you_mean

__all__ = ["PREFIX", "EXTRA", "installed", "timm_names", "dynamic_entry", "build_timm", "timm_tap_points",
           "status_line"]

log = logging.getLogger(__name__)

PREFIX = "timm:"
#: how to install timm with relkd
EXTRA = "pip install 'relkd[timm]'"
#: ``timm.create_model`` arguments that relkd sets itself
RESERVED = {"pretrained": "relkd never downloads weights: give params.weights a local file",
            "num_classes": "set by the dataset", "in_chans": "set by the dataset",
            "features_only": "relkd reads the taps from timm's feature information itself"}

TIMM_PARAMS = (
    Param("weights", "", str,
          help="a local state_dict file (.pt/.pth/.safetensors); empty: random init. Any other parameter "
               "goes to timm.create_model"),
)


def installed() -> bool:
    """Whether timm can be imported."""
    return importlib.util.find_spec("timm") is not None


def _timm():
    if not installed():
        raise ValueError(f"timm models need timm, which is not installed: {EXTRA}")
    import timm

    return timm


def status_line() -> str:
    """Whether timm is installed, for ``relkd list models``."""
    if not installed():
        return f"timm: not installed ({EXTRA} for timm:<name> models)"
    import timm

    return f"timm {timm.__version__}: installed; name any of its {len(timm_names())} models as {PREFIX}<name>"


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every timm model name (``timm.list_models()``)."""
    return tuple(_timm().list_models())


def _split(name: str) -> str:
    timm_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    timm = _timm()
    if not timm.is_model(timm_name.split(".")[0]):
        raise ValueError(f"unknown timm model {timm_name!r}{did_you_mean(timm_name, timm_names())} "
                         f"(timm.list_models() lists its {len(timm_names())} models; "
                         f"`relkd list models --timm --pattern 'timm:resnet*'` too)")
    return timm_name


def _input_size(timm_name: str, params: Mapping[str, Any]) -> tuple[int, int, int]:
    """The natural input ``(C, H, W)``: ``img_size`` when the parameters give one, else timm's."""
    size = params.get("img_size")
    if isinstance(size, int):
        return (3, size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (3, int(size[0]), int(size[1]))
    cfg = _timm().models.get_pretrained_cfg(timm_name.split(".")[0], allow_unregistered=True)
    return tuple(getattr(cfg, "input_size", None) or (3, 224, 224))


def timm_tap_points(net: nn.Module, timm_name: str) -> TapPoints:
    """The taps of a timm model, from its ``feature_info`` and its classifier (module docstring).
    Raises ``ValueError`` naming the model and why when it has neither."""
    info = list(getattr(net, "feature_info", None) or [])
    if not info or not all(isinstance(f, Mapping) and "module" in f for f in info):
        raise ValueError(f"timm model {timm_name!r} has no feature information (model.feature_info), so relkd "
                         f"cannot find its stages")
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
        what = "two heads (a distilled model)" if isinstance(head, tuple) else "no classifier"
        raise ValueError(f"timm model {timm_name!r} has {what}; relkd needs one classifier for the pool and "
                         f"logits taps")
    classifier = next(n for n, m in net.named_modules() if m is head)
    reductions = [f.get("reduction", 0) for f in info]
    stem = len(info) > 1 and reductions[0] <= 2 < reductions[1]
    return TapPoints(stages=tuple(f["module"] for f in info), classifier=classifier, stem=stem,
                     channels_last=getattr(net, "output_fmt", None) == "NHWC")


def build_timm(name: str, num_classes: int = 10, in_channels: int = 1, weights: str = "",
               **create: Any) -> TappedModel:
    """Build ``timm:<name>`` with random weights (or weights from a local file); ``create``
    goes to ``timm.create_model``."""
    from relkd.models.tv import load_weights

    timm_name = _split(name)
    reserved = sorted(set(create) & set(RESERVED))
    if reserved:
        key = reserved[0]
        raise ValueError(f"timm model {timm_name!r}: parameter {key!r} is not taken ({RESERVED[key]})")
    try:
        net = _timm().create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                   **create)
    except TypeError as err:
        raise ValueError(f"timm model {timm_name!r}: timm.create_model does not take these params "
                         f"({', '.join(sorted(create)) or 'none'}): {err}") from None
    points = timm_tap_points(net, timm_name)
    if weights:
        load_weights(net, weights, points.classifier)
    size = _input_size(timm_name, create)
    model = TappedModel(net, points, model_name=PREFIX + timm_name, input_size=(in_channels, *size[1:]))
    embed = getattr(net, "patch_embed", None)
    if getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_size", False):
        model.fixed_size = ("img_size", tuple(int(s) for s in embed.img_size))  # the only size it takes
    return model


def _factory(timm_name: str) -> Callable[..., TappedModel]:
    def factory(num_classes: int = 10, in_channels: int = 1, weights: str = "", **create: Any) -> TappedModel:
        return build_timm(timm_name, num_classes=num_classes, in_channels=in_channels, weights=weights, **create)

    factory.__name__ = factory.__qualname__ = timm_name.replace(".", "_")
    factory.__doc__ = f"""timm ``{timm_name}``, random init or weights from a local file.

    Built with ``timm.create_model({timm_name!r}, pretrained=False, num_classes=..., in_chans=...,
    **params)``; taps from timm's feature information.
    """
    return factory


def _params_check(timm_name: str) -> Callable[[Mapping[str, Any]], list[tuple[str, str]]]:
    def check(params: Mapping[str, Any]) -> list[tuple[str, str]]:
        from relkd.files import not_a_file

        errors = [(key, f"not taken: {RESERVED[key]}") for key in params if key in RESERVED]
        weights = params.get("weights")
        if isinstance(weights, str) and weights and (problem := not_a_file(weights)):
            errors.append(("weights", f"{problem} (give a local state_dict file)"))
        return errors

    return check


def dynamic_entry(name: str) -> Entry:
    """A registry entry for ``timm:<name>``, built on the fly (not added to ``MODELS``)."""
    timm_name = _split(name)
    return Entry(
        PREFIX + timm_name, _factory(timm_name), MODELS.kind, f"timm {timm_name}", TIMM_PARAMS,
        {"family": "timm", "input_size": lambda params: _input_size(timm_name, params),
         OPEN_PARAMS: True, CHECK_PARAMS: _params_check(timm_name)},
    )
