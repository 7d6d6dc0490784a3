"""Batches on the device: batch-wise augmentation (random crop, flip), normalisation and the DeviceLoader."""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor


__all__ = ["DeviceLoader", "apply_norm", "mix_seed", "norm_constants", "normalize", "random_crop_flip"]

logger = logging.getLogger(__name__)

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


def norm_constants(mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device,
                   dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` of :func:`apply_norm` for ``channels`` channels, on ``device``."""
    m = torch.as_tensor(mean, dtype=torch.float64).flatten()
    s = torch.as_tensor(std, dtype=torch.float64).flatten()
    if m.numel() not in (1, channels) or s.numel() not in (1, channels):
        raise ValueError(f"mean and std need 1 or {channels} values, got {m.numel()} and {s.numel()}")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive, got {tuple(s.tolist())}")
    scale = (1.0 / (255.0 * s)).expand(channels).to(device, dtype).view(1, channels, 1, 1)
    shift = (m / s).expand(channels).to(device, dtype).view(1, channels, 1, 1)
    return scale, shift


def apply_norm(images: Tensor, scale: Tensor, shift: Tensor, dtype: torch.dtype) -> Tensor:
    """``images * scale - shift`` in ``dtype``: uint8 images normalised (:func:`norm_constants`)."""
    return images.to(dtype, memory_format=torch.contiguous_format).mul_(scale).sub_(shift)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
              ) -> Tensor:
    """``(images / 255 - mean) / std`` per channel, for ``uint8`` ``(B, C, H, W)`` images
    (any layout; the result is a new contiguous tensor)."""
    scale, shift = norm_constants(mean, std, images.shape[1], images.device, dtype)
    return apply_norm(images, scale, shift, dtype)


def mix_seed(*parts: Any) -> int:
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
        self._scale, self._shift = norm_constants(self.mean, self.std, self.images.shape[1], self.device, dtype)

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
        return torch.Generator().manual_seed(mix_seed("relkd.data", self.seed, int(epoch), stream))

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
            x = apply_norm(x, self._scale, self._shift, self.dtype)
            yield (x, y, index) if with_indices else (x, y)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """The batches of epoch 0 (for evaluation; use :meth:`epoch` when training)."""
        return self.epoch(0)

    def __repr__(self) -> str:
        return (
            f"DeviceLoader({self.num_samples} samples, batch_size={self.batch_size}, device={self.device}, "
            f"shuffle={self.shuffle}, augment={self.augments}, seed={self.seed})"
        )
