"""ViT Shapley end to end: classifier -> surrogate -> explainer -> evaluation, each stage resumable.

:func:`run_pipeline` is what ``python -m experiments.vit_shapley`` runs (and the ViT variant of the FastSHAP
driver). ``workdir/<stage>/`` holds each training stage's Orbax checkpoints (a finished stage is restored, not
retrained) and ``workdir/evaluation/`` the evaluation's finished chunks. Outputs: ``report.md``,
``metrics.json``, ``values.npz``, ``curves.png``, ``heatmaps.png`` and ``budget.png``.

Example (a few seconds on a CPU; the smoke config shrinks every budget):
  >>> import tempfile
  >>> from configs.vit_shapley import digits                       # doctest: +SKIP
  >>> metrics = run_pipeline(digits.get_config("smoke"), tempfile.mkdtemp())   # doctest: +SKIP
  >>> metrics["ground_truth"]                                      # doctest: +SKIP
  'exact'
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging

from xattr import artifacts
from xattr.data import images as image_data
from xattr.models import heads, vit
from xattr.vit_shapley import evaluate as ev_lib
from xattr.vit_shapley import cost, method, report

__all__ = ["evaluate", "run_pipeline"]


def evaluate(config: ml_collections.ConfigDict, ds: image_data.ImageDataset, classifier: vit.ViT,
             surrogate: vit.ViT, explainer: heads.ViTExplainer, workdir: str) -> dict[str, Any]:
  """Stage 4: scores every method, writes ``report.md``, ``values.npz`` and the figures; returns the summary."""
  e = config.evaluate
  baselines = tuple(e.baselines)
  ev = ev_lib.evaluate_images(config, ds, classifier, surrogate, explainer, workdir)
  table = ev_lib.summarize(ev.results, baselines)
  context = ev_lib.context(config, ds, classifier, surrogate, ev)
  summary = dict(methods=table, explainer_beats_baselines=ev_lib.beats_baselines(table, baselines),
                 kernel_shap_budget=ev_lib.budget_summary(ev.results, tuple(e.kernel_shap_budgets),
                                                          table["explainer"]["mae"]),
                 **{k: v for k, v in context.items() if k != "timings"})
  x = config.explainer
  summary["amortization"] = cost.amortization_cost(
      surrogate.config, num_steps=x.num_steps, batch_size=x.batch_size, num_samples=x.num_samples,
      extra_blocks=x.extra_blocks, evaluations_to_match=summary["kernel_shap_budget"]["evaluations_to_match"])
  report.write_values(os.path.join(workdir, "values.npz"), ev)
  report.write_figures(workdir, ev, baselines, grid=surrogate.grid, class_names=ds.class_names,
                       num_heatmaps=e.num_heatmaps, summary=summary, ground_truth=context["ground_truth"])
  report.write_report(os.path.join(workdir, "report.md"), config, ds.name, summary, context)
  logging.info("evaluation: %s", json.dumps(table, indent=1, default=float))
  return dict(summary, timings=ev.timings)


def run_pipeline(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every stage (finished ones are restored from ``workdir``) and returns the evaluation metrics.

  Args:
    config: a ViT Shapley config (``configs/vit_shapley/*.py``).
    workdir: checkpoints, evaluation chunks and outputs go here (created if missing).

  Returns:
    the metrics also saved as ``workdir/metrics.json``: per-method table, verdict, KernelSHAP budget, context
    and stage timings (seconds).
  """
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  start = time.perf_counter()

  def lap(name: str) -> None:
    timings[name] = time.perf_counter() - start - sum(timings.values())

  ds = method.load_data(config)
  cfg = method.model_config(config, ds.image_shape, ds.num_classes)
  logging.info("data %s: train %s, test %s; model %s", ds.name, ds.x_train.shape, ds.x_test.shape, cfg)
  classifier = method.train_classifier(config, ds, cfg, workdir)
  lap("classifier_s")
  surrogate = method.train_surrogate(config, ds, classifier, workdir)
  lap("surrogate_s")
  explainer = method.train_explainer(config, ds, surrogate, workdir)
  lap("explainer_s")
  metrics = evaluate(config, ds, classifier, surrogate, explainer, workdir)
  lap("evaluate_s")
  metrics["timings"] = timings
  artifacts.save_json(os.path.join(workdir, "metrics.json"), metrics)
  return metrics
