"""The ground of relkd.data: the dataset registry, its errors, where datasets are looked for, and
what a dataset loader returns."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch import Tensor

from .image_files import ImageFiles

from ..registry import Registry

__all__ = ["DATASETS", "DATA_DIR_ENV", "DEFAULT_DATASET", "ALIASES", "DataFieldError",
           "DatasetNotFoundError", "RawDataset", "cache_dir", "env_data_dir"]

logger = logging.getLogger(__name__)

#: Environment variable naming a directory to look for datasets in.
DATA_DIR_ENV = "RELKD_DATA_DIR"
#: The dataset :func:`load_dataset` loads when no name is given.
DEFAULT_DATASET = "fashion-mnist"
DATASETS = Registry("dataset", bind=False)

ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "image-folder": "imagefolder",
}


class DataFieldError(ValueError):
    """A bad value of one of :func:`load_dataset`'s selection arguments; ``field`` names it
    (``classes``, ``train_per_class``), so a caller can name its own setting field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files were not found. The message says where relkd looked and how to
    get the files."""


# ----------------------------------------------------------------------------------------
# Locations


def cache_dir() -> Path:
    """relkd's data cache: ``$XDG_CACHE_HOME/relkd/data``, default ``~/.cache/relkd/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "relkd" / "data"


def env_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


# ----------------------------------------------------------------------------------------
# What a dataset loader returns


@dataclass
class RawDataset:
    """What a registered dataset loader returns: the full train and test sets as
    ``uint8`` ``(N, C, H, W)`` images and ``int64`` labels, plus metadata.
    ``val_images``/``val_labels`` are set only when the data comes with its own
    validation set (``imagefolder`` with a ``val/`` folder). Images may be
    :class:`~relkd.data.image_files.ImageFiles` (read when a batch needs them); then
    ``materialise()`` returns the same data decoded into tensors (for the device-resident path)."""

    train_images: Tensor | ImageFiles
    train_labels: Tensor
    test_images: Tensor | ImageFiles
    test_labels: Tensor
    classes: tuple[str, ...]
    allows_flip: bool
    crop_padding: int
    source: str
    val_images: Tensor | ImageFiles | None = None
    val_labels: Tensor | None = None
    materialise: Optional[Callable[[], "RawDataset"]] = None


