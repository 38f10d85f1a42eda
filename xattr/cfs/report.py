"""The report of a contrastive feature selection benchmark: mean +- std over seeds, figures, verdicts.

Writes into the work directory ``report.md`` (tables of accuracy / ink overlap / recovery against k, verdict
lines), ``summary.json``, ``accuracy_vs_k.png`` (or ``recovery_vs_k.png``) and, for image data,
``selected_pixels.png`` (each method's selected pixels at a few budgets, first seed, over the mean target image
with the digit-ink region outlined).

The verdicts say plainly whether CFS (and each CFS variant run) beat every target-only unsupervised baseline and
the no-background ablation at every budget (accuracy on labelled data, recovery on the linear-Gaussian data),
and, on the linear-Gaussian data, whether CFS recovered >= 90% of the salient features at k = #salient while the
unsupervised baselines recovered far fewer.

Example:
  >>> import numpy as np
  >>> from xattr.cfs import report
  >>> per_seed = [{"budgets": np.array([5]), "a/accuracy": np.array([0.5])},
  ...             {"budgets": np.array([5]), "a/accuracy": np.array([0.7])}]
  >>> mean, std = report.aggregate(per_seed, "a", "accuracy")
  >>> mean.round(3).tolist(), std.round(3).tolist()
  ([0.6], [0.1])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xattr import artifacts, reports
from xattr.cfs import benchmark
from xattr.data import contrastive
from xattr.selection import evaluation
from xattr.selection import plots as selection_plots

__all__ = ["CFS_VARIANTS", "RIVALS", "aggregate", "summary", "beats", "pixel_maps", "write"]

CFS_VARIANTS = ("cfs", "cfs_concrete", "cfs_joint")
RIVALS = (*benchmark.UNSUPERVISED, "no_background")       # what CFS must beat
METRICS = ("accuracy", "ink_overlap", "recovery")


def aggregate(per_seed: Sequence[Mapping[str, np.ndarray]], method: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation over seeds of ``<method>/<metric>`` (one value per budget)."""
  return evaluation.mean_std([r[f"{method}/{metric}"] for r in per_seed])


