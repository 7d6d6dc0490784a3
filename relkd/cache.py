"""relkd's content-addressed store: a key (a hash of everything that determines a result)
names a folder under the cache root; files in it are written atomically with their SHA-256
beside them, checked on every read, and built once across processes under a file lock.

Teachers, teacher outputs and pretrained source checkpoints live here::

    entry = cached("teachers", key, build, name="cnn_small", load=load_weights)
    entry.file        # <root>/teachers/cnn_small-<key>/model.pt, intact and belonging to key
    entry.meta        # what build returned, plus "sha256"
    entry.built       # False when it came from the cache

A damaged file (truncated, altered, another key's) is never used: it is logged and built
again. A full disk costs later processes a rebuild, never the result in hand, where the
caller allows it (``keep_on_write_error``).

Trained models (the teacher, a pretrained source, an adapted student) share one pattern on
top of :func:`cached`: an :class:`ArtefactKind` names the folder, file, log name and
format, keys a spec (:func:`spec_key`), stores a built model's weights and returns an
:class:`Artefact` (its file, metadata and whether this call built it), which exports::

    PRETRAINED = ArtefactKind("pretrained", "pretrained checkpoint", PretrainResult, format=1)
    result = PRETRAINED.get(PRETRAINED.key(ident), lambda: (train(), meta), name="cnn_small")
    result.export(out / "model.pt", out / "meta.json")
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, TypeVar

import torch

from .files import atomic_write, file_sha256, write_text

__all__ = ["cache_root", "file_sha256", "atomic_write", "file_lock", "save_checked", "intact_meta", "load_checked",
           "CacheEntry", "cached", "spec_key", "model_state", "Artefact", "ArtefactKind"]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where relkd caches what it trains: ``$RELKD_CACHE_DIR`` or ``~/.cache/relkd``."""
    root = os.environ.get("RELKD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "relkd"
    )
    return Path(root)


