"""Figures for feature selection: metric curves with seed spread, and the order in which pixels were chosen.

Drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot global state), like :mod:`xattr.plots`.

Example:
  >>> import numpy as np, os, tempfile
  >>> from xattr.selection import plots
  >>> curves = {"gdfs": (np.arange(3), np.array([0.1, 0.5, 0.8]), np.array([0.0, 0.05, 0.02]))}
  >>> path = plots.curves_plot(curves, os.path.join(tempfile.mkdtemp(), "c.png"), xlabel="features",
  ...                          ylabel="accuracy")
  >>> os.path.exists(path)
  True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xattr import plots as shared_plots

__all__ = ["curves_plot", "order_plot"]


def _save(fig: Figure, path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
  return path


def curves_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | os.PathLike, *,
                xlabel: str, ylabel: str, title: str | None = None, dpi: int = 120) -> str:
  """One line per method with a shaded band of +- one standard deviation over seeds.

  Args:
    curves: name -> (x, mean, std), arrays of equal length (NaN points are skipped).
    path: output PNG.
    xlabel, ylabel, title: labels.

  Returns:
    the path written.
  """
  fig = Figure(figsize=(6.4, 4.4), dpi=dpi)
  ax = fig.add_subplot()
  styles = shared_plots.method_styles(list(curves))      # every curve its own colour and marker
  for name, (x, mean, std) in curves.items():
    x, mean, std = (np.asarray(a, np.float64) for a in (x, mean, std))
    ok = np.isfinite(x) & np.isfinite(mean)
    style = dict(styles[name], linestyle="--" if "(" in name else styles[name]["linestyle"])  # "(rule)": a sweep
    ax.plot(x[ok], mean[ok], markersize=3.5, linewidth=1.4, label=name, **style)
    ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], color=style["color"], alpha=0.15, linewidth=0)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(frameon=False, fontsize=8)
  return _save(fig, path)


def order_plot(images: np.ndarray, orders: Mapping[str, np.ndarray], path: str | os.PathLike, *,
               groups: np.ndarray | None = None, num_steps: int = 10, labels: Sequence[str] | None = None,
               dpi: int = 120) -> str:
  """Images with the first ``num_steps`` selections numbered in order, one row per method.

  Args:
    images: float[n, H, W] (e.g. unstandardized digits).
    orders: method -> int[n, T] selected players per step (-1 = stopped).
    path: output PNG.
    groups: optional bool[num_players, H * W] group matrix (a selected group is outlined); None: players are
      pixels.
    num_steps: how many selections to number.
    labels: optional per-image titles (e.g. the true class).

  Returns:
    the path written.
  """
  images = np.asarray(images, np.float64)
  n, h, w = images.shape
  rows = list(orders)
  fig = Figure(figsize=(1.7 * n, 1.8 * len(rows)), dpi=dpi)
  for r, name in enumerate(rows):
    order = np.asarray(orders[name])
    for c in range(n):
      ax = fig.add_subplot(len(rows), n, r * n + c + 1)
      ax.imshow(images[c], cmap="gray_r", interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name, fontsize=9)
      if r == 0 and labels is not None:
        ax.set_title(str(labels[c]), fontsize=9)
      for step, player in enumerate(order[c, :num_steps]):
        if player < 0:
          break
        cells = np.flatnonzero(groups[player]) if groups is not None else np.array([player])
        ys, xs = np.divmod(cells, w)
        ax.add_patch(_outline(xs, ys))
        ax.text(xs.mean(), ys.mean(), str(step + 1), ha="center", va="center", fontsize=7, color="#D81B60",
                fontweight="bold")
  return _save(fig, path)


def _outline(xs: np.ndarray, ys: np.ndarray) -> Rectangle:
  return Rectangle((xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1,
                   fill=False, edgecolor="#D81B60", linewidth=1.0)
