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

Data that does not fit on the device is streamed (``loader="stream"``, or ``"auto"`` over
``max_resident_gib``): :class:`StreamLoader` reads the same batches through
``torch.utils.data.DataLoader`` workers, and image folders are then never decoded whole
(:class:`ImageFiles`).

The rooms: :mod:`.base` (the registry, errors, locations), one module per source
(:mod:`.fashion_mnist`, :mod:`.cifar`, :mod:`.imagefolder`, :mod:`.synthetic`; each
registers its loader), :mod:`.splits` (classes, split, subsets, labels), :mod:`.dataset`
(:class:`DatasetSplits`, :func:`load_dataset`), :mod:`.loader` (augmentation, normalisation,
:class:`DeviceLoader`), :mod:`.stream` (:class:`StreamLoader`, which path a dataset takes) and
:mod:`.image_files` (:class:`ImageFiles`).
A new dataset source is one module that registers a loader into :data:`DATASETS`
returning a :class:`RawDataset`, imported below.
"""
from . import fashion_mnist, cifar, imagefolder, synthetic  # noqa: F401,I001  (each registers its loader, in this order)
from .base import (
    DATA_DIR_ENV,
    DATASETS,
    DEFAULT_DATASET,
    DataFieldError,
    DatasetNotFoundError,
    RawDataset,
    cache_dir,
)
from .loader import DeviceLoader, mix_seed, normalize, random_crop_flip
from .dataset import DatasetSplits, canonical_dataset_name, list_datasets, load_dataset
from .image_files import ImageFiles
from .splits import labelled_positions, resolve_classes, split_indices
from .stream import LOADERS, StreamLoader

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_DATASET",
    "DataFieldError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "DeviceLoader",
    "ImageFiles",
    "LOADERS",
    "StreamLoader",
    "RawDataset",
    "cache_dir",
    "canonical_dataset_name",
    "labelled_positions",
    "list_datasets",
    "load_dataset",
    "mix_seed",
    "normalize",
    "random_crop_flip",
    "resolve_classes",
    "split_indices",
]
