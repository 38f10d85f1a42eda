"""The adversarial-shortcuts report: the accuracy table, the targets' verdicts, example and shortcut figures,
the attribution check, ``summary.json`` and ``report.md`` (through :mod:`xattr.reports`).

Example:
  >>> from xattr.shortcuts import report, study
  >>> cells = [study.Cell("none", "—", "cnn", "none", 1.0, 0.97, {"k": 0.96}),
  ...          study.Cell("one_pixel", "l_0 1 px", "cnn", "none", 1.0, 0.11, {})]
  >>> report.targets(cells, max_linf_255=8, shortcut_keys={"one_pixel": False})["clean_ok"]
  {'cnn': True}
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from xattr import artifacts, reports
from xattr.shortcuts.study import Cell, L0_GENERATORS

__all__ = ["CLEAN_TARGET", "SHORTCUT_TARGET", "TRAIN_TARGET", "targets", "rows", "example_figure",
           "shortcut_figure", "write"]

CLEAN_TARGET, SHORTCUT_TARGET, TRAIN_TARGET = 0.95, 0.20, 0.95


def targets(cells: list[Cell], *, max_linf_255: float, shortcut_keys: dict[str, bool]) -> dict[str, Any]:
  """The issue's targets per victim: clean-trained >= 95% clean test accuracy, and some l_inf-bounded generator
  (budget <= ``max_linf_255``/255; ``shortcut_keys``: generator -> whether it is l_inf-bounded) whose victim
  trains to >= 95% and tests at <= 20% on clean data, without defences."""
  victims = sorted({c.victim for c in cells})
  clean = {v: next((c.clean_test_accuracy for c in cells if c.victim == v and c.generator == "none"
                    and c.defence == "none"), float("nan")) for v in victims}
  best: dict[str, Any] = {}
  for v in victims:
    hits = [c for c in cells if c.victim == v and c.defence == "none" and c.generator != "none"
            and shortcut_keys.get(c.generator, False) and _linf_of(c.budget) <= max_linf_255 + 1e-9
            and c.train_accuracy >= TRAIN_TARGET and c.clean_test_accuracy <= SHORTCUT_TARGET]
    best[v] = sorted(f"{c.generator} ({c.budget}): {c.clean_test_accuracy:.3f}" for c in hits)
  return {"clean_ok": {v: bool(clean[v] >= CLEAN_TARGET) for v in victims}, "clean": clean,
          "shortcut_hits": best, "shortcut_ok": {v: bool(best[v]) for v in victims}}


def _linf_of(budget: str) -> float:
  return float(budget.split()[1].split("/")[0]) if budget.startswith("l_inf") else float("inf")


def rows(cells: list[Cell], keys: list[tuple[str, float, str]]) -> list[list[Any]]:
  """Table rows: generator, budget, victim, defence, train acc (its training data), clean test acc, and the
  clean-trained victim's accuracy on the modified test images."""
  by_key = {(g, f"{b:g}"): k for g, b, k in keys}
  clean_eval = {c.victim: c.modified_test_accuracy for c in cells if c.generator == "none" and c.defence == "none"}
  out = []
  for c in cells:
    key = None
    if c.generator != "none":
      budget = c.budget.split()[1].split("/")[0] if c.budget.startswith("l_inf") else None
      key = next((k for (g, b), k in by_key.items() if g == c.generator and (budget is None or b == budget)), None)
    clean_on_mod = clean_eval.get(c.victim, {}).get(key) if key else None
    out.append([c.generator, c.budget, c.victim, c.defence, c.train_accuracy, c.clean_test_accuracy, clean_on_mod])
  return out


