"""The summary of a dynamic feature selection study over seeds: curves, checks, figures, ``report.md``, JSON.

:func:`aggregate` turns the per-seed results of :func:`xattr.selection.study.run_seed` into curves (mean and
standard deviation over seeds) against the number of selected features and against the average cost;
:func:`small_budget_check` measures GDFS's and DIME's margin over the best baseline at small budgets;
:func:`summary` collects everything reported; :func:`write` draws the figures (:mod:`xattr.selection.plots`) and
writes ``report.md`` (through :mod:`xattr.reports`) and ``summary.json``.

Example:
  >>> import numpy as np
  >>> from xattr.selection import report
  >>> curve = (np.arange(4), np.array([0.1, 0.4, 0.6, 0.7]), np.array([0.0, 0.1, 0.1, 0.0]))
  >>> [v.tolist() for v in report.at(curve, [1, 3, 5])]
  [[0.4, 0.7, nan], [0.1, 0.0, nan]]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from xattr import artifacts, reports
from xattr.selection import evaluation, plots
from xattr.selection import problem as problem_lib
from xattr.selection.study import METHODS

__all__ = ["Curve", "Curves", "BASELINES", "STOPPING_RULES", "aggregate", "at", "small_budget_check", "summary",
           "labels", "write_report", "write"]

Curve = tuple[np.ndarray, np.ndarray, np.ndarray]   # (x, mean, std)
Curves = dict[str, Curve]                           # name -> curve
BASELINES = ("random", "static", "cae")
STOPPING_RULES = (("dime", "penalized"), ("dime", "confidence"), ("gdfs", "confidence"))


def aggregate(config: Any, per_seed: Sequence[dict[str, np.ndarray]]) -> tuple[Curves, Curves, dict[str, Any]]:
  """Metric curves vs number of features and vs average cost, mean and std over seeds.

  Returns:
    ``(by_features, by_cost, curves)``: curves per method (and per stopping rule, ``'dime (penalized)'``, in
    ``by_cost``), and the same as JSON-able dicts (``budgets``/``cost``, ``mean``, ``std``).
  """
  budgets = np.arange(config.max_features + 1)
  by_features, by_cost, out = {}, {}, {}
  for m in config.methods:
    fixed = m == "cae"                                     # one model per budget, trained budgets only
    x = per_seed[0]["cae/budgets"] if fixed else budgets
    mean, std = evaluation.mean_std([r[f"{m}/metric" if fixed else f"{m}/curve"] for r in per_seed])
    cost = np.mean([r[f"{m}/cost"] for r in per_seed], 0)
    by_features[m], by_cost[m] = (x, mean, std), (cost, mean, std)
    out[m] = {"budgets": x.tolist(), "mean": mean.tolist(), "std": std.tolist(), "cost": cost.tolist()}
  for m, rule in STOPPING_RULES:
    if f"{m}/{rule}_cost" in per_seed[0]:
      cost = np.mean([r[f"{m}/{rule}_cost"] for r in per_seed], 0)
      mean, std = evaluation.mean_std([r[f"{m}/{rule}_metric"] for r in per_seed])
      by_cost[f"{m} ({rule})"] = (cost, mean, std)
      out[f"{m} ({rule})"] = {"cost": cost.tolist(), "mean": mean.tolist(), "std": std.tolist()}
  return by_features, by_cost, out


def at(curve: Curve, budgets: Sequence[int], missing: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) of a curve at the given budgets (``missing`` where the curve has no point)."""
  x = list(np.asarray(curve[0]).tolist())
  pick = lambda values: np.array([values[x.index(b)] if b in x else missing for b in budgets])
  return pick(curve[1]), pick(curve[2])


def small_budget_check(config: Any, by_features: Curves) -> dict[str, Any]:
  """Margin of GDFS and DIME over the best baseline (random, static, CAE) at each of ``config.small_budgets``.

  Example:
    >>> import ml_collections
    >>> c = ml_collections.ConfigDict(dict(small_budgets=(1, 2), max_features=2))
    >>> curves = {"gdfs": (np.arange(3), np.array([0.1, 0.5, 0.7]), np.zeros(3)),
    ...           "random": (np.arange(3), np.array([0.1, 0.3, 0.8]), np.zeros(3))}
    >>> v = small_budget_check(c, curves)["gdfs"]
    >>> v["beats_baselines"], [round(m, 2) for m in v["margin_over_best_baseline"]]
    (False, [0.2, -0.1])
  """
  small = [b for b in config.small_budgets if b <= config.max_features]
  baseline_curves = [by_features[b] for b in BASELINES if b in by_features]
  if not baseline_curves:
    return {}
  best = np.max([at(c, small, missing=-np.inf)[0] for c in baseline_curves], axis=0)
  verdict = {}
  for m in ("gdfs", "dime"):
    if m in by_features:
      margins = at(by_features[m], small)[0] - best
      verdict[m] = {"budgets": small, "margin_over_best_baseline": margins.tolist(),
                    "beats_baselines": bool(np.all(margins > 0))}
  return verdict