@contextlib.contextmanager
def file_lock(path: Path, what: str = "this cache entry") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing); a second process waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building %s; waiting for %s", what, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_checked(obj: Any, file: Path, meta_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``obj`` (``torch.save``) to ``file`` and ``meta`` plus the file's ``sha256`` to
    ``meta_path``, each atomically and the data first, so :func:`intact_meta` never sees a
    half-written pair. Returns the metadata written. On failure (a full disk, say) the
    partial files are removed and the ``OSError`` raised; what was there before stays."""
    written: dict[str, Any] = {}

    def write_data(tmp: Path) -> None:
        torch.save(obj, tmp)
        written.update(meta, sha256=file_sha256(tmp))

    atomic_write(file, write_data)
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(written, indent=2)))
    return written


def intact_meta(file: Path, meta_path: Path, key: Any, what: str) -> dict[str, Any] | None:
    """The metadata beside a cached file if the file exists, belongs to ``key`` (``None``:
    any key) and has the SHA-256 the metadata names; else ``None`` (a damaged one is
    logged as unusable)."""
    if not file.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if key is not None and meta.get("key") != key:
            raise ValueError(f"it belongs to key {meta.get('key')!r}")
        if file_sha256(file) != meta.get("sha256"):
            raise ValueError("its hash does not match (truncated or altered)")
        return meta
    except Exception as err:  # noqa: BLE001 - any damage means: build again
        log.warning("%s %s is unusable (%s); building it again", what, file, err)
        return None


def load_checked(file: Path, meta_path: Path, key: Any, what: str,
                 check: Callable[[Any, dict[str, Any]], None] | None = None) -> tuple[Any, dict[str, Any]] | None:
    """``(object, metadata)`` of an intact cached file (:func:`intact_meta`), read with
    ``torch.load(weights_only=True)``; ``check(object, meta)`` may raise to refuse it.
    ``None`` when it is missing or unusable (logged)."""
    meta = intact_meta(file, meta_path, key, what)
    if meta is None:
        return None
    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
        if check is not None:
            check(value, meta)
        return value, meta
    except Exception as err:  # noqa: BLE001 - any damage means: build again
        log.warning("%s %s is unusable (%s); building it again", what, file, err)
        return None


@dataclass
class CacheEntry:
    """One entry of the store: its folder, its file and metadata, whether this call built it,
    and the object itself when it was built or loaded here."""

    folder: Path
    file: Path
    meta: dict[str, Any]
    built: bool
    value: Any = None


def entry_folder(kind: str, key: str, name: str = "") -> Path:
    """The folder of the entry ``key`` of ``kind``: ``<root>/<kind>/<name>-<key>``."""
    return cache_root() / kind / (f"{name.replace(':', '_')}-{key}" if name else key)


def peek(kind: str, key: str, *, name: str = "", filename: str = "model.pt",
         load: Callable[[Any, dict[str, Any]], Any] | None = None, what: str = "") -> Any:
    """The object of an intact entry (as :func:`cached` reads it), or ``None`` when there is
    none: builds nothing and waits for no lock."""
    folder = entry_folder(kind, key, name)
    if not (folder / filename).is_file():
        return None
    found = load_checked(folder / filename, folder / "meta.json", key, what or f"cached {kind}", load)
    return None if found is None else found[0]


def cached(kind: str, key: str, build: Callable[[], tuple[Any, dict[str, Any]]], *, name: str = "",
           filename: str = "model.pt", load: Callable[[Any, dict[str, Any]], Any] | None = None,
           force: bool = False, keep_on_write_error: bool = False, what: str = "") -> CacheEntry:
    """The entry ``<root>/<kind>/<name>-<key>/<filename>`` (``meta.json`` beside it).

    Under a lock on the folder: an intact file for ``key`` is used (with ``load``, it is
    read and ``load(value, meta)`` may raise to refuse it); else ``build()`` returns
    ``(object, metadata)``, which is saved with :func:`save_checked` (``key`` is added to
    the metadata). A write error raises, unless ``keep_on_write_error``: then this process
    keeps what it built (the metadata's ``sha256`` is that of its bytes) and later ones
    build again. ``force`` builds even when an intact entry exists; ``what`` names the entry in
    log lines ("teacher checkpoint")."""
    folder = entry_folder(kind, key, name)
    file, meta_path = folder / filename, folder / "meta.json"
    what = what or f"cached {kind}"
    with file_lock(folder / ".lock", what):
        if not force:
            if load is None:
                meta = intact_meta(file, meta_path, key, what)
                if meta is not None:
                    return CacheEntry(folder, file, meta, built=False)
            else:
                found = load_checked(file, meta_path, key, what, load)
                if found is not None:
                    return CacheEntry(folder, file, found[1], built=False, value=found[0])
        value, meta = build()
        meta = {"key": key, **meta}
        try:
            meta = save_checked(value, file, meta_path, meta)
        except OSError as err:
            if not keep_on_write_error:
                raise
            log.warning("could not cache %s %s (%s): this process uses what it built, later ones build it again",
                        what, file, err)
            buffer = io.BytesIO()
            torch.save(value, buffer)
            meta["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    return CacheEntry(folder, file, meta, built=True, value=value)


# ----------------------------------------------------------------------------- trained models on the store


def spec_key(ident: Mapping[str, Any]) -> str:
    """The key of everything that determines an entry: the first 20 hex digits of the SHA-256
    of ``ident`` as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the store keeps of a model: its state dict, detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@dataclass
class Artefact:
    """A trained model on the store: its file, its metadata (``key``, ``sha256`` and what the
    build returned) and whether this call built it. A kind's result subclasses it and names
    what its :meth:`summary` shows (``SUMMARY``)."""

    checkpoint: Path
    meta: dict[str, Any]
    built: bool  # False when loaded from the cache

    #: the summary's entries in order: ``checkpoint`` (the path), ``built`` or ``trained``
    #: (whether this call built it), else the metadata field of that name
    SUMMARY: ClassVar[tuple[str, ...]] = ("checkpoint", "built", "key", "sha256")

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def trained(self) -> bool:
        """:attr:`built`, as a trained model says it."""
        return self.built

    def summary(self) -> dict[str, Any]:
        special = {"checkpoint": str(self.checkpoint), "built": self.built, "trained": self.built}
        return {k: special[k] if k in special else self.meta.get(k) for k in self.SUMMARY}

    def export(self, file: Path, meta_file: Path, **extra: Any) -> tuple[Path, Path]:
        """Copy the checkpoint to ``file`` and the metadata with ``extra`` added to ``meta_file``
        (JSON), each atomically; a file already there with that content is left as it is.
        Returns ``(file, meta_file)``."""
        if not (file.is_file() and file_sha256(file) == self.sha256):
            atomic_write(file, lambda tmp: shutil.copyfile(self.checkpoint, tmp))
        text = json.dumps({**self.meta, **extra}, indent=2)
        if not (meta_file.is_file() and meta_file.read_text() == text):
            write_text(meta_file, text)
        return file, meta_file


A = TypeVar("A", bound=Artefact)


@dataclass(frozen=True)
class ArtefactKind(Generic[A]):
    """One kind of trained model on the store: ``<root>/<folder>/<name>-<key>/<filename>``,
    named ``what`` in log lines, its key covering ``format`` (bump it when the kind's file or
    training changes meaning), returned as ``result``. ``keep_on_write_error``: a process
    keeps the model it built when the disk is full (:func:`cached`)."""

    folder: str
    what: str
    result: type[A]
    format: int
    filename: str = "model.pt"
    keep_on_write_error: bool = False

    def key(self, ident: Mapping[str, Any]) -> str:
        """The key of a spec (everything that determines the model, paths and devices not)."""
        return spec_key({"format": self.format, **ident})

    def folder_of(self, key: str, name: str) -> Path:
        """The entry's folder (where :meth:`get` builds it, under its lock)."""
        return entry_folder(self.folder, key, name)

    def get(self, key: str, build: Callable[[], tuple[torch.nn.Module, dict[str, Any]]], *, name: str,
            force: bool = False, load: Callable[[Any, dict[str, Any]], Any] | None = None, **fields: Any) -> A:
        """The intact entry for ``key``, else ``build()``'s ``(model, metadata)`` stored (the
        model's weights, :func:`model_state`; ``key`` and ``sha256`` added to the metadata), as
        ``result(checkpoint, meta, built, **fields)``. ``load(state, meta)`` reads a found entry
        and may raise to refuse it; ``force`` builds anyway."""
        def store() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            model, meta = build()
            return model_state(model), meta

        entry = cached(self.folder, key, store, name=name, filename=self.filename, load=load, force=force,
                       keep_on_write_error=self.keep_on_write_error, what=self.what)
        return self.result(entry.file, entry.meta, entry.built, **fields)
