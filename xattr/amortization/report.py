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

__all__ = ["NOTES", "SCALE_NOTES", "headline_line", "scale_line", "write_report", "plot_errors", "plot_scale"]

NOTES = ("Cost = model evaluations per explained input (per-example: its budget; amortized: training "
         "evaluations / training inputs, + 1 for the grand value when normalized). Error = mean absolute error "
         "on held-out inputs vs the target's ground truth. Speedup = per-example reference cost (KernelSHAP for "
         "Shapley targets, MSR for Banzhaf, LIME for LIME) at the same error / the method's cost; '>=' means the "
         "reference never reached that error within its largest budget. The exact-label regression row (d <= 16) "
         "trains the same explainer on exact Shapley values of the training inputs: its held-out error is the floor "
         "of every noisy-label explainer (generalization from the training inputs alone).")


SCALE_NOTES = ("Total cost to explain N inputs, in model evaluations: per-example KernelSHAP pays N x the budget "
               "that reaches the explainer's held-out error (interpolated); an amortized explainer pays its whole "
               "training (labels of its n_train training inputs, or FastSHAP's masked evaluations) plus 1 evaluation "
               "per input (2 for FastSHAP: grand and null). Only explainers with n_train <= N are priced at N. "
               "The evaluation counts leave out the explainer's own passes; the FLOPs columns (baseline removal: "
               "one model row per evaluation) include them: 3 explainer passes per training row (forward and "
               "backward) and one per explained input.")


def scale_line(n_explain: int, best: dict[str, Any] | None) -> str:
  """The console/report line of the best amortized explainer at N inputs.

  Example:
    >>> scale_line(1000, dict(speedup=12.345, bound="=", label="SA kernel_shap 32/label, 10 training inputs"))
    'amortized_speedup_at_equal_error=12.3x at N=1000 (SA kernel_shap 32/label, 10 training inputs)'
  """
  if best is None:
    return f"amortized_speedup_at_equal_error=n/a at N={n_explain} (no explainer with n_train <= N)"
  flops = (f", amortized_flops_speedup_at_equal_error={bound_text(best['bound'])}{best['flops_speedup']:.1f}x"
           if "flops_speedup" in best else "")
  return (f"amortized_speedup_at_equal_error={bound_text(best['bound'])}{best['speedup']:.1f}x at N={n_explain} "
          f"({best['label']}){flops}")


def _scale_section(r: reports.Report, name: str, sc: dict[str, Any], base: str) -> None:
  r.heading(f"{name}: explaining N inputs").text(SCALE_NOTES)
  with_flops = all("flops_speedup" in e for e in sc["entries"]) and bool(sc["entries"])
  rows = [[str(e["n_explain"]), e["label"], str(e["n_train"]), f"{e['mae']:.4g}", f"{e['amortized_evals']:.3g}",
           f"{e['per_example_evals']:.3g}", f"{bound_text(e['bound'])}{e['speedup']:.1f}x"]
          + ([f"{e['amortized_flops']:.3g}", f"{e['per_example_flops']:.3g}",
              f"{bound_text(e['bound'])}{e['flops_speedup']:.1f}x"] if with_flops else [])
          for e in sc["entries"]]
  r.table(["N", "explainer", "n_train", "held-out MAE", "amortized total evals", "KernelSHAP total evals, same MAE",
           "speedup"] + (["amortized FLOPs (training incl.)", "KernelSHAP FLOPs", "FLOPs speedup"] if with_flops
                         else []), rows)
  for n in sc["sizes"]:
    r.text(scale_line(n, sc["best"][n]))
    r.figure(os.path.join(base, name, f"error_vs_total_evaluations_N{n}.png"), f"{name}: error vs total compute, N={n}")


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
    if s.get("scale"):
      _scale_section(r, name, s["scale"], base)
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


def plot_scale(rows: list[dict], scaled: list[dict], sizes: tuple[int, ...], path: str) -> list[str]:
  """One log-log plot per N of ``sizes``: total model evaluations to explain N inputs vs held-out error, per-example
  KernelSHAP (N x budget) and each amortized explainer (one point per training-set size <= N). ``path`` gets a
  ``_N<n>`` suffix per N; returns the paths written."""
  root, ext = os.path.splitext(path)
  ref = sorted((r["evals"], r["mae"]) for r in rows if r["kind"] == "per-example" and r["method"] == "kernel_shap")
  written = []
  for n in sizes:
    evals: dict[str, list] = {}
    errs: dict[str, list] = {}
    if ref:
      evals["per-example kernel_shap"] = [n * e for e, _ in ref]
      errs["per-example kernel_shap"] = [m for _, m in ref]
    for r in sorted(scaled, key=lambda r: r["n_train"]):
      if r["n_train"] > n:
        continue
      key = f"{r['kind']} {r['method']}"
      evals.setdefault(key, []).append(r["train_evals"] + n * r["explain_evals"])
      errs.setdefault(key, []).append(r["mae"])
    if not evals:
      continue
    out = f"{root}_N{n}{ext}"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    written.append(plots.error_vs_evaluations({k: np.asarray(v) for k, v in evals.items()},
                                              {k: np.asarray(v) for k, v in errs.items()}, out,
                                              xlabel=f"total model evaluations to explain N={n} inputs"))
  return written