def summary(config: Any, per_seed: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, Any], Curves, Curves]:
  """Everything ``summary.json`` holds (curves, small-budget check, full-feature metric, mean timings, oracle
  checks), with the curves for the figures: ``(summary, by_features, by_cost)``."""
  metric = str(per_seed[0]["metric_name"])
  by_features, by_cost, curves = aggregate(config, per_seed)
  out: dict[str, Any] = {"metric": metric, "seeds": list(config.seeds), **curves}
  out["small_budget_check"] = small_budget_check(config, by_features)
  out["full_metric"] = float(np.mean([r["full_metric"] for r in per_seed]))
  timings = [json.loads(str(r["timings"])) for r in per_seed]
  out["timings_mean_s"] = {name: float(np.mean([t[name] for t in timings])) for name in timings[0]}
  if "dime/oracle_cmi_error" in per_seed[0]:
    out["dime_oracle_cmi_error"] = np.mean([r["dime/oracle_cmi_error"] for r in per_seed], 0).tolist()
  agreeing = [m for m in METHODS if f"{m}/oracle_agreement" in per_seed[0]]
  if agreeing:
    out["oracle_agreement"] = {m: np.mean([r[f"{m}/oracle_agreement"] for r in per_seed], 0).tolist()
                               for m in agreeing}
  return out, by_features, by_cost


def labels(config: Any, num_seeds: int, metric: str) -> dict[str, str]:
  """The metric's, the cost axis's and the figures' names: ``label``, ``cost_label``, ``title``.

  Example:
    >>> import ml_collections
    >>> c = ml_collections.ConfigDict(dict(costs="uniform", patch_size=2, dataset="digits", model=dict(kind="vit")))
    >>> labels(c, 5, "auroc")["title"]
    'digits (2x2 groups), masked ViT: 5 seeds'
  """
  groups = f" ({config.patch_size}x{config.patch_size} groups)" if config.patch_size else ""
  model = ", masked ViT" if config.model.kind == "vit" else ""
  return {"label": "AUROC" if metric == "auroc" else "accuracy",
          "cost_label": "average number of features" if config.costs == "uniform" else "average cost",
          "title": f"{config.dataset}{groups}{model}: {num_seeds} seeds"}


def _overview(config: Any, problem: problem_lib.Problem, out: dict[str, Any], label: str) -> list[str]:
  players = (f" in {problem.num_players} groups of {config.patch_size}x{config.patch_size} pixels"
             if problem.groups is not None else "")
  return [f"Data: {config.dataset}, {problem.num_features} features{players}, {problem.num_classes} classes; "
          f"{len(problem.train['y'])} train / {len(problem.val['y'])} validation / {len(problem.test['y'])} test "
          f"rows per seed (seeded splits).",
          f"Metric: {label} on the test split; mean ± std over seeds {list(config.seeds)}. With all features the "
          f"pretrained masked predictor reaches {out['full_metric']:.3f}.",
          f"Costs: {config.costs}. Rollouts: one jit-compiled lax.scan of {config.max_features} steps per method "
          f"and seed."]


def _oracle_section(r: reports.Report, out: dict[str, Any]) -> None:
  steps = len(next(iter(out["oracle_agreement"].values())))
  r.heading("Oracle check: first selections equal to the closed-form greedy CMI order")
  r.table(["method", *(f"first {t}" for t in range(1, steps + 1))],
          [[m, *(f"{a:.3f}" for a in agree)] for m, agree in out["oracle_agreement"].items()])
  if "dime_oracle_cmi_error" in out:
    e0, e1 = out["dime_oracle_cmi_error"]
    r.text(f"DIME's CMI estimates vs the exact CMI (mean absolute error over unselected features, nats): "
           f"{e0:.4f} with nothing selected, {e1:.4f} with x_0 selected (exact first-step CMI: log 2 = 0.693 for "
           f"x_0).")


