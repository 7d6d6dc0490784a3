"""Your own images: train/, test/ and optional val/ class folders, listed as files; decoded once and
cached as tensors for the device-resident path, read batch by batch when streamed."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from ..cache import atomic_write
from ..registry import Param
from .base import DATA_DIR_ENV, DATASETS, DatasetNotFoundError, RawDataset, cache_dir, env_data_dir
from .image_files import ImageFiles, files_signature

__all__ = []

logger = logging.getLogger(__name__)

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


def _files(folder: Path, root: Path, class_to_idx: dict[str, int], image_size: int, channels: int,
           allow_empty: bool) -> tuple[ImageFiles, Tensor]:
    """The image files of ``folder``'s class folders (by extension, in torchvision's order) and
    their labels; nothing is decoded."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
    except FileNotFoundError as err:
        raise DatasetNotFoundError(_imagefolder_help(folder.parent, f"in {folder}: {err}")) from None
    files = ImageFiles(str(root), tuple(p for p, _ in samples), image_size, channels)
    return files, torch.tensor([c for _, c in samples], dtype=torch.int64)


def _decode_all(files: ImageFiles) -> Tensor:
    """Every image of ``files`` decoded, with a few threads (PIL releases the GIL)."""
    if not len(files):
        return files.read()
    workers = min(8, os.cpu_count() or 1, len(files))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda i: files.read([i])[0], range(len(files))))
    return torch.stack(images)


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
    """Your own images in class folders, resized to ``image_size``: listed as
    :class:`~relkd.data.image_files.ImageFiles`, decoded when a batch needs them (streamed) or
    all at once into tensors cached for the next run (``materialise``, the device-resident path).

    Layout ``ROOT/train/<class>/*``, ``ROOT/test/<class>/*`` and optionally
    ``ROOT/val/<class>/*`` (then used as the validation split instead of carving one from
    train). Classes are the folder names under ``train`` in sorted order. Images are
    resized so the shorter side is ``image_size`` and centre-cropped to a square."""
    root = Path(data_dir) if data_dir is not None else env_data_dir()
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

    splits = {}
    for sub, allow_empty in (("train", False), ("val", True), ("test", True)):
        if (root / sub).is_dir():
            splits[sub] = _files(root / sub, root, class_to_idx, image_size, channels, allow_empty)
    if len(splits["test"][1]) == 0:
        raise DatasetNotFoundError(_imagefolder_help(root, f"no images in {root / 'test'}"))
    raw = RawDataset(
        splits["train"][0],
        splits["train"][1],
        splits["test"][0],
        splits["test"][1],
        tuple(classes),
        allows_flip=flip,
        crop_padding=max(1, image_size // 8),
        source=str(root),
        val_images=splits["val"][0] if "val" in splits else None,
        val_labels=splits["val"][1] if "val" in splits else None,
    )
    return dataclasses.replace(raw, materialise=lambda: _decoded(raw, root, image_size, channels, cache))


def _decoded(raw: RawDataset, root: Path, image_size: int, channels: int, cache: bool) -> RawDataset:
    """``raw`` with its image files decoded into tensors, read from relkd's cache when an
    earlier run decoded the same files (the device-resident path)."""
    cached = None
    cache_file = None
    if cache:
        # keyed by the folder and its files' names, sizes and times: the signature the data's
        # fingerprint hashes too, so the files are stat-ed once
        signature = files_signature(raw.train_images, raw.val_images, raw.test_images)
        key = hashlib.sha256(f"v2|{root.resolve()}|{signature}".encode()).hexdigest()[:20]
        cache_file = cache_dir() / "imagefolder" / f"{key}.pt"
        if cache_file.is_file():
            try:
                cached = torch.load(cache_file, weights_only=True)
                logger.info("imagefolder %s: read decoded images from the cache %s", root, cache_file)
            except Exception as err:  # noqa: BLE001 - a broken cache entry is rebuilt
                logger.warning("ignoring unreadable cache file %s: %s", cache_file, err)
    if cached is None:
        logger.info("imagefolder %s: decoding images at %dx%d", root, image_size, image_size)
        cached = {f"{sub}_images": _decode_all(files) for sub, files in
                  (("train", raw.train_images), ("val", raw.val_images), ("test", raw.test_images))
                  if files is not None}
        if cache_file is not None:
            try:
                atomic_write(cache_file, lambda tmp: torch.save(cached, tmp))
            except OSError as err:
                logger.warning("could not write the cache %s: %s", cache_file, err)
    return dataclasses.replace(raw, train_images=cached["train_images"], test_images=cached["test_images"],
                               val_images=cached.get("val_images"), materialise=None)
