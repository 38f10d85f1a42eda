"""Summary plots of attributions over a set of inputs (SHAP-style beeswarm and mean-|value| bars).

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas directly, so plotting never touches
pyplot's global backend or state (safe in tests, servers and notebooks alike).

Example:
  >>> import numpy as np, tempfile, os
  >>> rng = np.random.default_rng(0)
  >>> x = rng.normal(size=(50, 3)); phi = x * [2.0, -1.0, 0.1]
  >>> path = summary_plot(phi, x, ["a", "b", "c"], os.path.join(tempfile.mkdtemp(), "s.png"))
  >>> os.path.exists(path)
  True
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

__all__ = ["feature_order", "summary_plot", "bar_plot"]

# Blue (low feature value) to red (high), the convention of SHAP summary plots.
_CMAP = LinearSegmentedColormap.from_list("low_high", ["#1E88E5", "#7C52C6", "#FF0D57"])


def _check(values: np.ndarray, feature_names: Sequence[str], features: np.ndarray | None = None) -> None:
  if values.ndim != 2:
    raise ValueError(f"values must be float[num_inputs, num_features] (select one output of a vector-valued "
                     f"explanation first), got shape {values.shape}.")
  if len(feature_names) != values.shape[1]:
    raise ValueError(f"feature_names must have {values.shape[1]} entries (values' columns), "
                     f"got {len(feature_names)}.")
  if features is not None and features.shape != values.shape:
    raise ValueError(f"features must have the shape of values {values.shape}, got {features.shape}.")


def feature_order(values: np.ndarray) -> np.ndarray:
  """Feature indices sorted by decreasing mean |value| over inputs."""
  return np.argsort(-np.abs(np.asarray(values)).mean(0), kind="stable")


def _swarm_offsets(v: np.ndarray, bins: int = 60, width: float = 0.4) -> np.ndarray:
  """Vertical offsets that stack points falling in the same value bin, alternating up and down (beeswarm)."""
  n = v.size
  if n == 0:
    return np.zeros(0)
  span = v.max() - v.min()
  bucket = np.zeros(n, int) if span == 0 else np.minimum(((v - v.min()) / span * bins).astype(int), bins - 1)
  rank = np.zeros(n)
  order = np.lexsort((np.random.default_rng(0).random(n), bucket))     # ties placed in a fixed random order
  counts = np.zeros(bins, int)
  for i in order:
    k = counts[bucket[i]]
    counts[bucket[i]] += 1
    rank[i] = (k + 1) // 2 * (1 if k % 2 else -1)                           # 0, +1, -1, +2, -2, ...
  largest = max(np.abs(rank).max(), 1.0)
  return rank * min(width / largest, 0.05)


def _save(fig: Figure, path: str | os.PathLike) -> str:
  path = os.fspath(path)
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
  return path


def summary_plot(values: np.ndarray, features: np.ndarray, feature_names: Sequence[str],
                 path: str | os.PathLike, *, max_display: int = 20, title: str | None = None,
                 xlabel: str = "Shapley value (impact on model output)", dpi: int = 120) -> str:
  """Beeswarm summary: one row per feature (sorted by mean |value|), one dot per input, colored by the
  input's (standardized, clipped to its 5-95% range) feature value.

  Args:
    values: float[n, d] attributions (one output).
    features: float[n, d] the explained inputs, for the colors.
    feature_names: d names.
    path: output image file (the format follows the extension).
    max_display: show the top features only.
    title: optional figure title.
    xlabel: x-axis label.
    dpi: resolution.

  Returns:
    ``path``.
  """
  values = np.asarray(values, np.float64)
  features = np.asarray(features, np.float64)
  _check(values, feature_names, features)
  order = feature_order(values)[:max_display]
  fig = Figure(figsize=(8, 0.4 * len(order) + 1.5), dpi=dpi)
  ax = fig.add_subplot()
  ax.axvline(0.0, color="#999999", lw=0.8, zorder=0)
  norm = Normalize(0.0, 1.0)
  for row, j in enumerate(order):
    y = len(order) - 1 - row                                   # most important on top
    lo, hi = np.nanpercentile(features[:, j], [5, 95])
    if hi <= lo:
      lo, hi = features[:, j].min(), features[:, j].max()
    color = np.clip((features[:, j] - lo) / (hi - lo), 0, 1) if hi > lo else np.full(len(values), 0.5)
    ax.scatter(values[:, j], y + _swarm_offsets(values[:, j]), c=color, cmap=_CMAP, norm=norm, s=12,
               alpha=0.85, linewidths=0, rasterized=True)
  ax.set_yticks(range(len(order)), [feature_names[j] for j in order[::-1]])
  ax.set_ylim(-0.7, len(order) - 0.3)
  ax.set_xlabel(xlabel)
  for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)
  ax.tick_params(axis="y", length=0)
  ax.grid(axis="y", color="#eeeeee", lw=0.6)
  ax.set_axisbelow(True)
  bar = fig.colorbar(ScalarMappable(norm=norm, cmap=_CMAP), ax=ax, aspect=40, pad=0.02, ticks=[0, 1])
  bar.set_ticklabels(["Low", "High"])
  bar.set_label("Feature value")
  bar.outline.set_visible(False)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def bar_plot(values: np.ndarray, feature_names: Sequence[str], path: str | os.PathLike, *,
             max_display: int = 20, title: str | None = None,
             xlabel: str = "mean |Shapley value|", dpi: int = 120) -> str:
  """Horizontal bars of mean |value| per feature, largest on top.

  Args:
    values: float[n, d] attributions (one output).
    feature_names: d names.
    path: output image file.
    max_display: show the top features only.
    title: optional figure title.
    xlabel: x-axis label.
    dpi: resolution.

  Returns:
    ``path``.
  """
  values = np.asarray(values, np.float64)
  _check(values, feature_names)
  order = feature_order(values)[:max_display]
  importance = np.abs(values).mean(0)[order]
  fig = Figure(figsize=(8, 0.4 * len(order) + 1.5), dpi=dpi)
  ax = fig.add_subplot()
  y = np.arange(len(order))[::-1]
  ax.barh(y, importance, color="#FF0D57", height=0.7)
  for yi, v in zip(y, importance):
    ax.text(v, yi, f" {v:.3g}", va="center", fontsize=8, color="#555555")
  ax.set_yticks(y, [feature_names[j] for j in order])
  ax.set_xlabel(xlabel)
  ax.set_xlim(0, importance.max() * 1.15 if importance.size and importance.max() > 0 else 1)
  for side in ("top", "right"):
    ax.spines[side].set_visible(False)
  ax.tick_params(axis="y", length=0)
  if title:
    ax.set_title(title)
  return _save(fig, path)
