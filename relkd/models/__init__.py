"""The model zoo: every model is built by :func:`create_model` and returns named taps.

>>> model = create_model("cnn_tiny", num_classes=10, in_channels=1)
>>> out = model(torch.randn(4, 1, 28, 28))
>>> list(out)
['stage1', 'stage2', 'stage3', 'last_stage', 'pool', 'logits']

Families (``MODELS.info(name).properties['family']``):

* ``cnn``: ``cnn_tiny``, ``cnn_small``, ``cnn_large``: one parametric CNN for 28x28 inputs
  (:mod:`relkd.models.cnn`).
* ``cifar_resnet`` / ``wrn``: the CIFAR ResNets and WRNs of the CRD repository
  (:mod:`relkd.models.cifar`).
* ``torchvision``: ``tv:<name>`` for torchvision classification models
  (:mod:`relkd.models.tv`); a few are registered for listing, any supported one resolves.
* ``timm``: ``timm:<name>`` for any timm model with feature information, timm installed
  (:mod:`relkd.models.timm_models`; ``pip install 'relkd[timm]'``).
* ``adapted:<folder>``: a ``cnn`` or ``cifar_resnet`` model pruned to a target task by
  ``relkd adapt`` (:mod:`relkd.models.adapted`, :mod:`relkd.models.prune`).

Every model's ``forward(x, taps=None)`` returns ``{tap: tensor}`` from one forward pass
(see :mod:`relkd.models.taps`): ``stage1..stageK``, ``last_stage``, ``pool``, ``logits``.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import logging
from typing import Any, Mapping, NamedTuple

import torch

from relkd.models import cnn, cifar, tv  # noqa: F401,I001  (each family registers its models, in this order)
from relkd.models import adapted, timm_models
from relkd.models.taps import TapPoints, TappedModel, count_params
from relkd.models.zoo import MODELS
from relkd.registry import Entry, Param, unknown_name_message

__all__ = [
    "MODELS",
    "TapPoints",
    "TappedModel",
    "ModelInfo",
    "create_model",
    "model_entry",
    "list_models",
    "describe_models",
    "count_params",
    "body_stages",
]

log = logging.getLogger(__name__)


def model_entry(name: str) -> Entry:
    """The registry entry of ``name``; ``tv:<name>`` resolves any supported torchvision
    classification model even when it is not registered, ``timm:<name>`` any timm model (timm
    installed) and ``adapted:<folder>`` a model relkd adapt made. Unknown names raise
    ``ValueError`` with a did-you-mean and the valid names."""
    if isinstance(name, str) and name in MODELS:
        return MODELS.get(name)
    if isinstance(name, str) and name.startswith(tv.PREFIX):
        return tv.dynamic_entry(name)
    if isinstance(name, str) and name.startswith(adapted.PREFIX):
        return adapted.dynamic_entry(name)
    if isinstance(name, str) and name.startswith(timm_models.PREFIX):
        return timm_models.dynamic_entry(name)
    raise ValueError(
        unknown_name_message("model", name, MODELS.list())
        + f"; or '{tv.PREFIX}<name>' for a torchvision classification model"
        " (relkd.models.list_models(torchvision=True) lists them)"
        f", '{timm_models.PREFIX}<name>' for a timm model"
        f", or '{adapted.PREFIX}<folder>' for a model relkd adapt made"
    )


def _check_positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, **params: Any) -> TappedModel:
    """Build model ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    ``params`` are the entry's declared parameters (``MODELS.info(name).params``), e.g.
    ``create_model("cnn_small", width=24)`` or ``create_model("tv:resnet18",
    weights="r18.pt")``. Returns a :class:`TappedModel`; weights are initialised from
    torch's global RNG (seed it with ``torch.manual_seed`` for a deterministic model).
    """
    entry = model_entry(name)
    num_classes = _check_positive_int("num_classes", num_classes)
    in_channels = _check_positive_int("in_channels", in_channels)
    resolved = entry.resolve_params(params)
    model = entry.obj(num_classes=num_classes, in_channels=in_channels, **resolved)
    log.debug("created model %s (%d parameters)", name, count_params(model))
    return model


def list_models(pattern: str = "*", *, torchvision: bool = False, timm: bool = False) -> list[str]:
    """Sorted registered model names matching a shell-style ``pattern`` (``'cnn_*'``,
    ``'resnet*'``). With ``torchvision=True`` also every supported ``tv:<name>``; with
    ``timm=True`` every ``timm:<name>`` (timm installed: ``ValueError`` saying how otherwise)."""
    names = set(MODELS.list(pattern))
    if torchvision:
        names.update(n for n in tv.supported_names() if fnmatch.fnmatchcase(n, pattern))
    if timm:
        names.update(n for n in (timm_models.PREFIX + t for t in timm_models.timm_names())
                     if fnmatch.fnmatchcase(n, pattern))
    return sorted(names)


class ModelInfo(NamedTuple):
    """One row of :func:`describe_models`.

    ``taps`` maps each tap to its shape without the batch dimension for an input of
    ``input_size`` (the model's natural input: (1, 28, 28) for ``cnn_*``, (3, 32, 32) for
    the CIFAR and torchvision models), built with 10 classes.
    """

    name: str
    description: str
    family: str
    input_size: tuple[int, ...]
    taps: dict[str, tuple[int, ...]]
    num_params: int
    params: tuple[Param, ...]


def _shape_model(name: str, in_channels: int, **params: Any) -> tuple[TappedModel, dict[str, tuple[int, ...]]]:
    """``name`` built for its shapes only, with its tap shapes at its natural input size: on the
    meta device where it can be (no memory, no initialisation cost), without touching the
    global RNG."""
    size = tuple(model_entry(name).property("input_size", params, default=(3, 32, 32)))
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=10, in_channels=in_channels, **params)
                return model, model.tap_shapes((in_channels, *size[1:]), batch_size=1)
        except (NotImplementedError, RuntimeError):  # a model whose construction reads tensor data
            model = create_model(name, num_classes=10, in_channels=in_channels, **params)
            return model, model.tap_shapes((in_channels, *size[1:]), batch_size=1)


def body_stages(name: str, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The stage taps of model ``name`` after its stem, the last named ``last_stage``
    (:attr:`TappedModel.body_stages`): the layers the every-stage presets read. Builds the
    model once per process for its shapes only (its weights, if ``params`` names a file, are
    not read)."""
    return _body_stages(name, json.dumps({k: v for k, v in (params or {}).items() if k != "weights"},
                                         sort_keys=True, default=str))


