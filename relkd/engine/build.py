"""What a run is built from: the setting's data splits (cached per process) and its models,
with their init checkpoints and frozen parts.

Init checkpoints are resolved before any run (:func:`relkd.pretrain.resolve_inits` turns a
``{pretrain: SOURCE.yaml}`` init into the checkpoint file), so building a model never
trains anything.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ..files import file_sha256, not_a_file
from ..data import DataFieldError, DatasetSplits, load_dataset
from ..fields import ConfigError
from ..models import TappedModel, create_model
from ..models.adapted import PREFIX as ADAPTED_PREFIX, read_meta
from ..models.transfer import InitError, freeze, load_init
from ..setting import ModelSpec, Setting

__all__ = ["load_data", "build_model", "init_file", "init_hint", "transfer_ident", "apply_transfer",
           "adapted_model_name"]


@functools.lru_cache(maxsize=4)
def _load_data_cached(dataset: str, data_dir: str | None, val_fraction: float, split_seed: int,
                      train_subset: int | None, params: str, classes: tuple | None = None,
                      train_per_class: int | None = None, labelled: int | None = None,
                      loader: str = "auto", max_resident_gib: float = 4.0, workers: int | None = None
                      ) -> DatasetSplits:
    try:
        return load_dataset(dataset, data_dir, val_fraction=val_fraction, split_seed=split_seed,
                            train_subset=train_subset, classes=classes, train_per_class=train_per_class,
                            labelled=labelled, loader=loader, max_resident_gib=max_resident_gib, workers=workers,
                            **json.loads(params))
    except DataFieldError as err:  # name the setting field
        raise ConfigError([f"data.{err.field}: {err}"]) from None


def load_data(setting: Setting, *, subset: bool = True) -> DatasetSplits:
    """The setting's dataset split into train/val/test (cached per process), restricted to
    ``data.classes``. ``subset=False`` ignores ``data.train_subset``,
    ``data.train_per_class`` and ``data.labelled`` (teachers train on the whole train split,
    every label)."""
    d = setting.data
    return _load_data_cached(d.dataset, d.data_dir, d.val_fraction, d.split_seed,
                             d.train_subset if subset else None, json.dumps(d.params, sort_keys=True),
                             d.classes, d.train_per_class if subset else None, d.labelled if subset else None,
                             d.loader, d.max_resident_gib, d.workers)


def init_hint(field: str) -> str:
    """How to give ``field`` (``student.init``) a checkpoint, for error messages."""
    return (f"make one with `relkd pretrain --setting SOURCE.yaml --out FILE` and give {field}: FILE, or give "
            f"{field}: {{pretrain: SOURCE.yaml}} to make it on first use (a torchvision weights file also works for "
            f"tv: models)")


def init_file(spec: ModelSpec) -> Path | None:
    """The checkpoint file ``spec.init`` names (``None`` without an init): ``path``, or the
    checkpoint its ``pretrain`` source was resolved to. Raises :class:`ConfigError` naming
    the field when the file is missing or the source was not resolved."""
    init = spec.init
    if init is None:
        return None
    field = f"{spec.role}.init"
    if init.path is None and init.checkpoint is None:
        raise ConfigError([f"{field}.pretrain: the source {init.pretrain!r} has not been trained or loaded yet; "
                           f"call relkd.pretrain.resolve_inits(setting) before running it"])
    path = Path(init.path if init.path is not None else init.checkpoint).expanduser()
    problem = not_a_file(path)
    if problem:
        which = "path" if init.path is not None else "pretrain"
        raise ConfigError([f"{field}.{which}: {problem}; {init_hint(field)}"])
    return path


def transfer_ident(spec: ModelSpec) -> dict[str, Any]:
    """What ``init`` and ``freeze`` add to a cache key: the checkpoint's SHA-256 (its
    content, not where it is) and head mode, and the frozen parts. Empty when neither is
    set, so the keys of settings without them are unchanged."""
    out: dict[str, Any] = {}
    path = init_file(spec)
    if path is not None:
        out["init"] = {"sha256": file_sha256(path), "head": spec.init.head}
    if spec.freeze:
        out["freeze"] = list(spec.freeze)
    return out


def apply_transfer(model: TappedModel, spec: ModelSpec, input_shape: Sequence[int]) -> str | None:
    """Give ``model`` (built for ``spec``) its ``init`` checkpoint and freeze its
    ``freeze`` parts; return the checkpoint's SHA-256 (``None`` without an init). Errors
    are :class:`ConfigError` naming the field."""
    sha = None
    path = init_file(spec)
    if path is not None:
        try:
            report = load_init(model, path, spec.init.head)
        except (InitError, FileNotFoundError) as err:
            raise ConfigError([f"{spec.role}.init: {err}"]) from None
        sha = report.sha256
    if spec.freeze:
        try:
            freeze(model, spec.freeze, input_shape)
        except ValueError as err:
            raise ConfigError([f"{spec.role}.freeze: {err}"]) from None
    return sha


def adapted_model_name(spec: ModelSpec) -> str:
    """The ``adapted:<file>`` name of ``spec``'s adapted student. Raises
    :class:`ConfigError` when the adaptation was not resolved before the run."""
    if spec.adapt is None or spec.adapt.checkpoint is None:
        raise ConfigError([f"{spec.role}.adapt: the adapted model has not been made or loaded yet; call "
                           f"relkd.adapt.resolve_student(setting) before running it"])
    return ADAPTED_PREFIX + spec.adapt.checkpoint


def _check_size(model: TappedModel, spec: ModelSpec, shape: Sequence[int]) -> None:
    """A network that takes one image size only (a timm ViT) against the data's: a
    :class:`ConfigError` naming the parameter that sets it, before anything trains."""
    fixed = getattr(model, "fixed_size", None)
    if fixed is None:
        return
    param, size = fixed
    if tuple(size) != tuple(shape[1:]):
        raise ConfigError([f"{spec.role}.params.{param}: {spec.model} takes {size[0]}x{size[1]} images only and "
                           f"the data are {shape[1]}x{shape[2]}: set {spec.role}.params.{param}: {shape[1]}"])


def build_model(spec: ModelSpec, data: DatasetSplits, seed: int, device: torch.device) -> TappedModel:
    """The model of ``spec`` for ``data``, initialised from ``seed``; with ``init``, the
    body loaded from the checkpoint (the head replaced, unless ``head: keep``) and the
    file's SHA-256 in ``model.init_sha256``; with ``adapt``, the adapted model (its own
    weights, head included: it was fine-tuned on these classes); with ``freeze``, those
    parts frozen."""
    torch.manual_seed(seed)
    shape = tuple(data.train_images.shape[1:])
    if spec.adapt is not None:  # its init is already in its weights: only freeze is left to apply
        name = adapted_model_name(spec)
        model = create_model(name, num_classes=data.num_classes, in_channels=data.in_channels)
        model.init_sha256 = read_meta(name)["sha256"]  # the file was checked against it when it was read
        if spec.freeze:
            apply_transfer(model, dataclasses.replace(spec, init=None), shape)
    else:
        model = create_model(spec.model, num_classes=data.num_classes, in_channels=data.in_channels, **spec.params)
        _check_size(model, spec, shape)
        if spec.init is not None or spec.freeze:
            model.init_sha256 = apply_transfer(model, spec, shape)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model
