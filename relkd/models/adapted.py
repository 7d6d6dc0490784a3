"""Adapted models as first-class models: ``adapted:<file>`` names a student that
``relkd adapt`` pruned to a target task (:mod:`relkd.adapt`), anywhere a model name goes::

    student:
      model: adapted:runs/adapt/model.pt      # or the folder: adapted:runs/adapt

The file is the pruned model's ``state_dict``; ``meta.json`` beside it holds its structure
(the family, the original architecture and the width of every channel group,
:func:`relkd.models.prune.structure`), its classes and input, its size and where it came
from, and the file's SHA-256. Building the model checks the hash, reads the weights with
``torch.load(weights_only=True)`` and loads them (``params: {weights: false}`` builds the
same widths from a fresh initialisation instead). Its taps are the original model's, so
every objective config applies unchanged.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from ..files import file_sha256
from ..registry import Entry, Param
from .prune import build_structure
from .taps import TappedModel
from .zoo import MODELS

__all__ = ["PREFIX", "WEIGHTS_FILE", "META_FILE", "adapted_file", "read_meta", "dynamic_entry", "load_adapted"]

PREFIX = "adapted:"
WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"

ADAPTED_PARAMS = (
    Param("weights", True, bool, help="load the adapted weights (false: the adapted widths, freshly initialised)"),
)


def adapted_file(name: str) -> Path:
    """The weights file ``adapted:<path>`` names (a folder means its ``model.pt``)."""
    path = Path(name[len(PREFIX):] if name.startswith(PREFIX) else name).expanduser()
    return path / WEIGHTS_FILE if path.is_dir() else path


@functools.lru_cache(maxsize=64)
def _meta(path: str, size: int, mtime: float) -> dict[str, Any]:
    file = Path(path)
    meta_path = file.with_name(META_FILE)
    if not meta_path.is_file():
        raise ValueError(f"{META_FILE} is missing beside {path}: an adapted model is the folder `relkd adapt --out` "
                         f"writes (model.pt and meta.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_path} is not readable JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("structure"), dict):
        raise ValueError(f"{meta_path} holds no adapted structure; it was not written by relkd adapt")
    if file_sha256(file) != meta.get("sha256"):
        raise ValueError(f"{path} does not have the SHA-256 its {META_FILE} records (truncated or altered); "
                         f"make it again with relkd adapt")
    return meta


def read_meta(name: str) -> dict[str, Any]:
    """The metadata of an adapted model (``adapted:<path>`` or the path), its file's SHA-256
    checked. Raises ``ValueError`` saying what is wrong (no file, no metadata, a hash that
    does not match)."""
    file = adapted_file(name)
    if not file.is_file():
        raise ValueError(f"no adapted model at {str(file)!r}; make one with `relkd adapt --setting S.yaml --out DIR` "
                         f"and name it {PREFIX}DIR")
    stat = file.stat()
    return dict(_meta(str(file.resolve()), stat.st_size, stat.st_mtime))


def load_adapted(name: str, num_classes: int, in_channels: int, weights: bool = True) -> TappedModel:
    """Build the adapted model ``name`` for data with ``num_classes`` classes and
    ``in_channels`` channels; with ``weights``, its own weights (which fit only its own
    classes and channels: else ``ValueError``)."""
    meta = read_meta(name)
    if weights and (meta.get("num_classes"), meta.get("in_channels")) != (num_classes, in_channels):
        raise ValueError(f"adapted model {name} was made for {meta.get('num_classes')} classes and "
                         f"{meta.get('in_channels')} input channels, the data has {num_classes} and {in_channels}; "
                         f"give params: {{weights: false}} for its widths with fresh weights, or adapt it again")
    model = build_structure(meta["structure"], num_classes, in_channels)
    if weights:
        state = torch.load(adapted_file(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


def dynamic_entry(name: str) -> Entry:
    """A registry entry for ``adapted:<path>`` (not added to ``MODELS``); ``ValueError``
    when the file or its metadata is not usable."""
    meta = read_meta(name)
    structure = meta["structure"]

    def factory(num_classes: int = 10, in_channels: int = 1, weights: bool = True) -> TappedModel:
        return load_adapted(name, num_classes, in_channels, weights)

    factory.__doc__ = (f"{structure.get('model')} adapted to its target task: {meta.get('params')} parameters, "
                       f"{meta.get('ratio_reached', 0):.0%} of the original's {meta.get('measure', 'params')}.")
    return Entry(name, factory, MODELS.kind, f"adapted {structure.get('model')}", ADAPTED_PARAMS,
                 {"family": structure.get("family", ""), "input_size": tuple(meta.get("input_size", (3, 32, 32))),
                  "adapted": True, "source_model": structure.get("model")})
