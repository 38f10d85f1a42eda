"""The amortization study's report (``report.md``: headline table and one table per dataset) and its plots,
built on :mod:`xattr.reports`.

Example:
  >>> from xattr.amortization import report
  >>> row = dict(kind="stochastic amortization", method="kernel_shap", setting="32/label", target="shapley",
  ...            evals=31.0, mae=0.01, relative_l2=0.1, speedup=12.0, bound=">", label="kernel_shap 32/label")
  >>> report.headline_line("wine", row)
  'wine: best stochastic amortization kernel_shap 32/label: mae=0.01 at 31 evals/input, speedup_vs_kernel_shap=>=12.0x'
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from xattr import plots, reports
from xattr.amortization.costs import bound_text

__all__ = ["NOTES", "headline_line", "write_report", "plot_errors"]

NOTES = ("Cost = model evaluations per explained input (per-example: its budget; amortized: training "
         "evaluations / training inputs, + 1 for the grand value when normalized). Error = mean absolute error "
         "on held-out inputs vs the target's ground truth. Speedup = per-example reference cost (KernelSHAP for "
         "Shapley targets, MSR for Banzhaf, LIME for LIME) at the same error / the method's cost; '>=' means the "
         "reference never reached that error within its largest budget. The exact-label regression row (d <= 16) "
         "trains the same explainer on exact Shapley values of the training inputs: its held-out error is the floor "
         "of every noisy-label explainer (generalization from the training inputs alone).")


def headline_line(name: str, best: dict[str, Any]) -> str:
  """One line for the console: the best stochastic-amortization row of dataset ``name``."""
  return (f"{name}: best stochastic amortization {best['label']}: mae={best['mae']:.4g} at {best['evals']:.0f} "
          f"evals/input, speedup_vs_kernel_shap={bound_text(best['bound'])}{best['speedup']:.1f}x")


def _headline_row(name: str, s: dict[str, Any]) -> list[str]:
  best = s["best_sa"]
  if best is None:
    return [name] + ["-"] * 7
  floor = [r for r in s["rows"] if r["method"] == "exact"]
  floor_cells = ([f"{floor[0]['mae']:.4g}", f"{bound_text(floor[0]['bound'])}{floor[0]['speedup'] * floor[0]['evals']:.0f}"]
                 if floor else ["-", "-"])
  return [name, best["label"], f"{best['evals']:.0f}", f"{best['mae']:.4g}",
          f"{bound_text(best['bound'])}{best['speedup']:.1f}x", "yes" if best["speedup"] >= 10 else "no", *floor_cells]


def _dataset_section(r: reports.Report, name: str, s: dict[str, Any], base: str) -> None:
  metric = "accuracy" if s["task"] == "classification" else "R^2"
  r.heading(name).text(
      f"{s['n_train']} training / {s['n_test']} held-out inputs, {s['d']} features, {s['k']} output(s); model "
      f"held-out {metric} {s['model_metric']:.3f}. Ground truth: "
      + "; ".join(f"{t}: {h}" for t, h in s["truth_how"].items()) + ".")
  rows = [[row["kind"], row["method"], row["setting"], row["target"], f"{row['evals']:.0f}", f"{row['mae']:.4g}",
           f"{row['relative_l2']:.3f}",
           "" if row["kind"] == "per-example" else f"{bound_text(row['bound'])}{row['speedup']:.2f}x"]
          for row in s["rows"]]
  r.table(["kind", "method", "setting", "target", "evals/input", "MAE", "rel. L2", "speedup vs per-example reference"],
          rows)
  r.figure(os.path.join(base, name, "error_vs_evaluations.png"), name)
  if any(row["target"] != "shapley" for row in s["rows"]):
    r.figure(os.path.join(base, name, "other_targets.png"), f"{name}: Banzhaf and LIME targets")


def write_report(path: str, summaries: dict[str, dict], config: ml_collections.ConfigDict, runtime: float) -> str:
  """Writes ``report.md``: the headline table (does amortization reach KernelSHAP's error with >= 10x fewer
  evaluations?) and per dataset its table and plots (expected in ``<report dir>/<dataset>/``)."""
  base = os.path.dirname(os.path.abspath(path))
  r = reports.Report("Amortized attribution: error vs model evaluations")
  r.text(f"Datasets: {', '.join(summaries)}; removal: {config.removal}; this invocation took {runtime:.0f} s (stages "
         "already in the work directory are reused, not recomputed).")
  r.text(NOTES).heading("Headline")
  r.table(["dataset", "best stochastic amortization (Shapley target)", "its evals/input", "its MAE",
           "speedup_vs_kernel_shap", ">= 10x?", "exact-label floor MAE", "KernelSHAP evals for the floor"],
          [_headline_row(name, s) for name, s in summaries.items()])
  for name, s in summaries.items():
    _dataset_section(r, name, s, base)
  return r.write(path)


def plot_errors(rows: list[dict], targets: tuple[str, ...], path: str) -> str | None:
  """Error vs evaluations per explained input (log-log) of the rows with a target in ``targets``; the exact-label
  floor as a horizontal line. Returns the path, or None if no row qualifies (nothing written)."""
  evals: dict[str, list] = {}
  errs: dict[str, list] = {}
  levels = {}
  for r in rows:
    if r["target"] not in targets:
      continue
    if r["method"] == "exact":
      levels["exact-label floor"] = r["mae"]
      continue
    name = r["method"] if r["kind"] == "per-example" else f"{r['kind']} {r['method']}"
    if r.get("label_epochs", 1) > 1:
      name += " (fresh labels per stage)"
    evals.setdefault(name, []).append(r["evals"])
    errs.setdefault(name, []).append(r["mae"])
  if not evals:
    return None
  order = {name: np.argsort(v) for name, v in evals.items()}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return plots.error_vs_evaluations({n: np.asarray(v)[order[n]] for n, v in evals.items()},
                                    {n: np.asarray(v)[order[n]] for n, v in errs.items()}, path, levels=levels,
                                    xlabel="model evaluations per explained input")