def write_report(path: str, config: Any, problem: problem_lib.Problem, out: dict[str, Any], by_features: Curves,
                 by_cost: Curves, figures: dict[str, str]) -> str:
  """Writes ``report.md``: the setup, the metric table, the small-budget verdicts, the stopping-rule points, the
  selection-order picture and (oracle problem) the first-selection agreement. ``figures`` maps file names
  (``metric_vs_features.png``, ...) to their paths."""
  names = labels(config, len(out["seeds"]), out["metric"])
  label, unit = names["label"], "groups" if problem.groups is not None else "features"
  rows = [b for b in config.report_budgets if b <= config.max_features]
  r = reports.Report(f"Dynamic feature selection: {names['title']}").bullets(_overview(config, problem, out, label))
  r.heading(f"{label} vs number of {unit}")
  r.text(evaluation.markdown_table(rows, {m: at(c, rows) for m, c in by_features.items()}, row_label=unit))
  r.figure(figures["metric_vs_features.png"], "metric vs features")
  if out["small_budget_check"]:
    r.heading("Small budgets: margin over the best baseline (random, static, CAE)")
    for m, v in out["small_budget_check"].items():
      margins = ", ".join(f"{b}: {x:+.3f}" for b, x in zip(v["budgets"], v["margin_over_best_baseline"]))
      r.verdict(v["beats_baselines"], f"{m} beats every baseline at budgets {v['budgets']}", f"margins {margins}")
  r.heading(f"{label} vs {names['cost_label']}")
  r.text("Fixed budgets for every method, plus per-sample stopping: DIME's penalized rule "
         f"(lambda in {list(config.sweeps.penalties)}) and the confidence rule (threshold in "
         f"{list(config.sweeps.confidences)}) for GDFS and DIME.")
  r.figure(figures["metric_vs_cost.png"], "metric vs cost")
  rules = [n for n in by_cost if "(" in n]
  if rules:
    r.bullets(f"{n}: " + ", ".join(f"{c:.2f} -> {mu:.3f}" for c, mu in zip(by_cost[n][0], by_cost[n][1]))
              for n in rules)
  if "selection_order.png" in figures:
    r.heading(f"Selection order (seed {config.seeds[0]}, first {config.plots.order_steps} selections)")
    r.figure(figures["selection_order.png"], "selection order")
  if "oracle_agreement" in out:
    _oracle_section(r, out)
  r.text("Mean time per seed (s): " + ", ".join(f"{n} {v:.1f}" for n, v in out["timings_mean_s"].items()))
  return r.write(path)


def _figures(config: Any, per_seed: Sequence[dict[str, np.ndarray]], workdir: str, problem: problem_lib.Problem,
             by_features: Curves, by_cost: Curves, names: dict[str, str]) -> dict[str, str]:
  path = lambda name: os.path.join(workdir, name)
  xlabel = "number of selected features" if problem.groups is None else "number of selected groups"
  paths = {"metric_vs_features.png": plots.curves_plot(by_features, path("metric_vs_features.png"), xlabel=xlabel,
                                                       ylabel=names["label"], title=names["title"]),
           "metric_vs_cost.png": plots.curves_plot(by_cost, path("metric_vs_cost.png"), xlabel=names["cost_label"],
                                                   ylabel=names["label"], title=names["title"])}
  r0, n = per_seed[0], config.plots.num_images
  orders = {m: r0[f"{m}/order"][:n] for m in ("gdfs", "dime", "static") if f"{m}/order" in r0}
  if "test_images" in r0 and problem.image_shape is not None and orders:
    paths["selection_order.png"] = plots.order_plot(
        r0["test_images"][:n], orders, path("selection_order.png"), groups=problem.groups,
        num_steps=config.plots.order_steps, labels=[f"y={y}" for y in r0["labels"][:n]])
  return paths


def write(config: Any, per_seed: Sequence[dict[str, np.ndarray]], workdir: str, problem: problem_lib.Problem
          ) -> dict[str, Any]:
  """Figures, ``report.md`` and ``summary.json`` of the seeds' results in ``workdir``.

  Args:
    config: the study's config.
    per_seed: :func:`xattr.selection.study.run_seed` results, one per seed of ``config.seeds``.
    workdir: output folder.
    problem: the first seed's problem (sizes, groups and image shape for the text and pictures).

  Returns:
    ``{"paths": file name -> path, "summary": the summary dict}``.
  """
  out, by_features, by_cost = summary(config, per_seed)
  paths = _figures(config, per_seed, workdir, problem, by_features, by_cost,
                   labels(config, len(per_seed), out["metric"]))
  paths["report.md"] = write_report(os.path.join(workdir, "report.md"), config, problem, out, by_features, by_cost,
                                    paths)
  paths["summary.json"] = os.path.join(workdir, "summary.json")
  artifacts.save_json(paths["summary.json"], out)
  return {"paths": paths, "summary": out}
