"""Images that stay in their files until a batch needs them: the streamed path's image source.

An :class:`ImageFiles` stands where a ``uint8 (N, C, H, W)`` tensor stands in a
:class:`~relkd.data.RawDataset` or :class:`~relkd.data.DatasetSplits`: it has a ``shape``, is
indexed and subset like a tensor (``images[index]``, ``images.index_select(0, index)``: a new
:class:`ImageFiles`, nothing decoded) and decodes only in :meth:`ImageFiles.read`, which the
streaming loader's workers call batch by batch. Its :meth:`signature` (relative paths, sizes
and modification times) stands in for the pixels in the data's fingerprint.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["ImageFiles", "read_images", "images_nbytes", "files_signature"]


def decode_image(path: str, image_size: int, channels: int) -> Tensor:
    """One image file as ``uint8 (C, S, S)``: converted to grey or RGB, the shorter side resized
    to ``image_size`` (bilinear, antialiased) and centre-cropped to a square. A file PIL
    cannot read raises ``ValueError`` naming it: relkd never skips an image, since a skipped
    image would change the splits and the data's fingerprint."""
    import torchvision.transforms.functional as TF
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            img = TF.resize(img, image_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            img = TF.center_crop(img, [image_size, image_size])
            return TF.pil_to_tensor(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read the image {path!r} ({type(err).__name__}: {err}); remove or replace it "
                         f"(relkd does not skip images: a skipped image would change the splits)") from None


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """``N`` image files decoded to ``uint8 (C, S, S)`` when read (:func:`decode_image`).

    ``root``: the folder the paths are relative to (for the signature); ``decode``: how one
    file becomes an image (default :func:`decode_image`)."""

    root: str
    paths: tuple[str, ...]
    image_size: int
    channels: int
    decode: Callable[[str, int, int], Tensor] = decode_image

    dtype = torch.uint8
    device = torch.device("cpu")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.channels, self.image_size, self.image_size))

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.paths)

    def numel(self) -> int:
        return len(self.paths) * self.channels * self.image_size * self.image_size

    def __getitem__(self, index: Any) -> ImageFiles:
        """The files at ``index`` (positions, a boolean mask or a slice), as a new :class:`ImageFiles`."""
        if isinstance(index, slice):
            return self._subset(self.paths[index])
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        return self._subset(tuple(self.paths[int(i)] for i in index.reshape(-1).tolist()))

    def index_select(self, dim: int, index: Tensor) -> ImageFiles:
        if dim != 0:
            raise ValueError(f"ImageFiles selects along dimension 0 (the samples), got {dim}")
        return self[index]

    def to(self, *args: Any, **kwargs: Any) -> ImageFiles:
        """Itself: files are read where the batch is made, never moved whole to a device."""
        return self

    def _subset(self, paths: Sequence[str]) -> ImageFiles:
        return ImageFiles(self.root, tuple(paths), self.image_size, self.channels, self.decode)

    def read(self, index: Tensor | Sequence[int] | None = None) -> Tensor:
        """The images at ``index`` (all by default), decoded: ``uint8 (len(index), C, S, S)``."""
        positions = range(len(self.paths)) if index is None else torch.as_tensor(index).reshape(-1).tolist()
        images = [self.decode(self.paths[int(i)], self.image_size, self.channels) for i in positions]
        if not images:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.stack(images)

    def signature(self) -> bytes:
        """What identifies these images without reading them: the decoding (size, channels) and
        each file's path relative to ``root``, size and modification time, in order (each file
        stat-ed once per :class:`ImageFiles`)."""
        return self._signature

    @functools.cached_property
    def _signature(self) -> bytes:
        h = hashlib.sha256(f"files v1|{self.image_size}|{self.channels}\n".encode())
        for path in self.paths:
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.digest()

    def __repr__(self) -> str:
        return f"ImageFiles({len(self.paths)} files under {self.root!r}, {self.channels}x{self.image_size}^2)"


def read_images(images: Tensor | ImageFiles, index: Tensor) -> Tensor:
    """The images at ``index`` of a tensor or an :class:`ImageFiles`, as ``uint8 (B, C, H, W)``."""
    if isinstance(images, ImageFiles):
        return images.read(index)
    return images.index_select(0, index.to(images.device))


def images_nbytes(*images: Tensor | ImageFiles | None) -> int:
    """The bytes these images take as ``uint8`` tensors (decoded, for files)."""
    return sum(int(x.numel()) for x in images if x is not None)


def files_signature(*images: Tensor | ImageFiles | None) -> str | None:
    """One hex digest of the signatures of the :class:`ImageFiles` among ``images`` (in order),
    or ``None`` when none is: what identifies data read from image files without their pixels."""
    files = [x for x in images if isinstance(x, ImageFiles)]
    return hashlib.sha256(b"".join(x.signature() for x in files)).hexdigest() if files else None
