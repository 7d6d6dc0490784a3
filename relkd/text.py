"""Numbers and tables as text, written one way everywhere: a fraction as a percentage
(:func:`percent`), a mean with its spread (:func:`mean_pm`), a p-value (:func:`p_value`) and a
Markdown table (:func:`markdown_table`). The command line, the Markdown files a run writes and
the HTML report all format through here, so a missing value reads the same in each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table", "mean_pm", "p_value", "percent"]


def percent(value: float | None, *, missing: str = "", unit: str = "", sign: bool = False,
            digits: int = 2) -> str:
    """A fraction in percent, ``digits`` after the point (``0.8345`` → ``"83.45"``), followed by
    ``unit`` (``"%"`` where the column does not say it); ``sign`` writes ``+`` before gains;
    ``None`` (nothing measured) is ``missing``."""
    if value is None:
        return missing
    return f"{100 * value:{'+' if sign else ''}.{digits}f}{unit}"


def mean_pm(mean: float | None, std: float | None, *, missing: str = "") -> str:
    """A mean and its standard deviation in percent, ``83.45 ± 0.30``; ``missing`` without a
    mean; the spread alone missing (one seed) is written as 0."""
    if mean is None:
        return missing
    return f"{percent(mean)} ± {percent(std or 0.0)}"


def p_value(p: float | None, *, missing: str = "") -> str:
    """A p-value to three significant figures; ``missing`` where no test could be made."""
    return missing if p is None else f"{p:.3g}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]],
                   right: Iterable[int] = ()) -> str:
    """A Markdown table: the header, its rule (columns numbered in ``right`` aligned right) and
    one line per row, cells written with ``str``; no newline after the last line. A row with
    another number of cells than the header is an error (the table would shift silently)."""
    right = set(right)
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [_line(header), "|" + "|".join(rule) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"markdown_table: a row has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append(_line(row))
    return "\n".join(lines)


def _line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