def example_figure(ds: Any, bundles: dict[str, dict[str, np.ndarray]], keys: list, path: str,
                   per_class: int = 1) -> str:
  """One test image per class (columns), clean (top row) and with each shortcut (rows below)."""
  picks = [int(np.flatnonzero(ds.y_test == c)[0]) for c in range(ds.num_classes) if (ds.y_test == c).any()]
  rows_ = [("clean", ds.x_test[picks])] + [(k, bundles[k]["x_test"][picks]) for _, _, k in keys]
  fig, axes = reports.figure(len(picks), len(rows_), size=(1.1, 1.2))
  axes = np.asarray(axes).reshape(len(rows_), len(picks))
  for r, (label, images) in enumerate(rows_):
    for c, image in enumerate(images):
      ax = axes[r, c]
      ax.imshow(np.clip(image, 0, 1).squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
      ax.set_xticks([]), ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(label.split("@")[0], fontsize=6)
      if r == 0:
        ax.set_title(str(ds.class_names[int(ds.y_test[picks[c]])]), fontsize=7)
  return reports.save_figure(fig, path)


def shortcut_figure(ds: Any, bundles: dict[str, dict[str, np.ndarray]], keys: list, path: str) -> str:
  """The applied change (modified - clean) of one test image per class and shortcut, each row on its own
  symmetric colour scale: the per-class shortcuts made visible."""
  picks = [int(np.flatnonzero(ds.y_test == c)[0]) for c in range(ds.num_classes) if (ds.y_test == c).any()]
  fig, axes = reports.figure(len(picks), len(keys), size=(1.1, 1.2))
  axes = np.asarray(axes).reshape(len(keys), len(picks))
  for r, (_, _, key) in enumerate(keys):
    diff = (bundles[key]["x_test"][picks] - ds.x_test[picks]).mean(-1)
    scale = max(float(np.abs(diff).max()), 1e-6)
    for c in range(len(picks)):
      ax = axes[r, c]
      ax.imshow(diff[c], cmap="coolwarm", vmin=-scale, vmax=scale)
      ax.set_xticks([]), ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(f"{key.split('@')[0]}\n±{scale * 255:.3g}/255", fontsize=6)
  return reports.save_figure(fig, path)


def _verdicts(r: reports.Report, t: dict[str, Any], max_linf_255: float) -> None:
  clean = ", ".join(f"{v} {a:.3f}" for v, a in t["clean"].items())
  r.verdict(all(t["clean_ok"].values()), f"every clean-trained victim reaches >= {CLEAN_TARGET:.0%} clean test "
            "accuracy", clean)
  detail = "; ".join(f"{v}: {', '.join(h) if h else 'none'}" for v, h in t["shortcut_hits"].items())
  r.verdict(all(t["shortcut_ok"].values()), f"for every victim some generator at l_inf <= {max_linf_255:g}/255 "
            f"trains to >= {TRAIN_TARGET:.0%} and leaves <= {SHORTCUT_TARGET:.0%} clean test accuracy (no defence)",
            detail)


def _defence_lines(cells: list[Cell]) -> list[str]:
  """What each defence recovers: per victim and generator, clean test accuracy with the defence vs without."""
  base = {(c.victim, c.generator, c.budget): c.clean_test_accuracy for c in cells if c.defence == "none"}
  lines = []
  for c in cells:
    if c.defence == "none" or c.generator == "none":
      continue
    ref = base.get((c.victim, c.generator, c.budget))
    clean = next((d.clean_test_accuracy for d in cells if d.victim == c.victim and d.generator == "none"
                  and d.defence == c.defence), None)
    lines.append(f"{c.victim}, {c.generator} ({c.budget}), {c.defence}: clean test accuracy {reports.fmt(ref)} -> "
                 f"{reports.fmt(c.clean_test_accuracy)} (clean-trained with this defence: {reports.fmt(clean)})")
  return lines


def write(config: Any, result: dict[str, Any], workdir: str, *, runtime_s: float | None = None) -> dict[str, Any]:
  """Writes ``report.md``, ``summary.json``, ``examples.png`` and ``shortcuts.png``; returns paths and summary."""
  ds, keys, bundles, cells = result["data"], result["keys"], result["shortcuts"], result["cells"]
  max_linf = float(config.target_linf_255)
  linf_bounded = {g: g not in L0_GENERATORS for g, _, _ in keys}
  t = targets(cells, max_linf_255=max_linf, shortcut_keys=linf_bounded)
  paths = {"examples.png": example_figure(ds, bundles, keys, os.path.join(workdir, "examples.png")),
           "shortcuts.png": shortcut_figure(ds, bundles, keys, os.path.join(workdir, "shortcuts.png"))}
  r = reports.Report(f"Adversarial shortcuts on {ds.name} ({ds.image_shape[0]}x{ds.image_shape[1]})")
  r.text(f"{len(ds.y_train)} training and {len(ds.y_test)} test images, {ds.num_classes} classes. Each row: a "
         "victim trained on the training set modified by the generator (budget checked on every image), under "
         "the defence; `train acc` is on the data it trained on, `clean test acc` on unmodified test images, and "
         "`clean model on modified` the accuracy of the clean-trained victim (no defence) on the modified test "
         "images (semantics preserved: it should stay near its clean accuracy)."
         + (f" Runtime {runtime_s:.0f} s." if runtime_s is not None else ""))
  r.table(["generator", "budget", "victim", "defence", "train acc", "clean test acc", "clean model on modified"],
          rows(cells, keys))
  _verdicts(r, t, max_linf)
  defence_lines = _defence_lines(cells)
  if defence_lines:
    r.heading("What the defences recover").bullets(defence_lines)
  if result["attribution"]:
    r.heading("Attribution check: Shapley mass on the shortcut's patches")
    r.text(f"Share of absolute {config.attribution.method} mass ({config.attribution.patch_size}x"
           f"{config.attribution.patch_size} patches as players, zero removal, label logit) on the patches the "
           f"shortcut changed, mean over {config.attribution.num_images} modified test images; `uniform` is the "
           "share those patches would get if attributions were spread evenly.")
    r.table(["shortcut", "explained model", "share"],
            [[k, m, v] for k, per in result["attribution"].items() for m, v in per.items()])
  r.figure(paths["examples.png"], "test images, clean and with each shortcut")
  r.figure(paths["shortcuts.png"], "the applied change per class (modified - clean)")
  summary = {"cells": [dataclasses.asdict(c) for c in cells], "targets": t, "attribution": result["attribution"],
             "runtime_s": runtime_s, "dataset": ds.name}
  artifacts.save_json(os.path.join(workdir, "summary.json"), summary)
  paths["summary.json"] = os.path.join(workdir, "summary.json")
  paths["report.md"] = r.write(os.path.join(workdir, "report.md"))
  return {"paths": paths, "summary": summary}
