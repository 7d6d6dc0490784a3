"""Matplotlib without a display: the one place relkd picks the backend and writes figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .files import atomic_write

__all__ = ["FORMATS", "pyplot", "save_figure"]

#: The files every figure is written as.
FORMATS = ("png", "svg")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, out_dir: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``figure`` as ``out_dir/stem.<format>`` for each format, close it, return the paths."""
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight"))
        paths.append(path)
    pyplot().close(figure)
    return paths
