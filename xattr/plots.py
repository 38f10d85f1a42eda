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
from matplotlib.ticker import NullFormatter
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from xattr import reports

__all__ = ["PALETTE", "MARKERS", "LINESTYLES", "method_styles", "feature_order", "summary_plot", "bar_plot",
           "heatmap_grid", "curves_plot", "error_vs_evaluations"]

# One style for every method line of every figure: distinct colours (Okabe-Ito first, black for the first method,
# usually the reference) each with its own marker, and a new line style per palette round, so no two methods of
# one figure look alike whatever their number.
PALETTE = ("#000000", "#E69F00", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#8C564B", "#7F7F7F",
           "#BCBD22", "#17BECF", "#9467BD", "#8B0000", "#000080", "#FF1493", "#2E8B57")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", "x")   # one per colour
LINESTYLES = ("-", "--", "-.", ":")

# Blue (low feature value) to red (high), the convention of SHAP summary plots.
_CMAP = LinearSegmentedColormap.from_list("low_high", ["#1E88E5", "#7C52C6", "#FF0D57"])


def method_styles(names: Sequence[str]) -> dict[str, dict[str, str]]:
  """A distinct ``{color, marker, linestyle}`` per name (the matplotlib keywords), in the given order.

  Figures that show the same methods in the same order give each one the same style.

  Example:
    >>> s = method_styles(["ground truth", "dime (penalized)", "dime (confidence)"])
    >>> s["ground truth"]["color"], s["dime (penalized)"] != s["dime (confidence)"]
    ('#000000', True)
  """
  out = {}
  for i, name in enumerate(dict.fromkeys(names)):
    out[name] = dict(color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)],
                     linestyle=LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)])
  return out


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
  return reports.save_figure(fig, path, dpi=None, tight_layout=False, bbox="tight")


def _shown_title(title: str | None, shown: int, total: int) -> str | None:
  """The title, saying how many features are shown when not all of them fit."""
  if shown >= total:
    return title
  note = f"top {shown} of {total} features by mean |value|"
  return f"{title}\n({note})" if title else note


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
    max_display: show the top features only (the title then says "top k of d features").
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
  title = _shown_title(title, len(order), values.shape[1])
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
    max_display: show the top features only (the title then says "top k of d features").
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
  title = _shown_title(title, len(order), values.shape[1])
  if title:
    ax.set_title(title)
  return _save(fig, path)


