"""CIFAR-10 and CIFAR-100 from a local folder in torchvision's layout (pickled batches)."""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..registry import Param
from .base import DATA_DIR_ENV, DATASETS, DatasetNotFoundError, RawDataset, cache_dir, env_data_dir

__all__ = []

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    meta_key: str
    label_key: str
    url: str
    archive: str
    num_classes: int


_CIFAR10 = _CifarSpec(
    "CIFAR-10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    "label_names",
    "labels",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
    10,
)
_CIFAR100 = _CifarSpec(
    "CIFAR-100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "meta",
    "fine_label_names",
    "fine_labels",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "cifar-100-python.tar.gz",
    100,
)


def _cifar_files(spec: _CifarSpec) -> tuple[str, ...]:
    return spec.train_files + spec.test_files + (spec.meta_file,)


def _locate_cifar(spec: _CifarSpec, directory: Path) -> Path | None:
    """The root (the folder holding ``spec.folder``) if ``directory`` is that root or is
    ``spec.folder`` itself."""
    if (directory / spec.folder).is_dir():
        return directory
    if directory.name == spec.folder and directory.is_dir():
        return directory.parent
    return None


def _read_cifar_pickles(spec: _CifarSpec, root: Path, train: bool) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Read CIFAR batches in torchvision's on-disk format (pickled dicts with ``data``
    ``(N, 3072)`` uint8 rows in CHW order and a label list), without checksums."""
    import numpy as np

    folder = root / spec.folder
    data, labels = [], []
    for name in spec.train_files if train else spec.test_files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    with open(folder / spec.meta_file, "rb") as f:
        classes = tuple(pickle.load(f, encoding="latin1")[spec.meta_key])
    images = torch.from_numpy(np.concatenate(data)).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), classes


def _read_cifar(spec: _CifarSpec, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
    """Read through torchvision's CIFAR class; if its checksum check rejects the files
    (a modified or hand-made copy), read the same format directly, with a warning."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if spec is _CIFAR10 else CIFAR100
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as err:
        logger.warning(
            "%s files in %s do not match the checksums of the official release (%s); reading them anyway",
            spec.title, root / spec.folder, err,
        )
        try:
            xtr, ytr, classes = _read_cifar_pickles(spec, root, train=True)
            xte, yte, _ = _read_cifar_pickles(spec, root, train=False)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as err2:
            raise ValueError(
                f"could not read {spec.title} from {root / spec.folder}: {type(err2).__name__}: {err2}. "
                f"The files may be corrupted; download {spec.url} again and extract it."
            ) from err2
        return xtr, ytr, xte, yte, classes

    def to_tensors(ds: Any) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    xtr, ytr = to_tensors(train)
    xte, yte = to_tensors(test)
    return xtr, ytr, xte, yte, tuple(train.classes)


def _cifar_help(spec: _CifarSpec, looked: Sequence[str], problem: str, download_error: str | None) -> str:
    where = "\n".join(f"  - {place}" for place in looked) or "  (nowhere: no data_dir given and no $RELKD_DATA_DIR)"
    text = (
        f"{spec.title} was not found: {problem}. relkd looked for a folder '{spec.folder}' "
        f"(with {', '.join(_cifar_files(spec))}) in:\n{where}\n"
        "To get it: download the python version\n"
        f"  {spec.url}\n"
        f"extract it with 'tar xzf {spec.archive} -C DIR' so that DIR/{spec.folder}/ exists, then pass\n"
        f"--data-dir DIR (data_dir=DIR in Python) or set {DATA_DIR_ENV}=DIR. On a machine with internet\n"
        f"access, download=True lets torchvision fetch it into {cache_dir()}."
    )
    if download_error:
        text += f"\nThe download failed: {download_error}"
    return text


def _load_cifar(spec: _CifarSpec, data_dir: Path | None, download: bool) -> RawDataset:
    looked: list[str] = []
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        env = env_data_dir()
        candidates = ([env] if env is not None else []) + [cache_dir()]
    root = None
    for directory in candidates:
        looked.append(str(directory))
        root = _locate_cifar(spec, directory)
        if root is not None:
            break
    download_error = None
    if root is None and download:
        from torchvision.datasets import CIFAR10, CIFAR100

        cls = CIFAR10 if spec is _CIFAR10 else CIFAR100
        target = Path(data_dir) if data_dir is not None else cache_dir()
        logger.info("%s not found locally; downloading it with torchvision into %s", spec.title, target)
        try:
            target.mkdir(parents=True, exist_ok=True)
            cls(str(target), train=True, download=True)
            root = target
        except Exception as err:  # noqa: BLE001
            download_error = f"{type(err).__name__}: {err}"
    if root is None:
        raise DatasetNotFoundError(_cifar_help(spec, looked, "no such folder", download_error))
    missing = [name for name in _cifar_files(spec) if not (root / spec.folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            _cifar_help(spec, [str(root / spec.folder)], f"missing file(s) {', '.join(missing)}", None)
        )
    logger.info("reading %s from %s", spec.title, root / spec.folder)
    xtr, ytr, xte, yte, classes = _read_cifar(spec, root)
    if len(classes) != spec.num_classes:
        raise ValueError(
            f"{spec.title} metadata in {root / spec.folder / spec.meta_file} names {len(classes)} classes; "
            f"expected {spec.num_classes}"
        )
    return RawDataset(xtr, ytr, xte, yte, classes, allows_flip=True, crop_padding=4, source=str(root / spec.folder))


_CIFAR_DOWNLOAD = Param("download", False, type=bool, help="download with torchvision when not found locally")


@DATASETS.register("cifar10", params=[_CIFAR_DOWNLOAD], image_size=32, channels=3, num_classes=10, flip=True,
                   source="a data_dir or $RELKD_DATA_DIR holding cifar-10-batches-py")
def _load_cifar10(data_dir: Path | None = None, download: bool = False) -> RawDataset:
    """CIFAR-10: 50000 train / 10000 test 32x32 colour images of 10 classes.

    Read from ``DIR/cifar-10-batches-py`` (torchvision's layout) where ``DIR`` is
    ``data_dir``, ``$RELKD_DATA_DIR`` or the cache."""
    return _load_cifar(_CIFAR10, data_dir, download)


@DATASETS.register("cifar100", params=[_CIFAR_DOWNLOAD], image_size=32, channels=3, num_classes=100, flip=True,
                   source="a data_dir or $RELKD_DATA_DIR holding cifar-100-python")
def _load_cifar100(data_dir: Path | None = None, download: bool = False) -> RawDataset:
    """CIFAR-100: 50000 train / 10000 test 32x32 colour images of 100 (fine) classes.

    Read from ``DIR/cifar-100-python`` (torchvision's layout) where ``DIR`` is
    ``data_dir``, ``$RELKD_DATA_DIR`` or the cache."""
    return _load_cifar(_CIFAR100, data_dir, download)


