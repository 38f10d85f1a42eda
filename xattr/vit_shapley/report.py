"""The ViT Shapley report: ``report.md`` (built with :mod:`xattr.reports`), ``values.npz`` and the figures
``curves.png``, ``heatmaps.png`` and ``budget.png``.

Example:
  >>> budget_sentence(dict(budgets=[32, 64], kernel_shap_mae=[0.2, 0.1], explainer_mae=0.15,
  ...                      evaluations_to_match=45.3)).split(". ")[-1]
  "KernelSHAP needs about **45 model evaluations per image** to match the explainer's error."
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from xattr import plots, reports
from xattr.vit_shapley.evaluate import Evaluation

__all__ = ["cell", "budget_sentence", "amortization_sentence", "write_report", "write_figures", "write_values"]


def cell(row: dict[str, float], key: str) -> str:
  """``row[key]`` as ``mean ± sem`` (when ``row`` has ``<key>_sem``), or '–' when missing or not finite.

  Example:
    >>> cell({"auc": 0.5, "auc_sem": 0.01}, "auc"), cell({"mae": 0.25}, "mae"), cell({}, "mae")
    ('0.500 ± 0.010', '0.250', '–')
  """
  if key not in row or not np.isfinite(row[key]):
    return "–"
  sem = row.get(f"{key}_sem")
  return f"{row[key]:.3f} ± {sem:.3f}" if sem is not None else f"{row[key]:.3f}"


def budget_sentence(b: dict[str, Any]) -> str:
  """One sentence: KernelSHAP's MAE per budget and how many evaluations it needs to match the explainer."""
  needed = b["evaluations_to_match"]
  pairs = ", ".join(f"{n}: {m:.4f}" for n, m in zip(b["budgets"], b["kernel_shap_mae"]))
  if needed is None:
    verdict = f"KernelSHAP is already more accurate than the explainer at {b['budgets'][0]} evaluations."
  elif not np.isfinite(needed):
    verdict = f"KernelSHAP does not reach the explainer's error within {b['budgets'][-1]} evaluations."
  else:
    verdict = f"KernelSHAP needs about **{needed:.0f} model evaluations per image** to match the explainer's error."
  return f"KernelSHAP MAE by evaluations per image ({pairs}); explainer MAE {b['explainer_mae']:.4f}. " + verdict


def _verdict_line(verdict: dict[str, Any]) -> str:
  both = verdict["insertion"] and verdict["deletion"]
  return (f"Explainer vs every baseline: insertion {'best' if verdict['insertion'] else 'NOT best'}, "
          f"deletion {'best' if verdict['deletion'] else 'NOT best'}"
          + ("" if both else f" (beaten by: {', '.join(verdict['beaten_by']) or '–'})") + ".")


