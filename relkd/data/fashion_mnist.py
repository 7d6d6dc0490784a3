"""Fashion-MNIST from Debian's package, a folder or the cache, in torchvision's IDX format."""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from torch import Tensor

from ..cache import atomic_write
from ..registry import Param
from .base import DATA_DIR_ENV, DATASETS, DatasetNotFoundError, RawDataset, cache_dir, env_data_dir

__all__ = ["DEBIAN_FASHION_MNIST_DIRS", "FASHION_MNIST_FILES", "find_idx_files", "materialise_idx"]

logger = logging.getLogger(__name__)

#: Where Debian's package ``dataset-fashion-mnist`` puts its files (tests may patch this).
DEBIAN_FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ----------------------------------------------------------------------------------------
# Fashion-MNIST


def find_idx_files(directory: Path) -> dict[str, Path] | None:
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
        if find_idx_files(folder) is not None:
            return "idx", folder
    return None


def materialise_idx(files: dict[str, Path], root: Path) -> None:
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
        atomic_write(target, write)


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
    files = find_idx_files(folder)
    assert files is not None
    root = _idx_cache_root(files)
    try:
        materialise_idx(files, root)
    except OSError as err:
        logger.warning("cannot write the data cache %s (%s); unpacking into a temporary folder", root, err)
        with tempfile.TemporaryDirectory(prefix="relkd-fmnist-") as tmp:
            materialise_idx(files, Path(tmp))
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
        env = env_data_dir()
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


