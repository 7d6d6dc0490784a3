"""A tiny generated dataset for tests: class-dependent patterns plus noise, deterministic per seed."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from ..registry import Param
from .base import DATASETS, RawDataset

__all__ = ["load_synthetic"]

logger = logging.getLogger(__name__)

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
def load_synthetic(data_dir: Path | None = None, num_classes: int = 10, train_size: int = 600,
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