def write_report(path: str, config: ml_collections.ConfigDict, dataset_name: str, summary: dict[str, Any],
                 context: dict[str, Any]) -> str:
  """Writes ``report.md``: setting, the per-method table, the verdict, errors, baseline settings, budget, figures."""
  table, e, c = summary["methods"], config.evaluate, context
  r = reports.Report(f"ViT Shapley on {dataset_name}")
  r.text(f"Model `{config.model.name}` at {config.data.image_size}x{config.data.image_size}, {c['num_patches']} "
         f"patches (players). Test accuracy: classifier {c['classifier_accuracy']:.4f}, surrogate "
         f"{c['surrogate_accuracy']:.4f} on full images and {c['surrogate_masked_accuracy']:.4f} with half the "
         "patches held out (uniform-cardinality masks).")
  r.text(f"{c['num_images']} test images, each explained for the classifier's predicted class. Ground truth: "
         f"**{c['ground_truth']}** Shapley values of the surrogate game p(target | x_z). Insertion / deletion add "
         "/ remove patches in attribution order through the surrogate (higher / lower is better); sensitivity-n is "
         "the mean Pearson correlation between summed attributions of random patch subsets and the drop they "
         f"cause (sizes {c['sensitivity_sizes']}). Mean ± standard error over images.")
  labels = {"ground_truth": f"*{c['ground_truth']} Shapley (reference)*", "explainer": "**ViT Shapley explainer**"}
  r.table(["method", "insertion AUC ↑", "deletion AUC ↓", "sensitivity-n ↑", "corr. with truth", "MAE vs truth"],
          [[labels.get(name, name.replace("_", " ")),
            *(cell(row, k) for k in ("insertion_auc", "deletion_auc", "sensitivity_n", "correlation", "mae"))]
           for name, row in table.items()])
  r.text(_verdict_line(summary["explainer_beats_baselines"]))
  ex = table["explainer"]
  r.text(f"Explainer error vs {c['ground_truth']} values: MAE {ex['mae']:.4f}, relative L2 {ex['relative_l2']:.3f}, "
         f"correlation {ex['correlation']:.3f} (mean |truth| {c['mean_abs_truth']:.4f}). KernelSHAP at matched "
         f"compute ({e.kernel_shap_evals} evaluations): MAE "
         f"{table.get('kernel_shap', {}).get('mae', float('nan')):.4f}. The explainer costs one forward pass per "
         "image.")
  r.text(f"Baseline settings: RISE with {e.rise_masks} masks (p = 1/2), KernelSHAP with {e.kernel_shap_evals} "
         f"evaluations (unbiased, paired), integrated gradients with {e.ig_steps} steps from a black image, "
         f"SmoothGrad with {e.smoothgrad_samples} samples (sigma {e.smoothgrad_sigma}), gradients and attention "
         "from the classifier; GradCAM on the tokens entering the classifier's last block, attention x gradient of "
         "its last block, gradient rollout (Chefer et al. 2021) and conservative LRP (Ali et al. 2022), all of the "
         "classifier's predicted-class logit.")
  r.text(budget_sentence(summary["kernel_shap_budget"]))
  if "amortization" in summary:
    _amortization_section(r, summary["amortization"])
  folder = os.path.dirname(os.path.abspath(path))
  for name, caption in (("budget.png", "KernelSHAP error vs evaluations"),
                        ("curves.png", "insertion and deletion curves"), ("heatmaps.png", "attribution overlays")):
    r.figure(os.path.join(folder, name), caption)
  r.text("Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in c["timings"].items()))
  return r.write(path)


def amortization_sentence(a: dict[str, Any]) -> str:
  """When the explainer's training pays off against KernelSHAP at its error (see :mod:`xattr.vit_shapley.cost`).

  Example:
    >>> amortization_sentence(dict(train_evaluations=2.2e6, train_flops=5.0e12, explainer_evaluations=2.5,
    ...                            kernel_shap_evaluations=455.0, break_even_images=4861.0))[-64:]
    'the explainer wins from about **4,861 images** on (FLOPs alike).'
  """
  head = (f"Amortization: the explainer's training cost {a['train_evaluations']:.3g} surrogate-forward equivalents "
          f"({a['train_flops']:.3g} FLOPs), then {a['explainer_evaluations']:.2f} per image")
  n = a.get("break_even_images")
  if n is None:
    return head + "; KernelSHAP is as accurate at its smallest budget, so the explainer never pays off here."
  if not np.isfinite(n):
    return head + (f"; KernelSHAP at the explainer's error needs more than the largest budget measured, so the "
                   "break-even point is beyond what was measured.")
  return head + (f"; KernelSHAP needs {a['kernel_shap_evaluations']:.0f} per image for the same error, so the "
                 f"explainer wins from about **{n:,.0f} images** on (FLOPs alike).")


def _amortization_section(r: reports.Report, a: dict[str, Any]) -> None:
  r.text(amortization_sentence(a))
  if a["rows"]:
    r.table(["images explained", "explainer: training + inference (FLOPs)", "KernelSHAP (FLOPs)", "speedup"],
            [[f"{row['images']:,}", f"{row['explainer_flops']:.3g}", f"{row['kernel_shap_flops']:.3g}",
              f"{row['speedup']:.2f}x"] for row in a["rows"]])


def write_values(path: str, ev: Evaluation) -> str:
  """``values.npz``: images, labels, targets and every per-image result (``/`` in names becomes ``__``)."""
  np.savez(path, images=ev.images, labels=ev.labels, targets=ev.targets,
           **{k.replace("/", "__"): v for k, v in ev.results.items()})
  return path


def write_figures(workdir: str, ev: Evaluation, baselines: tuple[str, ...], *, grid: tuple[int, int],
                  class_names: tuple[str, ...], num_heatmaps: int, summary: dict[str, Any],
                  ground_truth: str) -> dict[str, str]:
  """``curves.png`` (mean insertion/deletion curves), ``heatmaps.png`` (overlays of the first images) and
  ``budget.png`` (KernelSHAP's error vs evaluations with the explainer's error as a level)."""
  results, x = ev.results, ev.images
  p = results["attr/ground_truth"].shape[1]
  n, (gh, gw) = len(x), grid
  shown = ("ground_truth", "explainer", *baselines)
  paths = {name: os.path.join(workdir, name) for name in ("curves.png", "heatmaps.png", "budget.png")}
  plots.curves_plot(np.arange(p + 1) / p, {m: {"insertion": results[f"insertion/{m}"],
                                               "deletion": results[f"deletion/{m}"]} for m in shown},
                    paths["curves.png"])
  k = min(num_heatmaps, n)
  plots.heatmap_grid(x[:k], {m: results[f"attr/{m}"][:k].reshape(k, gh, gw) for m in shown}, paths["heatmaps.png"],
                     row_titles=[f"label {class_names[ev.labels[i]]} / pred {class_names[ev.targets[i]]}"
                                 for i in range(k)])
  b = summary["kernel_shap_budget"]
  name = "KernelSHAP (unbiased, paired)"
  plots.error_vs_evaluations({name: np.asarray(b["budgets"])}, {name: np.asarray(b["kernel_shap_mae"])},
                             paths["budget.png"], levels={"ViT Shapley explainer (1 forward pass)": b["explainer_mae"]},
                             ylabel=f"MAE vs {ground_truth} Shapley values")
  return paths