def summary(config: Any, per_seed: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
  """``{"budgets", "methods", "<metric>": {method: {"mean", "std"}}, "full_accuracy", "timings_mean_s"}``;
  metrics that are NaN for the data (e.g. recovery without known salient features) are left out."""
  out: dict[str, Any] = {"budgets": [int(k) for k in per_seed[0]["budgets"]], "methods": list(config.methods),
                         "num_seeds": len(per_seed)}
  for metric in METRICS:
    table = {}
    for m in config.methods:
      mean, std = aggregate(per_seed, m, metric)
      if np.isfinite(mean).any():
        table[m] = {"mean": mean.tolist(), "std": std.tolist()}
    if table:
      out[metric] = table
  if "full_accuracy" in per_seed[0]:
    out["full_accuracy"] = evaluation.mean_std([r["full_accuracy"] for r in per_seed])[0].item()
  timings = [json.loads(str(r["timings"])) for r in per_seed]
  out["timings_mean_s"] = {m: float(np.mean([t[m] for t in timings])) for m in config.methods}
  return out


def beats(out: Mapping[str, Any], metric: str, method: str) -> dict[str, Any] | None:
  """Whether ``method``'s mean ``metric`` exceeds every rival's (:data:`RIVALS` present) at every budget."""
  table = out.get(metric, {})
  rivals = [r for r in RIVALS if r in table]
  if method not in table or not rivals:
    return None
  mine = np.array(table[method]["mean"])
  best = np.max([table[r]["mean"] for r in rivals], axis=0)
  best_name = [rivals[i] for i in np.argmax([table[r]["mean"] for r in rivals], axis=0)]
  return {"beats": bool((mine > best).all()), "margins": (mine - best).tolist(), "best_rival": best_name,
          "rivals": rivals}


def _linear_verdicts(r: reports.Report, out: Mapping[str, Any], num_salient: int) -> None:
  rec = out.get("recovery", {})
  budgets = out["budgets"]
  if "cfs" not in rec or num_salient not in budgets:
    return
  i = budgets.index(num_salient)
  cfs = rec["cfs"]["mean"][i]
  unsup = {m: rec[m]["mean"][i] for m in benchmark.UNSUPERVISED if m in rec}
  best = max(unsup.values()) if unsup else float("nan")
  r.verdict(cfs >= 0.9, f"CFS recovers >= 90% of the {num_salient} salient features at k = {num_salient}",
            f"mean recovery {cfs:.3f}")
  if unsup:
    r.verdict(best <= cfs - 0.3, "the target-only unsupervised baselines recover far fewer (at least 0.3 less)",
              ", ".join(f"{m} {v:.3f}" for m, v in unsup.items()))


def pixel_maps(per_seed0: Mapping[str, np.ndarray], data: contrastive.ContrastiveData, methods: Sequence[str],
               budgets: Sequence[int], path: str) -> str:
  """Selected pixels (red) per method (rows) and budget (columns) over the mean target image; ink outlined."""
  h, w = data.image_shape
  all_budgets = [int(k) for k in per_seed0["budgets"]]
  budgets = [k for k in budgets if k in all_budgets] or all_budgets[:2]
  fig, axes = reports.figure(len(budgets), len(methods), size=(1.9, 1.9))
  axes = np.asarray(axes).reshape(len(methods), len(budgets))
  mean_image = data.target.mean(0).reshape(h, w)
  for i, m in enumerate(methods):
    for j, k in enumerate(budgets):
      ax = axes[i, j]
      picked = per_seed0[f"{m}/selected"][all_budgets.index(k), :k]
      overlay = np.zeros((h * w, 4))
      overlay[picked] = (0.85, 0.1, 0.2, 0.9)
      ax.imshow(mean_image, cmap="gray_r")
      ax.imshow(overlay.reshape(h, w, 4), interpolation="nearest")
      if data.ink is not None:
        ax.contour(data.ink.reshape(h, w).astype(float), levels=[0.5], colors="#1E88E5", linewidths=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(m, fontsize=8)
      if i == 0:
        ax.set_title(f"k = {k}", fontsize=9)
  return reports.save_figure(fig, path)


def _tables(r: reports.Report, out: Mapping[str, Any]) -> None:
  titles = {"accuracy": "Digit (label) accuracy of a classifier on the k selected features",
            "ink_overlap": "Fraction of the selected pixels inside the digit-ink region",
            "recovery": "Recovery of the true salient features (selected salient / min(k, #salient))"}
  for metric in METRICS:
    if metric in out:
      cols = {m: (np.array(v["mean"]), np.array(v["std"])) for m, v in out[metric].items()}
      r.heading(titles[metric] + f" (mean ± std over {out['num_seeds']} seeds)", 3)
      r.text(evaluation.markdown_table(out["budgets"], cols, row_label="k"))


def _selections(r: reports.Report, config: Any, data: contrastive.ContrastiveData, out: Mapping[str, Any]) -> None:
  """Without labels or ground truth: each method's selection at the largest k (first seed), best first."""
  k = max(out["budgets"])
  names = data.feature_names or tuple(f"x{j}" for j in range(data.num_features))
  r.heading(f"Selected features at k = {k} (seed {list(config.seeds)[0]}, best first)", 3)
  r.table(["method", "features"], [[m, ", ".join(names[j] for j in out["selected"][m])] for m in config.methods])


def _write_report(path: str, config: Any, data: contrastive.ContrastiveData, out: Mapping[str, Any],
                  figures: Mapping[str, str]) -> str:
  r = reports.Report(f"Contrastive feature selection: {data.name}")
  r.text(f"{len(data.target)} target rows, {len(data.background)} background rows, {data.num_features} features; "
         f"methods {', '.join(config.methods)}; k in {out['budgets']}; seeds {list(config.seeds)}. Networks "
         f"{tuple(config.model.hidden_sizes)}, k' = {config.model.code_size}, lr {config.train.learning_rate}, "
         f"batch {config.train.batch_size}.")
  metric = "accuracy" if "accuracy" in out else "recovery"
  for variant in CFS_VARIANTS:
    check = beats(out, metric, variant)
    if check is not None:
      rivals = "every unsupervised baseline" + (" and the no-background ablation" if "no_background" in
                                                 check["rivals"] else " run")
      margins = zip(out["budgets"], check["margins"], check["best_rival"])
      r.verdict(check["beats"], f"{variant} beats {rivals} ({', '.join(check['rivals'])}) on {metric} at every k",
                "margins over the best of them: " + ", ".join(f"k={k}: {m:+.3f} ({b})" for k, m, b in margins))
  if data.salient is not None:
    _linear_verdicts(r, out, len(data.salient))
  if "accuracy" in out and "stg" in out["accuracy"] and "cfs" in out["accuracy"]:
    gap = np.array(out["accuracy"]["cfs"]["mean"]) - np.array(out["accuracy"]["stg"]["mean"])
    r.text("Supervised STG (uses the labels, which CFS never sees) minus CFS accuracy: "
           + ", ".join(f"k={k}: {-g:+.3f}" for k, g in zip(out["budgets"], gap)) + ".")
  if "full_accuracy" in out:
    r.text(f"Classifier on all {data.num_features} features: accuracy {out['full_accuracy']:.3f}.")
  _tables(r, out)
  if not any(m in out for m in METRICS):
    _selections(r, config, data, out)
  for name, fig in figures.items():
    r.figure(fig, name.removesuffix(".png").replace("_", " "))
  r.text("Mean time per seed (s): " + ", ".join(f"{m} {v:.1f}" for m, v in out["timings_mean_s"].items()))
  return r.write(path)


def write(config: Any, per_seed: Sequence[Mapping[str, np.ndarray]], workdir: str,
          data: contrastive.ContrastiveData) -> dict[str, Any]:
  """Figures, ``report.md`` and ``summary.json`` of the seeds' results in ``workdir``.

  Args:
    config: the benchmark's config.
    per_seed: :func:`xattr.cfs.benchmark.run_seed` results, one per seed.
    workdir: output folder.
    data: the first seed's data (sizes, image shape, ink region, salient features).

  Returns:
    ``{"paths": file name -> path, "summary": the summary dict}``.
  """
  out = summary(config, per_seed)
  if data.salient is not None:
    out["num_salient"] = len(data.salient)
  metric = "accuracy" if "accuracy" in out else ("recovery" if "recovery" in out else None)
  figures = {}
  if metric is not None:
    curves = {m: (np.array(out["budgets"]), np.array(v["mean"]), np.array(v["std"])) for m, v in out[metric].items()}
    name = f"{metric}_vs_k.png"
    figures[name] = selection_plots.curves_plot(curves, os.path.join(workdir, name), xlabel="k (selected features)",
                                                ylabel=metric, title=data.name)
  if data.image_shape is not None:
    figures["selected_pixels.png"] = pixel_maps(per_seed[0], data, list(config.methods), list(config.plots.map_budgets),
                                                os.path.join(workdir, "selected_pixels.png"))
  k = max(out["budgets"])
  out["selected"] = {m: per_seed[0][f"{m}/selected"][out["budgets"].index(k), :k].tolist() for m in config.methods}
  out["verdicts"] = {v: beats(out, metric, v) for v in CFS_VARIANTS if metric and beats(out, metric, v)}
  paths = dict(figures)
  paths["report.md"] = _write_report(os.path.join(workdir, "report.md"), config, data, out, figures)
  paths["summary.json"] = os.path.join(workdir, "summary.json")
  artifacts.save_json(paths["summary.json"], out)
  return {"paths": paths, "summary": out}
