"""Datasets, splits, device-resident batches and batch-wise augmentation.

One call loads a dataset and splits it::

    from relkd.data import load_dataset

    data = load_dataset("fashion-mnist", val_fraction=0.1, split_seed=0)
    train = data.train_loader(batch_size=256, device="cuda", seed=0)
    for epoch in range(10):
        for x, y in train.epoch(epoch):          # normalised float batches on the device
            ...
    val_acc = evaluate(model, data.eval_loader("val", device="cuda"))

Design:

* Images are held as ``uint8`` tensors ``(N, C, H, W)`` and labels as ``int64`` tensors
  ``(N,)``, moved to the training device once. There is no ``DataLoader``, no worker
  process and no PIL in the training loop.
* Augmentation (random crop with zero padding, horizontal flip where the dataset allows
  it) and normalisation run batch-wise on the device with a handful of vectorised tensor
  ops (see :func:`random_crop_flip`).
* Every random draw of an epoch (the shuffling permutation, each sample's crop offset and
  flip) comes from a ``torch.Generator`` on the CPU seeded by ``(seed, epoch)``. The same
  ``(seed, epoch)`` gives exactly the same batches on every device, and a sample's
  augmentation depends only on ``(seed, epoch, sample index)``, not on the batch size or
  the order, so a trainer can cache a teacher's outputs keyed by ``(seed, epoch, index)``.
* The validation split is carved from the training set, stratified by class, with a
  fixed ``split_seed`` (:func:`split_indices`); the test split is kept apart and only
  read when asked for (``data.eval_loader("test")``).

Datasets (``list_datasets()``): ``fashion-mnist`` (default), ``cifar10``, ``cifar100``,
``imagefolder`` (your own images) and ``synthetic`` (tiny, generated, for tests).
Where ``fashion-mnist`` is looked for, in order: an explicit ``data_dir``; the directory
in ``$RELKD_DATA_DIR``; Debian's package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``); a previous download in the cache
(``$XDG_CACHE_HOME/relkd/data``, default ``~/.cache/relkd/data``); and last a download
by torchvision into that cache.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import pickle
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from .registry import Param, Registry, unknown_name_message

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_DATASET",
    "DataFieldError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "DeviceLoader",
    "RawDataset",
    "cache_dir",
    "canonical_dataset_name",
    "list_datasets",
    "load_dataset",
    "normalize",
    "random_crop_flip",
    "resolve_classes",
    "split_indices",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a directory to look for datasets in.
DATA_DIR_ENV = "RELKD_DATA_DIR"
#: The dataset :func:`load_dataset` loads when no name is given.
DEFAULT_DATASET = "fashion-mnist"
#: Where Debian's package ``dataset-fashion-mnist`` puts its files (tests may patch this).
DEBIAN_FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

DATASETS = Registry("dataset", bind=False)

_ALIASES = {
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


def _env_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Produce ``target`` by writing a temporary file beside it and renaming it into place,
    so that a reader (or another process writing the same file) never sees it half done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------
# What a dataset loader returns


@dataclass
class RawDataset:
    """What a registered dataset loader returns: the full train and test sets as
    ``uint8`` ``(N, C, H, W)`` images and ``int64`` labels, plus metadata.
    ``val_images``/``val_labels`` are set only when the data comes with its own
    validation set (``imagefolder`` with a ``val/`` folder)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    allows_flip: bool
    crop_padding: int
    source: str
    val_images: Tensor | None = None
    val_labels: Tensor | None = None


