"""Input degradations (noise, blur, contrast, occlusion) at severities 1..5, deterministic per seed."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..data import mix_seed
from ..registry import Param, Registry

__all__ = ["BLUR_SIGMA", "CONTRAST_FACTOR", "DEGRADATIONS", "DEFAULT_DEGRADATIONS", "DEFAULT_SEVERITIES",
           "NOISE_STD", "OCCLUSION_SIDE", "NUM_SEVERITIES", "SEVERITY", "degrade"]

# ----------------------------------------------------------------------------------------
# Strength of each degradation per severity 1..5 (index severity - 1). Chosen for 28x28
# (Fashion-MNIST) and 32x32 (CIFAR) images: severity 1 is barely visible, severity 5
# leaves the object hard but not impossible to recognise.

#: Standard deviation of the added Gaussian noise, in [0, 1] intensity units.
NOISE_STD: tuple[float, ...] = (0.04, 0.08, 0.12, 0.18, 0.26)
#: Standard deviation (pixels) of the Gaussian blur kernel.
BLUR_SIGMA: tuple[float, ...] = (0.7, 1.0, 1.5, 2.0, 3.0)
#: Factor ``c`` that scales each image's deviation from its mean (1 = unchanged).
CONTRAST_FACTOR: tuple[float, ...] = (0.75, 0.5, 0.35, 0.2, 0.1)
#: Side of the occluding square as a fraction of the image side (area: its square).
OCCLUSION_SIDE: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
#: Blur kernels are truncated at radius ``ceil(BLUR_TRUNCATE * sigma)`` pixels.
BLUR_TRUNCATE = 4.0

DEFAULT_DEGRADATIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "occlusion")
DEFAULT_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
NUM_SEVERITIES = 5

DEGRADATIONS = Registry("degradation", bind=True)

SEVERITY = Param("severity", 1, int, "1 (mild) .. 5 (strong)", min=1, max=NUM_SEVERITIES)


def _strength(table: Sequence[float], severity: int) -> float:
    """``table[severity - 1]``; a severity outside 1..5 (or not an integer) raises ``ValueError``."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= len(table):
        raise ValueError(f"severity must be an integer in 1..{len(table)}, got {severity!r}")
    return float(table[severity - 1])


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("a degradation needs float images (N, C, H, W) in [0, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")


@DEGRADATIONS.register("gaussian_noise", params=[SEVERITY], strengths=NOISE_STD, unit="noise std", random=True)
def gaussian_noise(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Additive Gaussian noise. x' = clamp(x + s * z, 0, 1), z ~ N(0, 1) i.i.d. per pixel and channel.

    ``s`` (in [0, 1] intensity units) per severity 1..5: 0.04, 0.08, 0.12, 0.18, 0.26
    (:data:`NOISE_STD`). The clamp makes the measured std a little smaller near 0 and 1.
    ``z`` is drawn on the CPU from ``generator`` (the same on every device).
    """
    _check_images(images)
    std = _strength(NOISE_STD, severity)
    z = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return images.add(z.to(images.device, images.dtype), alpha=std).clamp_(0.0, 1.0)


def _gaussian_kernel(sigma: float) -> Tensor:
    """The Gaussian sampled at integer offsets ``-r..r``, ``r = ceil(4 sigma)``, summing to 1 (float64)."""
    radius = max(1, math.ceil(BLUR_TRUNCATE * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _reflect(index: Tensor, n: int) -> Tensor:
    """Positions reflected into ``0..n-1`` about the edge pixels (``-1 -> 1``, ``n -> n-2``;
    torch's ``reflect`` padding), repeatedly for offsets beyond one image side."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def _blur_matrix(kernel: Tensor, n: int) -> Tensor:
    """The ``(n, n)`` matrix of a 1-D convolution with ``kernel`` and reflect padding:
    ``(M @ v)[i] = sum_k kernel[k] v[reflect(i + k - r)]``."""
    r = kernel.numel() // 2
    rows = torch.arange(n).view(n, 1).expand(n, kernel.numel())
    cols = _reflect(rows + torch.arange(-r, r + 1).view(1, -1), n)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), kernel.repeat(n), accumulate=True)
    return matrix


@DEGRADATIONS.register("gaussian_blur", params=[SEVERITY], strengths=BLUR_SIGMA, unit="blur sigma (px)",
                       random=False)
