"""The one report builder: markdown sections, tables, figures and verdict lines, written atomically.

Every experiment ends in a ``report.md`` a person reads first. The per-experiment code decides *what* to say;
this module decides *how*: numbers formatted one way, tables with a header rule, figures saved beside the report
and linked relative to it, and a verdict line that states plainly whether the experiment's claim held.

Example:
  >>> import os, tempfile
  >>> from xattr import reports
  >>> r = reports.Report("Demo")
  >>> _ = r.table(["method", "error"], [["exact", 0.0], ["sampled", 0.01234]])
  >>> _ = r.verdict(True, "the sampled estimate is within 0.05 of exact")
  >>> print(r.markdown())
  # Demo
  <BLANKLINE>
  | method | error |
  | --- | --- |
  | exact | 0 |
  | sampled | 0.0123 |
  <BLANKLINE>
  **Verdict: yes** — the sampled estimate is within 0.05 of exact.
  <BLANKLINE>
  >>> path = r.write(os.path.join(tempfile.mkdtemp(), "report.md"))
  >>> open(path).read().startswith("# Demo")
  True
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fmt", "table", "verdict", "save_figure", "figure", "Report"]


def fmt(value: Any, digits: int = 3) -> str:
  """A number as a short string (``digits`` significant digits; ints as ints; NaN/None as '—').

  Example:
    >>> fmt(0.123456), fmt(12345.6), fmt(3), fmt(float("nan")), fmt("text"), fmt(True)
    ('0.123', '1.23e+04', '3', '—', 'text', 'yes')
  """
  if value is None:
    return "—"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, numbers.Integral):
    return str(int(value))
  if isinstance(value, numbers.Real):
    v = float(value)
    if math.isnan(v):
      return "—"
    if math.isinf(v):
      return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:   # numpy scalars
    return fmt(value.item(), digits)
  return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
  """A markdown table; numbers through :func:`fmt`.

  Raises:
    ValueError: a row whose length differs from ``headers``.

  Example:
    >>> print(table(["a", "b"], [[1, 0.5]]))
    | a | b |
    | --- | --- |
    | 1 | 0.5 |
  """
  headers = list(headers)
  lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
  for i, row in enumerate(rows):
    row = list(row)
    if len(row) != len(headers):
      raise ValueError(f"rows[{i}] must have {len(headers)} cells (one per header {headers}), got {len(row)}.")
    lines.append("| " + " | ".join(fmt(c, digits) for c in row) + " |")
  return "\n".join(lines)


def verdict(ok: bool | None, claim: str, detail: str = "") -> str:
  """One line saying whether ``claim`` held: yes, no, or undecided (``ok=None``).

  Example:
    >>> verdict(False, "ranking A wins at k = 100", "it loses by 0.02")
    '**Verdict: no** — ranking A wins at k = 100 (it loses by 0.02).'
  """
  word = "undecided" if ok is None else ("yes" if ok else "no")
  tail = f" ({detail})" if detail else ""
  return f"**Verdict: {word}** — {claim.rstrip('.')}{tail}."


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.5, 4.0)) -> tuple[Any, Any]:
  """A matplotlib ``(Figure, axes)`` that needs no display (Agg canvas, no pyplot global state).

  Example:
    >>> fig, ax = figure()
    >>> _ = ax.plot([0, 1], [0, 1])
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=True)
  return fig, axes


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int | None = 120, tight_layout: bool = True,
                bbox: str | None = None) -> str:
  """Saves a matplotlib figure to ``path`` (format by extension) atomically and returns the path.

  Args:
    fig: a matplotlib ``Figure`` (with or without a canvas; an Agg canvas is attached if it has none).
    path: the image file; its folder is created.
    dpi: resolution; None uses the figure's own.
    tight_layout: call ``fig.tight_layout()`` first.
    bbox: passed to ``savefig(bbox_inches=...)``, e.g. ``"tight"``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp-{os.getpid()}{ext or '.png'}"
  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)
  if tight_layout:
    fig.tight_layout()
  try:
    fig.savefig(tmp, dpi=fig.dpi if dpi is None else dpi, bbox_inches=bbox)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


class Report:
  """A markdown report built block by block; :meth:`write` saves it (figures linked relative to it)."""

  def __init__(self, title: str):
    self._blocks: list[str] = [f"# {title}"]
    self._figures: list[str] = []

  def heading(self, text: str, level: int = 2) -> Report:
    self._blocks.append("#" * level + " " + text)
    return self

  def text(self, *lines: str) -> Report:
    """A paragraph (lines joined by newlines)."""
    self._blocks.append("\n".join(lines))
    return self

  def bullets(self, items: Iterable[str]) -> Report:
    self._blocks.append("\n".join(f"- {item}" for item in items))
    return self

  def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> Report:
    self._blocks.append(table(headers, rows, digits))
    return self

  def verdict(self, ok: bool | None, claim: str, detail: str = "") -> Report:
    self._blocks.append(verdict(ok, claim, detail))
    return self

  def figure(self, path: str | os.PathLike, caption: str = "") -> Report:
    """Links a saved image (its path is made relative to the report when written)."""
    self._figures.append(os.fspath(path))
    self._blocks.append(f"\0figure:{len(self._figures) - 1}:{caption}")
    return self

  def markdown(self, base_dir: str | None = None) -> str:
    """The report's text; figure links are relative to ``base_dir`` when given."""
    out = []
    for block in self._blocks:
      if block.startswith("\0figure:"):
        _, index, caption = block.split(":", 2)
        path = self._figures[int(index)]
        link = os.path.relpath(path, base_dir) if base_dir else path
        block = f"![{caption or os.path.basename(path)}]({link})"
      out.append(block)
    return "\n\n".join(out) + "\n"

  def write(self, path: str | os.PathLike) -> str:
    """Writes the report to ``path`` atomically and returns the path."""
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    os.makedirs(base, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      f.write(self.markdown(base))
    os.replace(tmp, path)
    return path