# ----------------------------------------------------------------------------------------
# Fashion-MNIST


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files (plain or ``.gz``) directly in ``directory``."""
    found = {}
    for base in FASHION_MNIST_FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            return None
    return found


def _has_torchvision_fashion_layout(root: Path) -> bool:
    raw = root / "FashionMNIST" / "raw"
    return all((raw / base).is_file() for base in FASHION_MNIST_FILES)


def _locate_fashion_mnist(directory: Path) -> tuple[str, Path] | None:
    """``("torchvision", root)`` or ``("idx", folder)`` if ``directory`` holds Fashion-MNIST
    in torchvision's layout (``root/FashionMNIST/raw``) or as the four IDX files, directly
    or in a ``fashion-mnist`` subfolder."""
    if _has_torchvision_fashion_layout(directory):
        return "torchvision", directory
    if directory.name == "raw" and _has_torchvision_fashion_layout(directory.parent.parent):
        return "torchvision", directory.parent.parent
    for folder in (directory, directory / "fashion-mnist", directory / "FashionMNIST" / "raw"):
        if _find_idx_files(folder) is not None:
            return "idx", folder
    return None


def _materialise_idx(files: dict[str, Path], root: Path) -> None:
    """Lay the IDX files out as torchvision expects (``root/FashionMNIST/raw``, plain),
    decompressing ``.gz`` files; each file is written atomically, so two processes doing
    this at once both end with complete files."""
    raw = root / "FashionMNIST" / "raw"
    for base, src in files.items():
        target = raw / base
        if target.is_file():
            continue
        if src.suffix == ".gz":
            def write(tmp: Path, src: Path = src) -> None:
                with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout, length=1 << 20)
        else:
            def write(tmp: Path, src: Path = src) -> None:
                shutil.copyfile(src, tmp)
        _atomic_write(target, write)


def _idx_cache_root(files: dict[str, Path]) -> Path:
    """A cache folder keyed by the source files' paths, sizes and modification times, so a
    changed or different source never reads a stale copy."""
    h = hashlib.sha256()
    for base in FASHION_MNIST_FILES:
        path = files[base].resolve()
        st = path.stat()
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return cache_dir() / "fashion-mnist" / h.hexdigest()[:16]


def _read_torchvision_fashion(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
    from torchvision.datasets import FashionMNIST

    try:
        train = FashionMNIST(str(root), train=True, download=False)
        test = FashionMNIST(str(root), train=False, download=False)
    except (RuntimeError, ValueError, TypeError, AssertionError, OSError) as err:
        raise ValueError(
            f"could not read Fashion-MNIST from {root / 'FashionMNIST' / 'raw'}: {err}. "
            "The files may be truncated or not IDX files; delete them and get them again."
        ) from err
    return (
        train.data.unsqueeze(1).contiguous(),
        train.targets.long(),
        test.data.unsqueeze(1).contiguous(),
        test.targets.long(),
        tuple(train.classes),
    )


def _fashion_from_idx(folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
    files = _find_idx_files(folder)
    assert files is not None
    root = _idx_cache_root(files)
    try:
        _materialise_idx(files, root)
    except OSError as err:
        logger.warning("cannot write the data cache %s (%s); unpacking into a temporary folder", root, err)
        with tempfile.TemporaryDirectory(prefix="relkd-fmnist-") as tmp:
            _materialise_idx(files, Path(tmp))
            return _read_torchvision_fashion(Path(tmp))
    return _read_torchvision_fashion(root)


def _download_fashion_mnist(cache: Path) -> None:
    """torchvision's download into a private temporary folder, then one rename into the
    cache, so that two processes downloading at once never leave a half-written folder."""
    from torchvision.datasets import FashionMNIST

    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
    try:
        FashionMNIST(str(tmp), train=True, download=True)
        try:
            os.rename(tmp / "FashionMNIST", cache / "FashionMNIST")
        except OSError:
            if not _has_torchvision_fashion_layout(cache):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fashion_mnist_help(looked: Sequence[str], download_error: str | None, explicit: bool) -> str:
    where = "\n".join(f"  - {place}" for place in looked) or "  (nowhere)"
    files = ", ".join(f"{b}[.gz]" for b in FASHION_MNIST_FILES)
    text = (
        "Fashion-MNIST was not found. relkd looked in:\n"
        f"{where}\n"
        "To get it, do one of:\n"
        "  - install Debian's package: sudo apt-get install dataset-fashion-mnist\n"
        f"    (it puts the files in {DEBIAN_FASHION_MNIST_DIRS[0]});\n"
        f"  - put the four IDX files ({files}) in a directory DIR and pass --data-dir DIR\n"
        f"    (data_dir=DIR in Python) or set {DATA_DIR_ENV}=DIR;\n"
        + (
            "  - or leave out data_dir so that relkd also looks in the default places and, with\n"
            "    internet access, downloads it."
            if explicit
            else f"  - on a machine with internet access, let torchvision download it into {cache_dir()}\n"
            "    (download=True, the default)."
        )
    )
    if download_error:
        text += f"\nThe download failed: {download_error}"
    return text


@DATASETS.register(
    "fashion-mnist",
    params=[
        Param("download", True, type=bool, help="download with torchvision when no local copy is found"),
    ],
    image_size=28,
    channels=1,
    num_classes=10,
    flip=True,
    source="Debian's dataset-fashion-mnist, a data_dir, or torchvision's download",
)
def _load_fashion_mnist(data_dir: Path | None = None, download: bool = True) -> RawDataset:
    """Fashion-MNIST: 60000 train / 10000 test 28x28 grey images of 10 clothing classes.

    Looked for in an explicit ``data_dir`` (only there, if given), ``$RELKD_DATA_DIR``,
    Debian's ``/usr/share/datasets/fashion-mnist``, the cache, and last downloaded.
    A directory may hold torchvision's layout (``DIR/FashionMNIST/raw/*-ubyte``) or the
    four IDX files (plain or ``.gz``) directly or in ``DIR/fashion-mnist/``.
    """
    looked: list[str] = []
    candidates: list[tuple[Path, str]] = []
    if data_dir is not None:
        candidates.append((Path(data_dir), "data_dir"))
    else:
        env = _env_data_dir()
        if env is not None:
            candidates.append((env, f"${DATA_DIR_ENV}"))
        candidates.extend((d, "Debian's dataset-fashion-mnist") for d in DEBIAN_FASHION_MNIST_DIRS)
        candidates.append((cache_dir(), "relkd's cache"))

    found = None
    for directory, what in candidates:
        looked.append(f"{directory} ({what})")
        found = _locate_fashion_mnist(directory)
        if found is not None:
            break
        logger.debug("Fashion-MNIST not in %s (%s)", directory, what)

    download_error = None
    if found is None and data_dir is None and download:
        logger.info("Fashion-MNIST not found locally; downloading it with torchvision into %s", cache_dir())
        try:
            _download_fashion_mnist(cache_dir())
            found = ("torchvision", cache_dir())
        except Exception as err:  # noqa: BLE001 - any failure of the download is reported the same way
            download_error = f"{type(err).__name__}: {err}"
    if found is None:
        raise DatasetNotFoundError(_fashion_mnist_help(looked, download_error, explicit=data_dir is not None))

    kind, where = found
    logger.info("reading Fashion-MNIST from %s", where)
    if kind == "torchvision":
        xtr, ytr, xte, yte, classes = _read_torchvision_fashion(where)
    else:
        xtr, ytr, xte, yte, classes = _fashion_from_idx(where)
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.shape[1:] != (1, 28, 28) or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"Fashion-MNIST {split} files in {where} hold images of shape {tuple(x.shape)} and "
                f"{y.shape[0]} labels; expected N x 28 x 28 images and N labels"
            )
    return RawDataset(xtr, ytr, xte, yte, classes, allows_flip=True, crop_padding=2, source=str(where))


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
        env = _env_data_dir()
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


# ----------------------------------------------------------------------------------------
# Image folders


def _imagefolder_help(root: Path | None, problem: str) -> str:
    return (
        f"imagefolder: {problem}. Expected layout:\n"
        "  ROOT/train/<class>/*.png|jpg|...   (required)\n"
        "  ROOT/test/<class>/*                (required)\n"
        "  ROOT/val/<class>/*                 (optional; otherwise carved from train)\n"
        f"Pass the root as --data-dir ROOT (data_dir=ROOT in Python) or set {DATA_DIR_ENV}=ROOT"
        + (f" (got {root})." if root is not None else ".")
    )


def _read_image(path: str, image_size: int, channels: int) -> Tensor:
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        img = TF.resize(img, image_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, [image_size, image_size])
        return TF.pil_to_tensor(img)


def _read_folder(folder: Path, class_to_idx: dict[str, int], image_size: int, channels: int,
                 allow_empty: bool) -> tuple[Tensor, Tensor]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(_imagefolder_help(folder.parent, f"in {folder}: {err}")) from None
    if not samples:
        return (torch.empty(0, channels, image_size, image_size, dtype=torch.uint8),
                torch.empty(0, dtype=torch.int64))
    paths = [p for p, _ in samples]
    workers = min(8, os.cpu_count() or 1, len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: _read_image(p, image_size, channels), paths))
    return torch.stack(images), torch.tensor([c for _, c in samples], dtype=torch.int64)


def _folder_fingerprint(root: Path, image_size: int, channels: int) -> str:
    h = hashlib.sha256(f"v1|{root.resolve()}|{image_size}|{channels}\n".encode())
    for sub in ("train", "val", "test"):
        base = root / sub
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


@DATASETS.register(
    "imagefolder",
    params=[
        Param("image_size", 32, type=int, min=1, help="images are resized (shorter side) and centre-cropped to this"),
        Param("channels", 3, type=int, choices=(1, 3), help="1: grey, 3: RGB"),
        Param("flip", True, type=bool, help="whether horizontal flips are a valid augmentation"),
        Param("cache", True, type=bool, help="keep the decoded tensors in relkd's cache for the next run"),
    ],
    source="your own images: ROOT/train/<class>/*, ROOT/test/<class>/*, optional ROOT/val/<class>/*",
)
def _load_imagefolder(data_dir: Path | None = None, image_size: int = 32, channels: int = 3, flip: bool = True,
                      cache: bool = True) -> RawDataset:
    """Your own images in class folders, resized to ``image_size`` and read once into tensors.

    Layout ``ROOT/train/<class>/*``, ``ROOT/test/<class>/*`` and optionally
    ``ROOT/val/<class>/*`` (then used as the validation split instead of carving one from
    train). Classes are the folder names under ``train`` in sorted order. Images are
    resized so the shorter side is ``image_size`` and centre-cropped to a square."""
    root = Path(data_dir) if data_dir is not None else _env_data_dir()
    if root is None:
        raise DatasetNotFoundError(_imagefolder_help(None, "no root directory given"))
    for required in ("train", "test"):
        if not (root / required).is_dir():
            raise DatasetNotFoundError(_imagefolder_help(root, f"no folder {root / required}"))
    from torchvision.datasets.folder import find_classes

    try:
        classes, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError as err:
        raise DatasetNotFoundError(_imagefolder_help(root, str(err))) from None
    for sub in ("test", "val"):
        if (root / sub).is_dir():
            extra = sorted({e.name for e in os.scandir(root / sub) if e.is_dir()} - set(classes))
            if extra:
                raise ValueError(
                    f"imagefolder: {root / sub} has class folder(s) {', '.join(extra)} that {root / 'train'} "
                    f"lacks; the classes are taken from train: {', '.join(classes)}"
                )

    cached = None
    cache_file = None
    if cache:
        cache_file = cache_dir() / "imagefolder" / f"{_folder_fingerprint(root, image_size, channels)}.pt"
        if cache_file.is_file():
            try:
                cached = torch.load(cache_file, weights_only=True)
                logger.info("imagefolder %s: read decoded images from the cache %s", root, cache_file)
            except Exception as err:  # noqa: BLE001 - a broken cache entry is rebuilt
                logger.warning("ignoring unreadable cache file %s: %s", cache_file, err)
    if cached is None:
        logger.info("imagefolder %s: decoding images at %dx%d", root, image_size, image_size)
        cached = {}
        for sub, allow_empty in (("train", False), ("val", True), ("test", True)):
            if (root / sub).is_dir():
                cached[f"{sub}_images"], cached[f"{sub}_labels"] = _read_folder(
                    root / sub, class_to_idx, image_size, channels, allow_empty
                )
        if cache_file is not None:
            try:
                _atomic_write(cache_file, lambda tmp: torch.save(cached, tmp))
            except OSError as err:
                logger.warning("could not write the cache %s: %s", cache_file, err)
    if len(cached["test_labels"]) == 0:
        raise DatasetNotFoundError(_imagefolder_help(root, f"no images in {root / 'test'}"))
    return RawDataset(
        cached["train_images"],
        cached["train_labels"],
        cached["test_images"],
        cached["test_labels"],
        tuple(classes),
        allows_flip=flip,
        crop_padding=max(1, image_size // 8),
        source=str(root),
        val_images=cached.get("val_images"),
        val_labels=cached.get("val_labels"),
    )


# ----------------------------------------------------------------------------------------
# Synthetic


@DATASETS.register(
    "synthetic",
    params=[
        Param("num_classes", 10, type=int, min=2),
        Param("train_size", 600, type=int, min=2),
        Param("test_size", 200, type=int, min=1),
        Param("image_size", 28, type=int, min=4),
        Param("channels", 1, type=int, min=1),
        Param("noise", 0.25, type=float, min=0.0, help="std of the Gaussian pixel noise (images in [0, 1])"),
        Param("seed", 0, type=int, help="generates the class patterns and the samples"),
    ],
    flip=False,
    source="generated in memory",
)
def _load_synthetic(data_dir: Path | None = None, num_classes: int = 10, train_size: int = 600,
                    test_size: int = 200, image_size: int = 28, channels: int = 1, noise: float = 0.25,
                    seed: int = 0) -> RawDataset:
    """Tiny generated data for tests: a class-specific stripe pattern plus noise.

    Class ``k`` is a sinusoidal grating with its own orientation and frequency
    (``ceil(K/2)`` orientations x 2 frequencies, 3 and 6 cycles per image width at 28
    pixels); a sample has a random phase (position), random contrast, per-channel
    weights of its class, and Gaussian pixel noise of std ``noise`` (images in [0, 1]),
    quantised to uint8. Classes are balanced. Mirroring changes the orientation, i.e. the
    class, so flips are not allowed. The same arguments give the same bytes on every
    machine (CPU generator). A tiny CNN with global pooling reaches well above chance in a
    few epochs."""
    del data_dir
    g = torch.Generator().manual_seed(seed)
    n_orient = -(-num_classes // 2)
    k = torch.arange(num_classes, dtype=torch.float64)
    theta = torch.pi * (k // 2) / n_orient + 0.2 * (torch.rand(num_classes, generator=g, dtype=torch.float64) - 0.5)
    cycles = torch.where(k % 2 == 0, 3.0, 6.0) * image_size / 28.0
    channel_weight = 0.5 + 0.5 * torch.rand(num_classes, channels, generator=g, dtype=torch.float64)
    coords = torch.arange(image_size, dtype=torch.float64) / image_size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def draw(n: int) -> tuple[Tensor, Tensor]:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        phase = 2 * torch.pi * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
        th, cy = theta[labels].view(n, 1, 1), cycles[labels].view(n, 1, 1)
        wave = torch.cos(2 * torch.pi * cy * (xx * torch.cos(th) + yy * torch.sin(th)) + phase)
        contrast = (0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64))
        x = 0.5 + 0.5 * contrast * channel_weight[labels].view(n, channels, 1, 1) * wave.unsqueeze(1)
        x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels

    xtr, ytr = draw(train_size)
    xte, yte = draw(test_size)
    classes = tuple(f"class_{i}" for i in range(num_classes))
    return RawDataset(xtr, ytr, xte, yte, classes, allows_flip=False, crop_padding=max(1, image_size // 14),
                      source=f"synthetic(seed={seed})")


# ----------------------------------------------------------------------------------------
# Splits


def resolve_classes(classes: Sequence[int | str], names: Sequence[str]) -> tuple[int, ...]:
    """The dataset class indices of ``classes`` (indices or names of ``names``), in the
    given order. Raises :class:`DataFieldError` (naming the bad entry and the valid classes) for an
    unknown name, an index out of range, a repeated class or fewer than two classes."""
    names = tuple(names)
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise DataFieldError("classes", f"classes must be a list of class indices or names, got {classes!r}")
    valid = ", ".join(f"{i}: {n}" for i, n in enumerate(names[:12])) + (" ..." if len(names) > 12 else "")
    out: list[int] = []
    for item in classes:
        if isinstance(item, str):
            if item not in names:
                raise DataFieldError("classes", unknown_name_message("class", item, list(names)))
            index = names.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            index = item
        else:
            raise DataFieldError("classes", f"class {item!r} is not an index 0..{len(names) - 1} or a class "
                                            f"name; the classes are {valid}")
        if index in out:
            raise DataFieldError("classes", f"class {item!r} ({names[index]}) is given twice")
        out.append(index)
    if len(out) < 2:
        raise DataFieldError("classes", f"keep at least two classes, got {list(classes)!r}")
    return tuple(out)


def _keep_classes(raw: RawDataset, keep: tuple[int, ...]) -> RawDataset:
    """``raw`` restricted to the classes ``keep`` (every split), labels remapped to
    ``0..len(keep)-1`` in the order of ``keep``."""
    table = torch.full((len(raw.classes),), -1, dtype=torch.int64)
    table[torch.tensor(keep)] = torch.arange(len(keep))

    def select(images: Tensor | None, labels: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        if images is None or labels is None:
            return images, labels
        new = table[labels.to(torch.int64)]
        mask = new >= 0
        return images[mask], new[mask]

    xtr, ytr = select(raw.train_images, raw.train_labels)
    xte, yte = select(raw.test_images, raw.test_labels)
    xva, yva = select(raw.val_images, raw.val_labels)
    return dataclasses.replace(raw, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                               val_images=xva, val_labels=yva, classes=tuple(raw.classes[i] for i in keep))


def _largest_remainder(class_counts: Tensor, total: int) -> Tensor:
    """Split ``total`` over classes in proportion to ``class_counts`` (Hamilton's method:
    floors, then one more for the largest remainders; ties go to the lower class)."""
    counts = class_counts.to(torch.float64)
    n = counts.sum()
    if n == 0 or total == 0:
        return torch.zeros_like(class_counts)
    quota = counts * (total / n)
    base = quota.floor().to(torch.int64)
    left = total - int(base.sum())
    if left > 0:
        remainder = quota - base.to(torch.float64)
        order = sorted(range(len(counts)), key=lambda c: (-float(remainder[c]), c))
        for c in order[:left]:
            base[c] += 1
    return torch.minimum(base, class_counts)


def split_indices(
    labels: Tensor,
    val_fraction: float,
    split_seed: int = 0,
    train_subset: int | None = None,
    train_per_class: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Carve a stratified validation split from a training set.

    Returns ``(train_index, val_index)``: sorted, disjoint ``int64`` positions into
    ``labels``. ``val_index`` holds ``round(val_fraction * N)`` samples spread over the
    classes in proportion to their sizes (each class keeps at least one training sample).
    ``train_subset``, if given, keeps only that many training samples, drawn stratified
    too; ``train_per_class`` keeps that many of every class instead (the first
    ``train_per_class`` of each class's random order, so a larger value keeps a superset).
    The result depends only on the labels and the arguments; the validation split
    does not depend on ``train_subset``, so short trials on a subset are scored on the
    same validation samples as full ones.

    >>> y = torch.arange(100) % 4
    >>> tr, va = split_indices(y, 0.2, split_seed=0)
    >>> len(tr), len(va), torch.bincount(y[va]).tolist()
    (80, 20, [5, 5, 5, 5])
    """
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    labels = torch.as_tensor(labels).to("cpu", torch.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    n = labels.numel()
    if n == 0:
        raise ValueError("cannot split an empty training set")
    num_classes = int(labels.max()) + 1
    class_counts = torch.bincount(labels, minlength=num_classes)
    g = torch.Generator().manual_seed(int(split_seed))
    # One random order per class, drawn in class order: val is its head, train the rest.
    orders = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        orders.append(members[torch.randperm(members.numel(), generator=g)])
    val_counts = _largest_remainder(class_counts, round(val_fraction * n))
    val_counts = torch.minimum(val_counts, (class_counts - 1).clamp_min(0))
    val = [order[: int(k)] for order, k in zip(orders, val_counts)]
    pool = [order[int(k):] for order, k in zip(orders, val_counts)]
    if train_subset is not None:
        pool_size = sum(p.numel() for p in pool)
        if isinstance(train_subset, bool) or not isinstance(train_subset, int) or train_subset < 1:
            raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")
        if train_subset > pool_size:
            raise ValueError(
                f"train_subset={train_subset} is more than the {pool_size} training samples left after carving "
                f"the validation split; use at most {pool_size}, or None for all of them"
            )
        keep = _largest_remainder(torch.tensor([p.numel() for p in pool]), train_subset)
        pool = [p[: int(k)] for p, k in zip(pool, keep)]
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, int) or train_per_class < 1:
            raise DataFieldError("train_per_class",
                                 f"train_per_class must be a positive integer or None, got {train_per_class!r}")
        if train_subset is not None:
            raise DataFieldError("train_per_class", "give train_subset or train_per_class, not both")
        short = [f"class {c}: {p.numel()}" for c, p in enumerate(pool) if p.numel() < train_per_class]
        if short:
            raise DataFieldError(
                "train_per_class",
                f"train_per_class={train_per_class} is more than the training samples some classes have left "
                f"after carving the validation split ({', '.join(short[:5])}); use at most "
                f"{min(p.numel() for p in pool)}, or None for all of them"
            )
        pool = [p[:train_per_class] for p in pool]
    train_index = torch.sort(torch.cat(pool)).values
    val_index = torch.sort(torch.cat(val)).values
    return train_index, val_index


def _channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (float64 accumulation)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to("cpu", torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    if bool((std < 1e-6).any()):
        logger.warning("a channel of the training images is constant; using std 1 for it")
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ----------------------------------------------------------------------------------------
# Splits object


@dataclass(eq=False)
class DatasetSplits:
    """A dataset split into train / val / test, as ``uint8`` ``(N, C, H, W)`` images and
    ``int64`` labels, with what a trainer needs to know about it.

    ``mean``/``std`` are per-channel statistics of the training pool (train + any
    train_subset's leftovers, never val or test) in [0, 1] units.
    ``train_index``/``val_index`` are the positions in the original training set the
    splits were taken from (for ``imagefolder`` with a ``val/`` folder, ``val_index``
    counts within that folder). The test split is only for final evaluation.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    allows_flip: bool
    crop_padding: int
    source: str
    train_index: Tensor
    val_index: Tensor
    val_fraction: float
    split_seed: int
    train_subset: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, repr=False)
    #: the dataset's class indices kept (``classes=``), in label order 0..k-1; None: all
    class_subset: tuple[int, ...] | None = None
    train_per_class: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images."""
        return int(self.train_images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(unknown_name_message("split", which, ["train", "val", "test"]))
        return getattr(self, f"{which}_images"), getattr(self, f"{which}_labels")

    def to(self, device: torch.device | str) -> DatasetSplits:
        """A copy with every tensor on ``device`` (tensors already there are shared)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def train_loader(
        self,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        *,
        seed: int = 0,
        augment: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> DeviceLoader:
        """A shuffling, augmenting :class:`DeviceLoader` over the train split with this
        dataset's normalisation, crop padding and flip setting."""
        return DeviceLoader(
            self.train_images, self.train_labels, batch_size, device,
            shuffle=shuffle, augment=augment, seed=seed, mean=self.mean, std=self.std,
            pad=self.crop_padding, flip=self.allows_flip, drop_last=drop_last,
        )

    def eval_loader(
        self, split: str = "val", batch_size: int = 512, device: torch.device | str | None = None
    ) -> DeviceLoader:
        """An in-order, unaugmented :class:`DeviceLoader` over ``"val"``, ``"test"`` or
        ``"train"``, normalised like training batches."""
        images, labels = self.split(split)
        return DeviceLoader(images, labels, batch_size, device, mean=self.mean, std=self.std)

    def fingerprint(self) -> str:
        """A short hash of the name, parameters, split settings and every image and label:
        equal fingerprints mean the same data in the same splits (a cache key)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            meta = (self.name, sorted(self.params.items()), self.val_fraction, self.split_seed, self.train_subset,
                    self.classes)
            # added only when set, so the fingerprints of existing settings stay as they were
            if self.class_subset is not None:
                meta += (("class_subset", self.class_subset),)
            if self.train_per_class is not None:
                meta += (("train_per_class", self.train_per_class),)
            h.update(repr(meta).encode())
            for t in (self.train_images, self.train_labels, self.val_images, self.val_labels,
                      self.test_images, self.test_labels):
                t = t.detach().to("cpu").contiguous()
                h.update(repr((tuple(t.shape), str(t.dtype))).encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def summary(self) -> str:
        """One line: name, sizes, shape, classes."""
        return (
            f"{self.name}: train {len(self.train_labels)}, val {len(self.val_labels)}, test {len(self.test_labels)}; "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes; from {self.source}"
        )

    def __repr__(self) -> str:
        return f"DatasetSplits({self.summary()})"


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the available datasets matching a wildcard pattern."""
    return DATASETS.list(pattern)


def canonical_dataset_name(name: str) -> str:
    """The registry name for ``name`` (case, ``_`` and aliases such as ``fmnist`` accepted);
    an unknown name raises ``ValueError`` with the valid names and a did-you-mean."""
    if not isinstance(name, str):
        raise ValueError(unknown_name_message("dataset", name, DATASETS.list()))
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(unknown_name_message("dataset", name, DATASETS.list()))
    return key


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_subset: int | None = None,
    classes: Sequence[int | str] | None = None,
    train_per_class: int | None = None,
    device: torch.device | str | None = None,
    **params: Any,
) -> DatasetSplits:
    """Load dataset ``name`` and split it into train / val / test.

    Args:
        name: one of :func:`list_datasets` (``fashion-mnist``, ``cifar10``, ``cifar100``,
            ``imagefolder``, ``synthetic``); case, ``_`` for ``-`` and a few aliases
            (``fmnist``, ``cifar-10``) are accepted.
        data_dir: where the files are. Given explicitly, only this directory is searched;
            otherwise ``$RELKD_DATA_DIR`` and each dataset's default places are.
        val_fraction: share of the training set held out for validation, stratified by
            class (ignored by ``imagefolder`` when a ``val/`` folder exists).
        split_seed: seed of the validation split and of ``train_subset``.
        train_subset: keep only this many training samples (stratified, deterministic in
            ``split_seed``), for short trials. The validation split is unaffected.
        classes: keep only these classes (indices or names of the dataset's classes), in
            every split; labels become 0..k-1 in the given order and ``classes`` holds
            their names. The validation split is carved from the kept classes' samples.
        train_per_class: keep this many training samples of every class (deterministic in
            ``split_seed``; the validation split is unaffected). Not together with
            ``train_subset``.
        device: move every split there (default: stay on the CPU; :class:`DeviceLoader`
            moves data to its device anyway).
        **params: the dataset's own parameters, e.g. ``download=False`` or, for
            ``imagefolder``, ``image_size=64``. ``DATASETS.info(name).params`` lists them.

    Raises:
        ValueError: unknown name or parameter (with valid names), bad split settings.
        DatasetNotFoundError: the files are missing; the message says how to get them.

    >>> data = load_dataset("synthetic", train_size=200, test_size=50)
    >>> data.summary()
    'synthetic: train 180, val 20, test 50; 1x28x28, 10 classes; from synthetic(seed=0)'
    """
    key = canonical_dataset_name(name)
    entry = DATASETS.get(key)
    resolved = entry.resolve_params(params)
    raw: RawDataset = entry.obj(data_dir=Path(data_dir).expanduser() if data_dir is not None else None, **resolved)

    ytr = raw.train_labels.to(torch.int64)
    num_classes = len(raw.classes)
    for split, y in (("train", ytr), ("test", raw.test_labels), ("val", raw.val_labels)):
        if y is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"{key}: {split} labels range over {int(y.min())}..{int(y.max())} but there are {num_classes} classes"
            )
    class_subset = None
    if classes is not None:
        class_subset = resolve_classes(classes, raw.classes)
        raw = _keep_classes(raw, class_subset)
        ytr = raw.train_labels

    if raw.val_images is not None and raw.val_labels is not None and raw.val_labels.numel():
        logger.info("%s: using the dataset's own validation set (%d samples); val_fraction is not used",
                    key, raw.val_labels.numel())
        train_index, _ = split_indices(ytr, 0.0, split_seed, train_subset, train_per_class)
        val_images, val_labels = raw.val_images, raw.val_labels.to(torch.int64)
        val_index = torch.arange(val_labels.numel())
        pool = torch.arange(ytr.numel())
    else:
        train_index, val_index = split_indices(ytr, val_fraction, split_seed, train_subset, train_per_class)
        val_images, val_labels = raw.train_images[val_index], ytr[val_index]
        subset = train_subset is not None or train_per_class is not None
        pool = split_indices(ytr, val_fraction, split_seed)[0] if subset else train_index
    mean, std = _channel_stats(raw.train_images[pool])

    splits = DatasetSplits(
        name=key,
        train_images=raw.train_images[train_index],
        train_labels=ytr[train_index],
        val_images=val_images,
        val_labels=val_labels,
        test_images=raw.test_images,
        test_labels=raw.test_labels.to(torch.int64),
        classes=tuple(raw.classes),
        mean=mean,
        std=std,
        allows_flip=raw.allows_flip,
        crop_padding=raw.crop_padding,
        source=raw.source,
        train_index=train_index,
        val_index=val_index,
        val_fraction=float(val_fraction),
        split_seed=int(split_seed),
        train_subset=train_subset,
        params=dict(resolved),
        class_subset=class_subset,
        train_per_class=train_per_class,
    )
    logger.info("loaded %s", splits.summary())
    return splits.to(device) if device is not None else splits


# ----------------------------------------------------------------------------------------
# Batch-wise augmentation and normalisation


def random_crop_flip(images: Tensor, offsets: Tensor, flips: Tensor | None, pad: int) -> Tensor:
    """Flip and crop a batch with per-sample parameters, vectorised.

    Each image is mirrored left-right where ``flips`` is true, zero-padded by ``pad`` on
    every side, and the ``H x W`` window whose top-left corner is at ``offsets[i] =
    (dy, dx)`` (each in ``[0, 2 * pad]``) is kept; ``(pad, pad)`` is the identity. Works
    on any dtype and device: the batch is padded once (together with its mirror image),
    and each output image is one contiguous chunk of the flattened padded batch (the rows
    of a window are ``W + 2 * pad`` apart), gathered with a single ``index_select`` and
    trimmed to ``W`` columns by a view. No per-sample loop, no host synchronisation.

    Args:
        images: ``(B, C, H, W)``.
        offsets: ``(B, 2)`` integer ``(dy, dx)``.
        flips: ``(B,)`` bool, or ``None`` for no flips (skips building the mirror images).
        pad: padding in pixels.

    Returns:
        A new ``(B, C, H, W)`` tensor (a view trimming a contiguous buffer; call
        ``.contiguous()`` if you need one).
    """
    b, c, h, w = images.shape
    if b == 0 or c == 0:
        return images.clone()
    hp, wp = h + 2 * pad, w + 2 * pad
    dev = images.device
    offsets = offsets.to(dev, torch.int64)
    copies = 1 if flips is None else 2
    # The window of the last image may reach 2 * pad elements past its end (the trimmed
    # columns of its last row): allocate that much slack.
    size = copies * b * c * hp * wp
    flat = images.new_zeros(size + 2 * pad)
    buf = flat[:size].view(copies * b, c, hp, wp)
    buf[:b, :, pad:pad + h, pad:pad + w] = images
    slot = torch.arange(b, device=dev)
    if flips is not None:
        buf[b:, :, pad:pad + h, pad:pad + w] = images.flip(-1)
        slot = slot + flips.to(dev, torch.int64) * b
    start = offsets[:, 0] * wp + offsets[:, 1]
    chunk = (slot.view(b, 1) * c + torch.arange(c, device=dev)) * (hp * wp) + start.view(b, 1)
    windows = flat.as_strided((flat.numel() - h * wp + 1, h * wp), (1, 1))
    return windows.index_select(0, chunk.view(-1)).view(b, c, h, wp)[..., :w]


def _norm_constants(mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(mean, dtype=torch.float64).flatten()
    s = torch.as_tensor(std, dtype=torch.float64).flatten()
    if m.numel() not in (1, channels) or s.numel() not in (1, channels):
        raise ValueError(f"mean and std need 1 or {channels} values, got {m.numel()} and {s.numel()}")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive, got {tuple(s.tolist())}")
    scale = (1.0 / (255.0 * s)).expand(channels).to(device, dtype).view(1, channels, 1, 1)
    shift = (m / s).expand(channels).to(device, dtype).view(1, channels, 1, 1)
    return scale, shift


def _apply_norm(images: Tensor, scale: Tensor, shift: Tensor, dtype: torch.dtype) -> Tensor:
    return images.to(dtype, memory_format=torch.contiguous_format).mul_(scale).sub_(shift)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
              ) -> Tensor:
    """``(images / 255 - mean) / std`` per channel, for ``uint8`` ``(B, C, H, W)`` images
    (any layout; the result is a new contiguous tensor)."""
    scale, shift = _norm_constants(mean, std, images.shape[1], images.device, dtype)
    return _apply_norm(images, scale, shift, dtype)


def _mix_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DeviceLoader:
    """Batches of a device-resident dataset, shuffled and augmented reproducibly.

    The images (``uint8 (N, C, H, W)``) and labels (``int64 (N,)``) are moved to
    ``device`` once. ``epoch(e)`` yields ``(x, y)`` batches: ``x`` float, normalised
    with ``mean``/``std`` (per channel, [0, 1] units), on ``device``.

    Randomness: the order of epoch ``e`` (if ``shuffle``) and each sample's crop offset and
    flip (if ``augment``) come from CPU generators seeded by ``(seed, e)``, so the same
    ``(seed, e)`` gives exactly the same batches, on any device. A sample's augmentation
    depends on ``(seed, e, index)`` only, not on the batch size or the order.

    Args:
        images, labels: the data.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        device: where to keep data and batches (default: where ``images`` are).
        shuffle: a new random order every epoch (else the stored order).
        augment: random crop with zero padding ``pad`` and, if ``flip``, a horizontal
            flip with probability 1/2. Nothing happens if ``pad == 0`` and not ``flip``.
        seed: the run's data seed.
        mean, std: per-channel normalisation (1 value or one per channel).
        pad, flip: the augmentation (see :func:`random_crop_flip`).
        drop_last: skip the last incomplete batch.
        dtype: floating dtype of the batches.

    >>> data = load_dataset("synthetic")
    >>> loader = data.train_loader(batch_size=64, seed=1)
    >>> x, y = next(iter(loader.epoch(0)))
    >>> x.shape, x.dtype, y.dtype
    (torch.Size([64, 1, 28, 28]), torch.float32, torch.int64)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        pad: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be 1-D with {images.shape[0]} entries, got shape {tuple(labels.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.pad = pad
        self.flip = bool(flip)
        self.drop_last = bool(drop_last)
        self.dtype = dtype
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._scale, self._shift = _norm_constants(self.mean, self.std, self.images.shape[1], self.device, dtype)

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def __len__(self) -> int:
        """Batches per epoch."""
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def augments(self) -> bool:
        """Whether batches are actually augmented (``augment`` and some padding or flips)."""
        return self.augment and (self.pad > 0 or self.flip)

    def _generator(self, epoch: int, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(_mix_seed("relkd.data", self.seed, int(epoch), stream))

    def permutation(self, epoch: int) -> Tensor:
        """The order of samples in epoch ``epoch`` (CPU ``int64``; ``arange`` if not shuffling)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=self._generator(epoch, "shuffle"))

    def batch_indices(self, epoch: int) -> list[Tensor]:
        """The sample indices of each batch of epoch ``epoch`` (CPU ``int64``)."""
        perm = self.permutation(epoch)
        return list(perm[: len(self) * self.batch_size].split(self.batch_size))

    def augmentation(self, epoch: int) -> tuple[Tensor, Tensor]:
        """Per-sample ``(offsets (N, 2), flips (N,))`` of epoch ``epoch`` (CPU), indexed by
        sample index; identity values when not augmenting."""
        n = self.num_samples
        if not self.augments:
            return torch.full((n, 2), self.pad, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
        g = self._generator(epoch, "augment")
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        if not self.flip:
            flips.zero_()
        return offsets, flips

    def epoch(self, epoch: int = 0, *, with_indices: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """Yield the batches ``(x, y)`` of epoch ``epoch`` (``(x, y, index)`` with
        ``with_indices``; ``index`` holds the sample indices, on the device)."""
        augments = self.augments
        perm = self.permutation(epoch) if self.shuffle else None
        if augments:
            offsets, flips = self.augmentation(epoch)
            if perm is not None:  # into batch order once, then slice per batch
                offsets, flips = offsets[perm], flips[perm]
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        if perm is not None:
            perm = perm.to(self.device)
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.num_samples)
            if perm is None:
                index = torch.arange(lo, hi, device=self.device)
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                index = perm[lo:hi]
                x, y = self.images.index_select(0, index), self.labels.index_select(0, index)
            if augments:
                x = random_crop_flip(x, offsets[lo:hi], flips[lo:hi] if self.flip else None, self.pad)
            x = _apply_norm(x, self._scale, self._shift, self.dtype)
            yield (x, y, index) if with_indices else (x, y)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """The batches of epoch 0 (for evaluation; use :meth:`epoch` when training)."""
        return self.epoch(0)

    def __repr__(self) -> str:
        return (
            f"DeviceLoader({self.num_samples} samples, batch_size={self.batch_size}, device={self.device}, "
            f"shuffle={self.shuffle}, augment={self.augments}, seed={self.seed})"
        )
