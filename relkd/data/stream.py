"""Streamed batches for data that does not fit on the device: the same batches as the
:class:`~relkd.data.DeviceLoader`, read through ``torch.utils.data.DataLoader`` workers.

:class:`StreamLoader` keeps the images where they are (files, :class:`~relkd.data.image_files.ImageFiles`,
or a tensor in host memory) and reads each batch in a worker process: the batch's sample
indices are the :class:`~relkd.data.DeviceLoader`'s (the same shuffling from ``(seed, epoch)``),
the worker reads those images as ``uint8``, the batch goes to the device (from pinned memory
on CUDA), and there it is cropped, flipped and normalised exactly as the device-resident path
does it, from the same per-sample draws of ``(seed, epoch, index)``. So for the same data a
streamed run sees the batches a resident run sees, bit for bit on the same device.

:func:`resolve_loader` decides which path a dataset takes: ``device`` (resident), ``stream``, or
``auto``: resident when the splits fit under ``max_resident_gib``, streamed otherwise.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from .base import DataFieldError
from .image_files import ImageFiles, read_images
from .loader import DeviceLoader, apply_norm, random_crop_flip

__all__ = ["StreamLoader", "LOADERS", "DEFAULT_MAX_RESIDENT_GIB", "resolve_loader", "default_workers"]

logger = logging.getLogger(__name__)

#: ``data.loader``: how batches are made.
LOADERS = ("auto", "device", "stream")
#: ``data.max_resident_gib``: the most a dataset's splits may take on the device under ``loader: auto``.
DEFAULT_MAX_RESIDENT_GIB = 4.0


#: With workers, the host memory glibc keeps after freeing batches is given back every this many batches.
TRIM_EVERY = 16


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none. Batches that arrive from
    worker processes live in shared memory; once they are freed, glibc raises its mmap
    threshold and keeps the next batches' buffers on its heap, so a long epoch's resident
    memory would grow by hundreds of MiB that it no longer uses (measured: benchmarks/stream.py)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


def default_workers(images: Tensor | ImageFiles | None = None) -> int:
    """Worker processes when ``data.workers`` is not given: none for images already in host
    memory (a batch is one ``index_select``: on the quick setting two workers on 2 cores ran at
    0.46x the main process's speed, benchmarks/stream.py), else the CPU cores, at most 4 (image
    files: decoding is the work)."""
    if isinstance(images, Tensor):
        return 0
    return max(1, min(4, os.cpu_count() or 1))


def resolve_loader(loader: str, nbytes: int, max_resident_gib: float) -> str:
    """``device`` or ``stream`` for a dataset whose splits take ``nbytes`` as ``uint8`` tensors.
    ``loader: device`` over the limit raises :class:`DataFieldError` naming ``loader`` (before
    anything trains)."""
    if loader not in LOADERS:
        raise DataFieldError("loader", f"loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    limit = max_resident_gib * 2**30
    if loader == "device" and nbytes > limit:
        raise DataFieldError(
            "loader", f"loader: device keeps the splits on the device, and they take {nbytes / 2**30:.2f} GiB, over "
                      f"data.max_resident_gib ({max_resident_gib:g} GiB): use loader: stream (or auto), or raise "
                      f"data.max_resident_gib if the device holds them")
    if loader == "auto":
        return "device" if nbytes <= limit else "stream"
    return loader


class _Batches(torch.utils.data.Dataset):
    """One item per batch: ``(uint8 images, labels, indices)`` of the batch's sample indices."""

    def __init__(self, images: Tensor | ImageFiles, labels: Tensor, batches: Sequence[Tensor]):
        self.images, self.labels, self.batches = images, labels, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        index = self.batches[i]
        return read_images(self.images, index), self.labels.index_select(0, index), index


class StreamLoader(DeviceLoader):
    """A :class:`DeviceLoader` whose images stay in host memory or in their files: each batch is
    read by one of ``workers`` processes (``0``: in this process; ``None``:
    :func:`default_workers`) and moved to ``device`` then. Same arguments, batches, order and
    augmentation as :class:`DeviceLoader`."""

    def __init__(self, images: Tensor | ImageFiles, labels: Tensor, batch_size: int = 128,
                 device: torch.device | str | None = None, *, workers: int | None = None, **options: Any):
        # DeviceLoader checks the arguments and makes the normalisation constants on an empty
        # stand-in of the images (a tensor's own first rows, so its dtype is checked too); the
        # images themselves stay where they are (host memory, or their files)
        empty = images[:0] if isinstance(images, Tensor) else torch.empty(0, *images.shape[1:], dtype=torch.uint8)
        super().__init__(empty, labels[:0], batch_size, device or images.device, **options)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be 1-D with {images.shape[0]} entries, got shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to("cpu", torch.int64)
        self.workers = default_workers(images) if workers is None else int(workers)

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    def epoch(self, epoch: int = 0, *, with_indices: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """Yield the batches of epoch ``epoch`` as :meth:`DeviceLoader.epoch` does."""
        order = self.permutation(epoch)
        batches = list(order[: len(self) * self.batch_size].split(self.batch_size)) if self.drop_last \
            else list(order.split(self.batch_size))
        augments = self.augments
        if augments:
            offsets, flips = self.augmentation(epoch)
        cuda = self.device.type == "cuda"
        reader = torch.utils.data.DataLoader(
            _Batches(self.images, self.labels, batches), batch_size=None, shuffle=False,
            num_workers=self.workers, pin_memory=cuda, prefetch_factor=4 if self.workers else None)
        for i, ((x, y, index), cpu_index) in enumerate(zip(reader, batches)):
            if self.workers and i % TRIM_EVERY == TRIM_EVERY - 1:
                _malloc_trim()()
            x, y = x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)
            if augments:
                x = random_crop_flip(x, offsets[cpu_index].to(self.device),
                                     flips[cpu_index].to(self.device) if self.flip else None, self.pad)
            x = apply_norm(x, self._scale, self._shift, self.dtype)
            yield (x, y, index.to(self.device)) if with_indices else (x, y)

    def __repr__(self) -> str:
        return (f"StreamLoader({self.num_samples} samples, batch_size={self.batch_size}, device={self.device}, "
                f"workers={self.workers}, shuffle={self.shuffle}, augment={self.augments}, seed={self.seed})")
