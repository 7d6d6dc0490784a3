"""The dataset a run trains on: :func:`load_dataset` reads a registered source, keeps its
classes, splits it (:mod:`relkd.data.splits`), chooses the device-resident or the streamed path
(:mod:`relkd.data.stream`) and returns a :class:`DatasetSplits`."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..registry import unknown_name_message
from .base import ALIASES, DATASETS, DEFAULT_DATASET, RawDataset
from .image_files import ImageFiles, files_signature, images_nbytes
from .loader import DeviceLoader
from .splits import keep_classes, labelled_positions, resolve_classes, split_indices
from .stream import DEFAULT_MAX_RESIDENT_GIB, StreamLoader, resolve_loader

__all__ = ["DatasetSplits", "canonical_dataset_name", "list_datasets", "load_dataset"]

logger = logging.getLogger(__name__)

#: Image files: the normalisation statistics come from at most this many training images
#: (drawn by the split seed), so that streamed data is not read whole before training.
STATS_SAMPLE = 4096
#: Image files are decoded this many at a time for the statistics.
FILES_CHUNK = 256


def _channel_stats(images: Tensor | ImageFiles, chunk: int = 4096, seed: int = 0
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units (float64 accumulation, ``chunk``
    images at a time); of image files, from at most :data:`STATS_SAMPLE` of them drawn by
    ``seed``, read :data:`FILES_CHUNK` at a time (never all decoded at once)."""
    if isinstance(images, ImageFiles):
        n = len(images)
        if n > STATS_SAMPLE:
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 104729))[:STATS_SAMPLE]
            images = images[torch.sort(pick).values]
        chunks = (images.read(index) for index in torch.arange(len(images)).split(FILES_CHUNK))
    else:
        chunks = (images[start:start + chunk] for start in range(0, images.shape[0], chunk))
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for part in chunks:
        x = part.to("cpu", torch.float64).div_(255.0)
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
    """A dataset split into train / val / test, as ``uint8`` ``(N, C, H, W)`` images (tensors,
    or :class:`~relkd.data.image_files.ImageFiles` read when a batch needs them) and ``int64``
    labels, with what a trainer needs to know about it.

    ``loader``: ``device`` (the loaders hold the images on the device) or ``stream`` (they read
    each batch through ``DataLoader`` workers, ``workers`` of them; :mod:`relkd.data.stream`).

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
    #: student runs: only this many training samples keep their labels, the others are -1
    #: (unlabelled: CE skips them, the teacher's terms use them); None: every label
    labelled: int | None = None
    loader: str = "device"
    workers: int | None = None  # stream: DataLoader worker processes (None: relkd.data.stream.default_workers)
    #: data read from image files: their signature (names, sizes, times), hashed instead of the pixels
    _files: str | None = field(default=None, repr=False)

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
        """A copy with every tensor on ``device`` (tensors already there are shared); streamed
        data stays where it is."""
        if self.loader == "stream":
            return self
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
        """A shuffling, augmenting :class:`DeviceLoader` (a :class:`StreamLoader` for streamed
        data) over the train split with this dataset's normalisation, crop padding and flip setting."""
        return self._loader(self.train_images, self.train_labels, batch_size, device,
                            shuffle=shuffle, augment=augment, seed=seed, mean=self.mean, std=self.std,
                            pad=self.crop_padding, flip=self.allows_flip, drop_last=drop_last)

    def eval_loader(
        self, split: str = "val", batch_size: int = 512, device: torch.device | str | None = None
    ) -> DeviceLoader:
        """An in-order, unaugmented :class:`DeviceLoader` (or :class:`StreamLoader`) over
        ``"val"``, ``"test"`` or ``"train"``, normalised like training batches."""
        images, labels = self.split(split)
        return self._loader(images, labels, batch_size, device, mean=self.mean, std=self.std)

    def _loader(self, images: Tensor | ImageFiles, labels: Tensor, batch_size: int,
                device: torch.device | str | None, **options: Any) -> DeviceLoader:
        if self.loader == "stream":
            return StreamLoader(images, labels, batch_size, device, workers=self.workers, **options)
        return DeviceLoader(images, labels, batch_size, device, **options)

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
            if self.labelled is not None:
                meta += (("labelled", self.labelled),)
            h.update(repr(meta).encode())
            tensors = (self.train_images, self.train_labels, self.val_images, self.val_labels,
                       self.test_images, self.test_labels)
            if self._files is not None:  # image files: their list, sizes and times, not their pixels
                h.update(self._files.encode())
                tensors = tensors[1::2]  # the labels
            for t in tensors:
                t = t.detach().to("cpu").contiguous()
                h.update(repr((tuple(t.shape), str(t.dtype))).encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def summary(self) -> str:
        """One line: name, sizes, shape, classes."""
        train = f"train {len(self.train_labels)}"
        if self.labelled is not None:
            train += f" ({self.labelled} labelled)"
        streamed = "; streamed" if self.loader == "stream" else ""
        return (
            f"{self.name}: {train}, val {len(self.val_labels)}, test {len(self.test_labels)}; "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes; from {self.source}"
            f"{streamed}"
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
    key = name.strip().lower()
    if key not in DATASETS:  # a registered name as it is (``my_data``), else with ``-`` for ``_`` or an alias
        key = ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
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
    labelled: int | None = None,
    device: torch.device | str | None = None,
    loader: str = "auto",
    max_resident_gib: float = DEFAULT_MAX_RESIDENT_GIB,
    workers: int | None = None,
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
        labelled: keep the labels of only this many training samples (stratified,
            deterministic in ``split_seed``, a superset for a larger number); the others'
            labels are -1, which the objective's CE skips while KD and the relation and
            feature terms use every sample (few labels, many unlabelled images).
        device: move every split there (default: stay on the CPU; :class:`DeviceLoader`
            moves data to its device anyway).
        loader: ``device`` (the loaders hold the splits on the device), ``stream`` (batches
            read through ``DataLoader`` workers; image folders are never decoded whole) or
            ``auto``: ``device`` when the splits fit in ``max_resident_gib``, else ``stream``
            (:mod:`relkd.data.stream`). ``device`` over the limit raises :class:`DataFieldError`.
        workers: the streaming loader's worker processes (default: the cores, at most 4).
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
    full = raw
    if classes is not None:
        class_subset = resolve_classes(classes, raw.classes)
        raw = keep_classes(raw, class_subset)
        ytr = raw.train_labels
    mode = resolve_loader(loader, images_nbytes(raw.train_images, raw.val_images, raw.test_images),
                          max_resident_gib)
    files = files_signature(full.train_images, full.val_images, full.test_images)  # pixels' stand-in
    if mode == "device" and files is not None:  # image files on the device: decoded whole (relkd caches them)
        full = full.materialise()
        raw = keep_classes(full, class_subset) if class_subset is not None else full

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
    mean, std = _channel_stats(raw.train_images[pool], seed=split_seed)
    train_labels = ytr[train_index]
    if labelled is not None:
        mask = torch.ones_like(train_labels, dtype=torch.bool)
        mask[labelled_positions(train_labels, labelled, split_seed)] = False
        train_labels = train_labels.masked_fill(mask, -1)

    splits = DatasetSplits(
        name=key,
        train_images=raw.train_images[train_index],
        train_labels=train_labels,
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
        labelled=labelled,
        loader=mode,
        workers=workers,
        _files=files,
    )
    logger.info("loaded %s", splits.summary())
    return splits.to(device) if device is not None else splits