@functools.lru_cache(maxsize=None)
def _body_stages(name: str, params: str) -> tuple[str, ...]:
    resolved = json.loads(params)
    size = tuple(model_entry(name).property("input_size", resolved, default=(3, 32, 32)))
    return _shape_model(name, size[0], **resolved)[0].body_stages


@functools.lru_cache(maxsize=None)
def _describe(name: str) -> ModelInfo:
    entry = model_entry(name)
    size = tuple(entry.property("input_size", default=(3, 32, 32)))
    model, shapes = _shape_model(name, size[0])
    return ModelInfo(
        name=name,
        description=entry.description,
        family=str(entry.property("family", default="")),
        input_size=size,
        taps=shapes,
        num_params=count_params(model),
        params=entry.params,
    )


def describe_models(pattern: str = "*", *, torchvision: bool = False, timm: bool = False) -> list[ModelInfo]:
    """A :class:`ModelInfo` row per model matching ``pattern`` (name, description, family,
    natural input size, tap shapes, parameter count for 10 classes, parameters), for
    ``relkd list models``. Builds each model once, on the meta device where it can (results
    are cached per process), without touching the global RNG."""
    rows = [_describe(name) for name in list_models(pattern, torchvision=torchvision, timm=timm)]
    return [row._replace(taps=dict(row.taps)) for row in rows]  # callers may edit their copy