def _upsample(patch_map: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
  """[gh, gw] -> [H, W] by repeating each patch value over its pixels."""
  gh, gw = patch_map.shape
  return np.repeat(np.repeat(patch_map, image_hw[0] // gh, 0), image_hw[1] // gw, 1)


def heatmap_grid(images: np.ndarray, maps: dict[str, np.ndarray], path: str | os.PathLike, *,
                 row_titles: Sequence[str] | None = None, alpha: float = 0.6, max_columns: int = 9) -> str:
  """Attribution overlays: one row per image, one column per method, patch values over the grayscale image.

  Each map is drawn on a symmetric red (positive) / blue (negative) scale normalised per cell, so the pattern,
  not the method's units, is compared.

  Args:
    images: float[N, H, W, C] in [0, 1].
    maps: method name -> float[N, gh, gw] patch attributions (gh, gw dividing H, W).
    path: output PNG.
    row_titles: one label per image (e.g. "label 3 / pred 3").
    alpha: opacity of the attribution layer.
    max_columns: panels per row; an image with more methods continues on the next row.

  Example:
    >>> import numpy as np, tempfile, os
    >>> imgs = np.random.default_rng(0).random((2, 8, 8, 1))
    >>> p = heatmap_grid(imgs, {"a": np.ones((2, 2, 2))}, os.path.join(tempfile.mkdtemp(), "h.png"))
    >>> os.path.exists(p)
    True
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be float[N, H, W, C], got shape {images.shape}.")
  n, h, w = images.shape[:3]
  for name, m in maps.items():
    if np.ndim(m) != 3 or len(m) != n or h % np.shape(m)[1] or w % np.shape(m)[2]:
      raise ValueError(f"maps[{name!r}] must be float[{n}, gh, gw] with gh, gw dividing {(h, w)}, "
                       f"got shape {np.shape(m)}.")
  panels = [("image", None), *maps.items()]
  cols = min(len(panels), max_columns)                  # many methods wrap onto more rows per image
  rows = -(-len(panels) // cols)
  fig = Figure(figsize=(1.6 * cols, (1.6 * rows + 0.1) * n + 0.4))
  FigureCanvasAgg(fig)
  gray = images.mean(-1)
  for i in range(n):
    for j, (name, m) in enumerate(panels):
      ax = fig.add_subplot(n * rows, cols, (i * rows + j // cols) * cols + j % cols + 1)
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0 or j >= cols:
        ax.set_title(name.replace("_", " "), fontsize=8)
      if m is None:
        ax.imshow(images[i] if images.shape[-1] == 3 else gray[i], cmap="gray", vmin=0, vmax=1)
        if row_titles is not None:
          ax.set_ylabel(row_titles[i], fontsize=7)
        continue
      ax.imshow(gray[i], cmap="gray", vmin=0, vmax=1)
      values = _upsample(np.asarray(m[i], np.float32), (h, w))
      scale = float(np.abs(values).max()) or 1.0
      ax.imshow(values, cmap="bwr", vmin=-scale, vmax=scale, alpha=alpha)
  # The key a reader needs before comparing panels: which colour is which sign, and that scales are per panel.
  top = 1.0 - 0.3 / fig.get_figheight()
  fig.text(0.5, 1.0 - 0.12 / fig.get_figheight(), "red: positive attribution, blue: negative; each panel is scaled "
           "to its own largest |value| (patterns compare, magnitudes do not)", ha="center", va="top", fontsize=8)
  fig.tight_layout(rect=(0, 0, 1, top))
  fig.savefig(path, dpi=110)
  return os.fspath(path)


def curves_plot(fractions: np.ndarray, curves: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, *,
                ylabel: str = "target-class probability", players: str = "patches") -> str:
  """Mean insertion and deletion curves per method, side by side (AUC in the legend).

  Args:
    fractions: float[s] fraction of players inserted/deleted at each step.
    curves: method -> {"insertion": float[N, s], "deletion": float[N, s]}.
    path: output PNG.
    ylabel: what the game measures.
    players: what is inserted / deleted, for the x-axis label ("patches", "features").

  Example:
    >>> import numpy as np, tempfile, os
    >>> f = np.linspace(0, 1, 5); c = {"m": {"insertion": np.ones((2, 5)), "deletion": np.zeros((2, 5))}}
    >>> os.path.exists(curves_plot(f, c, os.path.join(tempfile.mkdtemp(), "c.png")))
    True
  """
  styles = method_styles(list(curves))
  fig = Figure(figsize=(10, 4))
  FigureCanvasAgg(fig)
  marks = max(1, len(fractions) // 8)
  kinds = ("insertion", "deletion")
  means = {name: {kind: np.asarray(c[kind]).mean(0) for kind in kinds} for name, c in curves.items()}
  axes = [fig.add_subplot(1, 2, k + 1) for k in range(2)]
  for ax, kind in zip(axes, kinds):
    for name, mean in means.items():
      areas = " / ".join(f"{float(np.trapezoid(mean[k], fractions)):.3f}" for k in kinds)
      ax.plot(fractions, mean[kind], label=f"{name.replace('_', ' ')} ({areas})", markevery=marks, markersize=4,
              lw=2.2 if name == "explainer" else 1.2, **styles[name])
    ax.set_xlabel(f"fraction of {players} {'inserted' if kind == 'insertion' else 'deleted'}")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{kind} (AUC: {'higher' if kind == 'insertion' else 'lower'} is better)")
  fig.tight_layout()
  # One legend for both panels, below them: inside, a dozen methods' labels hid the curves.
  fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
             ncol=min(4, len(curves)), fontsize=8, title="method (insertion AUC / deletion AUC)", title_fontsize=8)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return os.fspath(path)


def _spaced_ticks(values: np.ndarray, min_ratio: float = 1.3) -> np.ndarray:
  """The distinct positive ``values`` thinned so that neighbours on a log axis are >= ``min_ratio`` apart (their
  labels would overlap otherwise).

  Example:
    >>> _spaced_ticks(np.array([13.25, 24.5, 32.0, 33.0, 60.0, 121.0, 128.0])).tolist()
    [13.25, 24.5, 32.0, 60.0, 121.0]
  """
  kept: list[float] = []
  for v in np.unique(values[values > 0]):
    if not kept or v >= kept[-1] * min_ratio:
      kept.append(float(v))
  return np.asarray(kept)


def error_vs_evaluations(evaluations: dict[str, np.ndarray], errors: dict[str, np.ndarray], path: str | os.PathLike, *,
                         levels: dict[str, float] | None = None, ylabel: str = "mean absolute error vs ground truth",
                         xlabel: str = "model evaluations per explanation") -> str:
  """Error against compute on log-log axes: one line per method, optional horizontal reference levels.

  Args:
    evaluations: method -> float[s] evaluations (x).
    errors: method -> float[s] errors (y).
    path: output PNG.
    levels: name -> error drawn as a dashed horizontal line (e.g. an amortized explainer's error).
    ylabel, xlabel: axis labels.

  Example:
    >>> import numpy as np, tempfile, os
    >>> e = {"ks": np.array([32, 64, 128])}; err = {"ks": np.array([0.1, 0.07, 0.05])}
    >>> os.path.exists(error_vs_evaluations(e, err, os.path.join(tempfile.mkdtemp(), "e.png"), levels={"x": 0.06}))
    True
  """
  fig = Figure(figsize=(5.5, 4))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  styles = method_styles(list(evaluations))
  for name, x in evaluations.items():
    ax.plot(np.asarray(x), np.asarray(errors[name]), label=name, **styles[name])
  for name, level in (levels or {}).items():
    ax.axhline(level, ls="--", color="#777777", lw=1)       # references in gray, apart from the method lines
    # x in axes fraction, y in data units: the label stays at the left edge whatever the final x limits are.
    ax.annotate(name, (0.0, level), xycoords=ax.get_yaxis_transform(), textcoords="offset points", xytext=(4, 4),
                fontsize=8)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ticks = _spaced_ticks(np.concatenate([np.asarray(x, np.float64).ravel() for x in evaluations.values()]))
  if 0 < ticks.size <= 12:                                 # label the evaluation counts themselves
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if len(evaluations) > 3:       # many methods: the legend goes under the axes instead of over the lines
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
  else:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return os.fspath(path)