def gaussian_blur(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Gaussian blur. x' = g_sigma * x per channel, g_sigma(d) ∝ exp(-d^2 / (2 sigma^2)), separable.

    ``sigma`` in pixels per severity 1..5: 0.7, 1.0, 1.5, 2.0, 3.0 (:data:`BLUR_SIGMA`).
    The kernel is the Gaussian sampled at integer offsets up to radius ``ceil(4 sigma)``
    and normalised to sum 1, so the blur of a single bright pixel away from the border has
    variance sigma^2 per axis (within 0.5% for these sigmas; truncating at 3 sigma would
    lose 3% of it). Borders are reflected (torch's ``reflect`` padding, mirrored again
    where the kernel is wider than the image). Computed as ``M_H @ x @ M_W^T`` with the
    blur matrices of each axis (fast on the CPU). Deterministic: ``generator`` is not used.
    """
    _check_images(images)
    kernel = _gaussian_kernel(_strength(BLUR_SIGMA, severity))
    h, w = images.shape[-2:]
    rows = _blur_matrix(kernel, h).to(images.device, images.dtype)
    cols = _blur_matrix(kernel, w).to(images.device, images.dtype)
    return torch.matmul(torch.matmul(rows, images), cols.t()).clamp_(0.0, 1.0)


@DEGRADATIONS.register("contrast", params=[SEVERITY], strengths=CONTRAST_FACTOR, unit="contrast factor c",
                       random=False)
def contrast(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Contrast reduction. x' = m + c * (x - m), m = the image's mean per channel.

    ``c`` per severity 1..5: 0.75, 0.5, 0.35, 0.2, 0.1 (:data:`CONTRAST_FACTOR`); each
    image's per-channel std is multiplied by ``c`` and its mean kept (as in CIFAR-10-C).
    The result stays in [0, 1] (a convex combination). Deterministic: ``generator`` is not used.
    """
    _check_images(images)
    c = _strength(CONTRAST_FACTOR, severity)
    mean = images.mean(dim=(2, 3), keepdim=True)
    return (mean + c * (images - mean)).clamp_(0.0, 1.0)


@DEGRADATIONS.register("occlusion", params=[SEVERITY], strengths=OCCLUSION_SIDE, unit="occluded side fraction",
                       random=True)
def occlusion(images: Tensor, generator: torch.Generator, severity: int = 1) -> Tensor:
    """Occlusion by a black square. x'[i, :, t:t+s_h, l:l+s_w] = 0, s_h = round(f H), s_w = round(f W).

    ``f`` (side as a fraction of the image side; the occluded area is about f^2) per
    severity 1..5: 0.1, 0.2, 0.3, 0.4, 0.5 (:data:`OCCLUSION_SIDE`), i.e. 3, 6, 8, 11, 14
    pixels at 28x28 and 3, 6, 10, 13, 16 at 32x32. One square per image, filled with 0 in
    every channel (black, Fashion-MNIST's background; cutout-like on colour images), lying
    entirely inside the image at a uniformly random position: the top-left corner ``(t, l)``
    is uniform on ``0..H-s_h`` x ``0..W-s_w``, drawn on the CPU from ``generator``.
    """
    _check_images(images)
    f = _strength(OCCLUSION_SIDE, severity)
    n, _, h, w = images.shape
    sh, sw = max(1, math.floor(f * h + 0.5)), max(1, math.floor(f * w + 0.5))
    top = torch.randint(0, h - sh + 1, (n, 1), generator=generator).to(images.device)
    left = torch.randint(0, w - sw + 1, (n, 1), generator=generator).to(images.device)
    rows = torch.arange(h, device=images.device).view(1, h)
    cols = torch.arange(w, device=images.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + sh)  # (N, H)
    in_cols = (cols >= left) & (cols < left + sw)  # (N, W)
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)  # (N, 1, H, W)
    return images.masked_fill(mask, 0.0)


def _unit_float(images: Tensor) -> Tensor:
    """``uint8`` images as float32 in [0, 1]; float images checked to lie in [0, 1]."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {tuple(getattr(images, 'shape', ()))}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError(f"float images must lie in [0, 1], got values in [{float(images.min())}, "
                         f"{float(images.max())}]; pass uint8 images or divide by 255")
    return images


def degrade(images: Tensor, kind: str, severity: int, seed: int = 0) -> Tensor:
    """Images degraded by ``kind`` at ``severity``, deterministically in ``seed``.

    Args:
        images: ``uint8`` (divided by 255) or float in [0, 1], ``(N, C, H, W)``, any device.
        kind: a name from ``DEGRADATIONS.list()``.
        severity: 1..5.
        seed: with ``kind`` and ``severity``, seeds the generator of this call's random
            draws (the same arguments give the same images on every call).

    Returns:
        New float images in [0, 1] of the same shape, on the same device (float32 for
        ``uint8`` input, else the input's dtype).

    Raises:
        ValueError: unknown kind (with valid names and a did-you-mean), bad severity, bad images.
    """
    entry = DEGRADATIONS.get(kind)
    params = entry.resolve_params({"severity": severity})
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    x = _unit_float(images)
    generator = torch.Generator().manual_seed(mix_seed("relkd.evaluation", int(seed), kind, params["severity"]))
    return entry.obj(x, generator, **params)
