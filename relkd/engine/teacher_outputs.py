"""The teacher-output cache: the teacher's taps for every training sample, computed once per
(teacher, data, augmentation epoch) and shared by every student trained in this process, and
by other processes through the store's checked files."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch

from ..cache import atomic_write, cache_root, intact_meta, load_checked, save_checked
from ..files import file_sha256
from ..data import DeviceLoader, StreamLoader
from ..models import TappedModel
from .device import autocast, autocast_dtype, prepare_input

__all__ = ["TeacherOutputs"]

log = logging.getLogger(__name__)


class TeacherOutputs:
    """Teacher taps for every training sample, indexed by sample index, computed once
    per (teacher, data, augmentation epoch) and kept on the device for reuse across
    epochs and trials in this process.

    The store holds at most ``RELKD_TEACHER_CACHE_MB`` (4096 by default) and, on CUDA, half
    the device memory free besides itself: past that, the least recently used outputs
    (with augmentation, epochs already trained past; another teacher's) are evicted, and
    when even that is not enough the caller runs the teacher live.

    Without augmentation (the teacher sees the same images every epoch) they are also
    written to the cache folder, one file per tap with its sha256 beside it, so other
    processes (study workers, ``relkd train``, compare, confirm) load them instead of
    running the teacher again. A file whose hash or shape does not match is computed again
    and replaced, never used."""

    _store: dict[tuple, dict[str, torch.Tensor]] = {}
    _mapped: dict[tuple, dict[str, torch.Tensor]] = {}  # streamed data: files mapped into host memory
    limit_bytes = int(float(os.environ.get("RELKD_TEACHER_CACHE_MB", "4096")) * 2**20)
    persist = True  # write and read the files (benchmarks of the first trial's cost turn it off)

    @classmethod
    def clear(cls) -> None:
        """Forget what this process holds (the files stay)."""
        cls._store.clear()
        cls._mapped.clear()

    @classmethod
    def _bytes(cls) -> int:
        return sum(t.numel() * t.element_size() for d in cls._store.values() for t in d.values())

    @classmethod
    def _budget(cls, device: torch.device) -> int:
        """Bytes the store may hold: the limit, and on CUDA half the free memory besides itself."""
        if device.type != "cuda":
            return cls.limit_bytes
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by PyTorch
        return min(cls.limit_bytes, free // 2 + cls._bytes())

    @classmethod
    def _make_room(cls, need: int, keep: tuple, device: torch.device) -> bool:
        """Evict the least recently used entries (never ``keep``) until ``need`` more bytes
        fit; whether they do."""
        budget = cls._budget(device)
        kept = sum(t.numel() * t.element_size() for t in cls._store.get(keep, {}).values())
        if kept + need > budget:  # it would not fit even alone: evict nothing
            return False
        for old in [k for k in cls._store if k != keep]:
            if cls._bytes() + need <= budget:
                break
            log.debug("teacher-output cache: evicting %s", old[-2:])
            del cls._store[old]
        return cls._bytes() + need <= budget

    @staticmethod
    def folder(key: tuple) -> Path:
        """Where the files of one (teacher, data) pair live."""
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        return cache_root() / "teacher_outputs" / digest

    @classmethod
    def load(cls, key: tuple, tap: str, loader: DeviceLoader) -> torch.Tensor | None:
        """The tap's outputs from another process's intact file, or ``None``."""
        if not (cls.persist and key[-1] is None):
            return None
        path = cls.folder(key) / f"{tap}.pt"

        def check(value: object, meta: dict) -> None:
            if not isinstance(value, torch.Tensor) or list(value.shape) != meta.get("shape") \
                    or value.shape[0] != loader.num_samples:
                raise ValueError(f"it holds {getattr(value, 'shape', type(value).__name__)}, not {meta.get('shape')} "
                                 f"for {loader.num_samples} samples")

        found = load_checked(path, path.with_suffix(".json"), None, "teacher-output cache", check)
        if found is None:
            return None
        log.debug("teacher tap %s loaded from %s", tap, path)
        return found[0].to(loader.device, torch.float32)

    @classmethod
    def mapped(cls, key: tuple, teacher: TappedModel, loader: StreamLoader, taps: tuple[str, ...],
               precision: str = "auto") -> dict[str, torch.Tensor] | None:
        """The teacher's ``taps`` for every sample of a streamed ``loader``, as float32 files in the
        cache folder (``<tap>.f32``, raw, with their shape and SHA-256 in ``<tap>.f32.json``) mapped into
        host memory: the kernel pages in what the batches read, nothing is held on the device.
        Computed once in a streamed pass over the data in order and shared with other processes;
        a damaged file is computed again. ``None`` with augmentation (each epoch sees other
        images: the teacher runs live) or without the file store."""
        if not (cls.persist and key[-1] is None):
            return None
        found = cls._mapped.get(key, {})
        missing = tuple(t for t in taps if t not in found and not cls._map(key, t, loader.num_samples, found))
        if missing:
            cls._write_mapped(key, teacher, loader, missing, precision)
            for t in missing:
                if not cls._map(key, t, loader.num_samples, found):
                    return None  # could not be written (a full disk, say): live
        cls._mapped[key] = found
        return {t: found[t] for t in taps}

    @classmethod
    def _map(cls, key: tuple, tap: str, samples: int, into: dict[str, torch.Tensor]) -> bool:
        """Map the intact file of ``tap`` into ``into``; whether there was one."""
        path = cls.folder(key) / f"{tap}.f32"
        meta = intact_meta(path, _meta_of(path), None, "teacher-output cache")
        shape = (meta or {}).get("shape")
        if not shape or shape[0] != samples:
            return False
        into[tap] = torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=torch.float32).view(*shape)
        return True

    @classmethod
    def _write_mapped(cls, key: tuple, teacher: TappedModel, loader: StreamLoader, taps: tuple[str, ...],
                      precision: str) -> None:
        """One streamed pass of the teacher over ``loader``'s samples in order, each tap's
        outputs appended to its file as they come (never all in memory)."""
        folder = cls.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        plain = StreamLoader(loader.images, loader.labels, 1024, loader.device, workers=loader.workers,
                             mean=loader.mean, std=loader.std)
        parts = {t: folder / f"{t}.f32.{os.getpid()}.part" for t in taps}
        shapes: dict[str, list[int]] = {}
        teacher.eval()
        try:
            files = {t: open(parts[t], "wb") for t in taps}
            try:
                with torch.inference_mode(), autocast(loader.device, precision):
                    for x, _ in plain.epoch(0):
                        out = teacher(prepare_input(x, loader.device), taps=taps)
                        for t in taps:
                            value = out[t].float().cpu().contiguous()
                            shapes[t] = [shapes.get(t, [0])[0] + value.shape[0], *value.shape[1:]]
                            files[t].write(value.numpy().tobytes())
            finally:
                for f in files.values():
                    f.close()
            for t in taps:
                path = folder / f"{t}.f32"
                os.replace(parts[t], path)
                atomic_write(_meta_of(path), lambda tmp, t=t, path=path: tmp.write_text(json.dumps(
                    {"shape": shapes[t], "key": [str(k) for k in key], "sha256": file_sha256(path)}, indent=2)))
        except OSError as err:  # a full disk: this run takes the teacher live
            log.warning("could not write the teacher-output files in %s (%s); running the teacher live", folder, err)
        finally:
            for part in parts.values():
                part.unlink(missing_ok=True)
        log.debug("teacher taps %s written for %d streamed samples", taps, loader.num_samples)

    @classmethod
    def save(cls, key: tuple, tap: str, value: torch.Tensor) -> None:
        """Write the tap's outputs for other processes (a write error is logged, not raised)."""
        if not (cls.persist and key[-1] is None):
            return
        path = cls.folder(key) / f"{tap}.pt"
        try:
            save_checked(value.detach().cpu(), path, path.with_suffix(".json"),
                         {"shape": list(value.shape), "key": [str(k) for k in key]})
        except OSError as err:  # a full disk costs the other processes a teacher pass, not this run
            log.warning("could not write the teacher-output cache %s (%s); this process keeps them in memory",
                        path, err)

    @classmethod
    def get(cls, key: tuple, teacher: TappedModel, loader: DeviceLoader, epoch: int,
            taps: tuple[str, ...], precision: str = "auto") -> dict[str, torch.Tensor] | None:
        """The teacher's ``taps`` for every sample of ``loader`` at ``epoch``; ``None`` when
        they would not fit in the memory limit (the caller then runs the teacher live). On
        CUDA the outputs are those of ``precision``'s autocast, so they are kept apart per
        autocast dtype. Streamed data (a :class:`~relkd.data.StreamLoader`) is never held on the
        device: its outputs are files memory-mapped on the host (:meth:`mapped`) when the data are
        not augmented, else ``None`` (the teacher runs live)."""
        # the last two (augmentation seed, epoch) stay last
        dtype = autocast_dtype(loader.device, precision)
        if dtype is not None:
            key = (*key[:-2], str(dtype), *key[-2:])
        if teacher.points.version != 1:  # its taps read other tensors than version 1's did
            key = (*key[:-2], f"taps v{teacher.points.version}", *key[-2:])
        if isinstance(loader, StreamLoader):
            return cls.mapped(key, teacher, loader, taps, precision)
        stored = cls._store.pop(key, {})
        cls._store[key] = stored  # the most recently used goes last
        missing = tuple(t for t in taps if t not in stored)
        if missing:
            with torch.inference_mode():
                x0 = loader.images[:1].float()
                probe = teacher(prepare_input(x0, loader.device), taps=missing)
            need = sum(probe[t].numel() * 4 * loader.num_samples for t in missing)
            if not cls._make_room(need, key, loader.device):
                log.info("teacher-output cache would exceed %.0f MiB; running the teacher live",
                         cls._budget(loader.device) / 2**20)
                return None
            for t in missing:
                loaded = cls.load(key, t, loader)
                if loaded is not None:
                    stored[t] = loaded
            missing = tuple(t for t in missing if t not in stored)
        if missing:
            outputs: dict[str, list[torch.Tensor]] = {t: [] for t in missing}
            plain = DeviceLoader(loader.images, loader.labels, 1024, loader.device, shuffle=False,
                                 augment=loader.augment, seed=loader.seed, mean=loader.mean, std=loader.std,
                                 pad=loader.pad, flip=loader.flip)
            teacher.eval()
            with torch.inference_mode(), autocast(loader.device, precision):
                for x, _ in plain.epoch(epoch):
                    out = teacher(prepare_input(x, loader.device), taps=missing)
                    for t in missing:
                        outputs[t].append(out[t].float())
            for t in missing:
                stored[t] = torch.cat(outputs[t])
                cls.save(key, t, stored[t])
            log.debug("cached teacher taps %s for %d samples", missing, loader.num_samples)
        return {t: stored[t] for t in taps}


def _meta_of(path: Path) -> Path:
    """The metadata file beside a mapped output file: ``<tap>.f32.json`` (``<tap>.json`` is the
    device-resident path's)."""
    return path.with_name(path.name + ".json")
