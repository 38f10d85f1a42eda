"""Train an MLP on a bundled tabular dataset, explain its test set with KernelSHAP, and check against exact values.

  python -m experiments.explain_tabular --config=configs/explain_tabular/breast_cancer.py --workdir=runs/explain_tabular

Steps (every one resumable from ``workdir``; the method code is :mod:`xattr.tabular`):
  1. train a Flax NNX MLP classifier with :func:`xattr.training.train` (Orbax checkpoints in workdir/checkpoints;
     a finished run is restored, not retrained);
  2. explain the test inputs: KernelSHAP on the marginal game of the class *probabilities* (model_fn applies the
     softmax; the game averages probabilities over a seeded background sample of training rows, link=identity,
     as shap's KernelExplainer does). The game is vector-valued, so one set of coalition evaluations explains
     every class at once; values have shape [inputs, features, classes] and each class's values sum to
     p_class(x) - mean_background p_class. (For two classes the second is minus the first.) Inputs go through
     ``jit(lax.map(kernel_shap))`` chunk by chunk; finished chunks are saved in workdir/explanations;
  3. error vs exact: on the first ``exact.num_inputs`` test inputs, restrict the game to ``exact.players``
     (the other features always present), enumerate the exact values and compare KernelSHAP with the main run's
     settings: mean absolute error, relative L2 error, correlation and calibration of the reported std;
  4. write values.npz, summary.png, bar.png, exact_comparison.npz and report.md.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments import cli
from xattr import artifacts, data, models, plots, tabular

OUTPUTS = ("values.npz", "exact_comparison.npz", "summary.png", "bar.png", "report.md", "metrics.json")


def _metrics(est: dict[str, np.ndarray], cmp: dict[str, np.ndarray], accuracy: float, gap: float) -> dict[str, Any]:
  errors = tabular.error_metrics(cmp["values"], cmp["std"], cmp["exact"])
  errors["mean_abs_exact"] = float(np.abs(cmp["exact"]).mean())
  logging.info("error vs exact: %s", errors)
  return dict(accuracy=accuracy, num_explained=len(est["values"]), mean_num_evals=float(est["num_evals"].mean()),
              min_num_evals=int(est["num_evals"].min()), max_num_evals=int(est["num_evals"].max()),
              converged_fraction=float(est["converged"].mean()), max_efficiency_gap=float(gap),
              exact_num_inputs=len(cmp["exact"]), exact_mean_num_evals=float(cmp["num_evals"].mean()),
              **{f"exact_{k}": v for k, v in errors.items()})


def _save(paths: dict[str, str], config, ds, x, est, cmp, probs, background) -> None:
  n = len(x)
  np.savez(paths["values.npz"], values=est["values"], std=est["std"], num_evals=est["num_evals"],
           converged=est["converged"], x=x, x_raw=ds.unstandardize(x), feature_names=np.array(ds.feature_names),
           class_names=np.array(ds.class_names), predictions=probs[:n], labels=ds.y_test[:n], background=background)
  np.savez(paths["exact_comparison.npz"], exact=cmp["exact"], values=cmp["values"], std=cmp["std"],
           num_evals=cmp["num_evals"], players=np.array(list(config.exact.players)), x=x[:len(cmp["exact"])])
  cls = config.explain.plot_class
  title = f"{ds.name}: p({ds.class_names[cls]})"
  plots.summary_plot(est["values"][:, :, cls], x, ds.feature_names, paths["summary.png"], title=title)
  plots.bar_plot(est["values"][:, :, cls], ds.feature_names, paths["bar.png"], title=title)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the whole job; returns paths, metrics and the explained model function."""
  os.makedirs(workdir, exist_ok=True)
  timings: dict[str, float] = {}
  ds = data.load_embedded(config.dataset, seed=config.seed, test_fraction=config.test_fraction)
  if ds.task != "classification":
    raise ValueError(f"explain_tabular trains a classifier; dataset {config.dataset!r} is a {ds.task} task.")
  t0 = time.perf_counter()
  model = tabular.train_classifier(config, ds, workdir)
  timings["train"] = time.perf_counter() - t0
  predict = jax.jit(models.model_fn(model, postprocess="softmax"))
  # The games use a copy that folds vmap into the batch (one 2-D matmul instead of 3-D ones: ~4x faster on CPU).
  model_fn = models.model_fn(model, postprocess="softmax", fold_vmap=True)
  probs = np.asarray(predict(jnp.asarray(ds.x_test)))
  accuracy = float(np.mean(probs.argmax(-1) == ds.y_test))
  logging.info("test accuracy %.4f", accuracy)

  e = config.explain
  background = tabular.background_sample(ds.x_train, e.background_size, config.seed)
  num_inputs = len(ds.x_test) if e.num_inputs is None else min(e.num_inputs, len(ds.x_test))
  x = ds.x_test[:num_inputs]
  t0 = time.perf_counter()
  est = tabular.explain(config, x, model_fn, background, os.path.join(workdir, "explanations"))
  timings["explain"] = time.perf_counter() - t0
  if not np.all(np.isfinite(est["values"])):
    raise FloatingPointError("KernelSHAP returned non-finite values; see the game and sampling settings.")
  null = np.asarray(predict(jnp.asarray(background))).mean(0)
  gap = np.abs(est["values"].sum(1) - (probs[:num_inputs] - null)).max()
  t0 = time.perf_counter()
  cmp = tabular.exact_comparison(config, x, model_fn, background)
  timings["exact_comparison"] = time.perf_counter() - t0

  metrics = _metrics(est, cmp, accuracy, gap)
  paths = {name: os.path.join(workdir, name) for name in OUTPUTS}
  _save(paths, config, ds, x, est, cmp, probs, background)
  tabular.write_report(paths["report.md"], config, ds, accuracy, metrics, timings)
  artifacts.save_json(paths["metrics.json"], dict(metrics, timings=timings))
  logging.info("wrote %s", ", ".join(paths.values()))
  return dict(paths=paths, metrics=metrics, accuracy=accuracy, timings=timings, model_fn=predict,
              background=background)


def _run_and_report(config: ml_collections.ConfigDict, workdir: str) -> None:
  out = run(config, workdir)
  print(f"test accuracy {out['accuracy']:.4f}; report: {out['paths']['report.md']}")


if __name__ == "__main__":
  cli.main(_run_and_report, config_example="configs/explain_tabular/breast_cancer.py",
           workdir_help="Directory for checkpoints, explanations, plots and the report.")
