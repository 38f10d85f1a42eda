"""The locality-alignment report: ``report.md`` (mean ± std over seeds, per-seed F1 gains; built with
:mod:`xattr.reports`) and ``patches.png`` (test mosaics with the true and predicted classes of every patch).

Example:
  >>> mean_std([0.5, 0.7]), mean_std([0.5])
  ('0.600 ± 0.141', '0.500')
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from xattr import reports
from xattr.data import mosaic
from xattr.maskembed.stages import BACKBONES, LABELS

__all__ = ["mean_std", "f1_gains", "write_report", "plot_patches"]

Results = dict[int, dict[str, dict[str, dict[str, float]]]]     # seed -> representation -> probe -> scores


def mean_std(values: list[float]) -> str:
  """``mean ± std`` (sample std) of ``values``, or just the mean of a single value."""
  v = np.asarray(values)
  return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def f1_gains(results: Results, kind: str, name: str = "maskembed") -> list[float]:
  """Per seed, the macro-F1 of representation ``name`` minus the backbone's, with probe ``kind``."""
  return [results[s][name][kind]["macro_f1"] - results[s]["backbone"][kind]["macro_f1"] for s in sorted(results)]


def _setting(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, seeds: list[int]) -> str:
  shared = f"One shared backbone (seed {config.backbone_seed}); " if config.shared_backbone else ""
  return (f"Data: {len(ds.x_train)} train / {len(ds.x_test)} test mosaics of {config.data.grid}x{config.data.grid} "
          f"digits, {ds.x_train.shape[1]}x{ds.x_train.shape[2]} pixels, {ds.grid[0]}x{ds.grid[1]} patches of "
          f"{ds.patch_size} px; per-patch multi-hot labels ({mosaic.describe(ds)}). Backbone: ViT "
          f"{config.model.name} (overrides {dict(config.model.overrides.to_dict())}), trained with image-level "
          f"labels only; tokens read at the penultimate block + final norm, probes on frozen tokens. {shared}"
          f"Seeds (alignment, MIM, probes): {seeds}. Macro scores over the 10 classes on the test patches "
          "(threshold 0.5).")


def write_report(config: ml_collections.ConfigDict, ds: mosaic.MosaicDataset, results: Results, workdir: str,
                 timings: dict[str, float]) -> str:
  """``report.md``: mean ± std over seeds of macro F1/recall/precision per representation and probe, F1 gains."""
  seeds = sorted(results)
  kinds = tuple(config.probes.kinds)
  r = reports.Report("Locality alignment (MaskEmbed) on digit mosaics")
  r.text(_setting(config, ds, seeds))
  rows = []
  for name in BACKBONES:
    for kind in kinds:
      cell = [results[s][name][kind] for s in seeds]
      rows.append([LABELS[name], kind, *(mean_std([c[k] for c in cell])
                                         for k in ("macro_f1", "macro_recall", "macro_precision"))])
  r.table(["representation", "probe", "macro F1", "macro recall", "macro precision"], rows)
  r.text("Macro-F1 gain over the image-level backbone, per seed:")
  gains = []
  for kind in kinds:
    gain, mim = f1_gains(results, kind), f1_gains(results, kind, "mim")
    gains.append([kind, f"{mean_std(gain)} ({', '.join(f'{g:+.3f}' for g in gain)})", mean_std(mim),
                  f"{sum(g > 0 for g in gain)}/{len(seeds)}"])
  r.table(["probe", "MaskEmbed - backbone", "MIM - backbone", "MaskEmbed wins (seeds)"], gains)
  r.text("Timings (s): " + ", ".join(f"{k}={v:.0f}" for k, v in timings.items()))
  r.figure(os.path.join(workdir, "patches.png"), "patch predictions")
  return r.write(os.path.join(workdir, "report.md"))


def _draw_sets(ax: Any, ds: mosaic.MosaicDataset, i: int, sets: np.ndarray) -> None:
  gh, gw = ds.grid
  p = ds.patch_size
  ax.imshow(ds.x_test[i, ..., 0] if ds.x_test.shape[-1] == 1 else ds.x_test[i], cmap="gray", vmin=0, vmax=1)
  for k in range(gh * gw):
    r, c = divmod(k, gw)
    truth = set(np.flatnonzero(ds.patch_test[i, k]).tolist())
    pred = set(np.flatnonzero(sets[i, k]).tolist())
    text = "".join(ds.class_names[x] for x in sorted(pred)) or "·"
    ax.text(c * p + p / 2, r * p + p / 2, text, color="lime" if pred == truth else "red", ha="center",
            va="center", fontsize=7, fontweight="bold")
  ax.set_xticks(np.arange(0, gw * p + 1, p) - 0.5, labels=[])
  ax.set_yticks(np.arange(0, gh * p + 1, p) - 0.5, labels=[])
  ax.grid(color="yellow", linewidth=0.4, alpha=0.5)
  ax.tick_params(length=0)


def plot_patches(ds: mosaic.MosaicDataset, probs: dict[str, np.ndarray], path: str, num_images: int,
                 threshold: float = 0.5) -> str:
  """Test mosaics with, in every patch, the true class set and each representation's predicted set."""
  columns = {"ground truth": ds.patch_test[:num_images], **{k: v[:num_images] > threshold for k, v in probs.items()}}
  fig, axes = reports.figure(len(columns), num_images, size=(2.6, 2.6))
  axes = np.asarray(axes).reshape(num_images, len(columns))
  for i in range(num_images):
    for j, (title, sets) in enumerate(columns.items()):
      _draw_sets(axes[i, j], ds, i, sets)
      if i == 0:
        axes[i, j].set_title(title, fontsize=8)
  fig.suptitle("Per-patch digit sets (green: exact, red: wrong); transformer probe on frozen tokens", fontsize=9)
  return reports.save_figure(fig, path, dpi=110)
