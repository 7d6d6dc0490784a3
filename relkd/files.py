"""Writing files so that nothing is left half done: every file relkd writes for the user
(configs, exports, reports, tables, metrics) and every cache entry goes through
:func:`atomic_write`. A failure names the user's path (never the temporary file), and the
temporary file is removed on every failure; what was there before stays."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "write_text", "file_sha256", "not_a_file"]


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file (``"no such file 'x'"``, ``"'x' is a folder, not a
    file"``), or ``None`` when it is a file."""
    p = Path(path)
    if p.is_file():
        return None
    if p.is_dir():
        return f"{str(p)!r} is a folder; expected a file"
    if p.exists():
        return f"{str(p)!r} is not a regular file"
    return f"no such file {str(p)!r}"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Produce ``target`` by writing a temporary file beside it (``write(tmp)``) and renaming
    it into place, so that a reader (or another process writing the same file) never sees it
    half done. The folder is created if needed.

    Raises ``IsADirectoryError`` when ``target`` is a folder, and on any failure an ``OSError``
    of the same kind whose filename is ``target``; the temporary file is gone either way."""
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file name", str(target))
    # one name per process: two processes never share it, and one process writing the same
    # content twice writes the same bytes (torch.save names its archive after the file)
    tmp_path = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path)
        os.replace(tmp_path, target)
    except BaseException as err:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(err, OSError) and (err.filename is None or err.filename == str(tmp_path)):
            reason = err.strerror or str(err)
            if err.errno is None:
                raise OSError(f"{target}: {reason}") from err
            raise type(err)(err.errno, reason, str(target)) from err
        raise
    return target


def write_text(target: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
