"""Report parts on the per-point laws themselves: crossing curves, estimator recovery, size-aware selection gains.

Used by :mod:`xattr.valuation.report`: :func:`plot_crossings` draws the true and estimated curves of the most
clearly crossing pairs of points, :func:`plot_selection` each selection rule's gain against the target size k*,
and :func:`laws_section` writes the report section on crossings, recovery and (for the synthetic pool) groups.

Example:
  >>> from xattr import reports
  >>> r = reports.Report("demo")
  >>> summary = {"crossings": dict(pairs=6, law_crossings=2, significant_crossings=1, examples=[[0, 1]]),
  ...            "recovery": dict(methods={}, clear_points=3, noise_floor_kmin=0.1, noise_floor_kmax=0.2),
  ...            "groups": None}
  >>> laws_section(r, (20, 200), [4], summary)
  >>> "1 of 6 pairs" in r.markdown()
  True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xattr import reports
from xattr.valuation import addition, scaling
from xattr.valuation.addition import Addition
from xattr.valuation.recovery import LAW_METHODS
from xattr.valuation.study import Samples

__all__ = ["DPI", "plot_selection", "plot_crossings", "laws_section"]

DPI = 110


def _selection_lines(added: Addition) -> dict[str, list[str]]:
  sizes = added.sizes
  lines = {f"size-matched: top by law at k = k* ({', '.join(map(str, sizes))})": [addition.law_rule(k) for k in sizes],
           f"top by law at k={sizes[0]} (fixed)": [addition.law_rule(sizes[0])] * len(sizes),
           f"top by law at k={sizes[-1]} (fixed)": [addition.law_rule(sizes[-1])] * len(sizes),
           "size-matched ground truth": [addition.truth_rule(k) for k in sizes]}
  for rule in added.chosen:
    if not rule.startswith(("top by law at", "top by ground truth at")):
      lines[rule] = [rule] * len(sizes)
  return {name: rules for name, rules in lines.items() if all(r in added.chosen for r in rules)}


def plot_selection(path: str, added: Addition) -> str:
  """Gain U(D u S) - U(D) of each rule against the target size k* (log axis), size-matched rules as one line."""
  fig, ax = reports.figure(1, size=(7.0, 4.4))
  x = np.asarray(added.sizes, float)
  for j, (name, rules) in enumerate(_selection_lines(added).items()):
    mean = np.array([added.gains[k][r]["mean"] for k, r in zip(added.sizes, rules)])
    se = np.array([added.gains[k][r]["se"] for k, r in zip(added.sizes, rules)])
    style = "o-" if name.startswith("size-matched") else "s--" if "fixed" in name else "^:"
    ax.errorbar(x * (1 + 0.015 * (j - 3)), mean, yerr=se, fmt=style, capsize=3, label=name, lw=2 if j == 0 else 1)
  ax.set_xscale("log")
  ax.set_xticks(x, [str(k) for k in added.sizes])
  ax.minorticks_off()
  ax.set_xlabel("target (base) dataset size k*")
  ax.set_ylabel(f"utility gain of adding {len(next(iter(added.chosen.values())))} points")
  ax.set_title("size-aware selection: gain vs target size")
  ax.axhline(0, color="k", lw=0.5)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)   # not over the points
  return reports.save_figure(fig, path, dpi=DPI, bbox="tight")


def _binned(truth: Samples, row: int, num_bins: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  k, d = truth.sizes[row], truth.deltas[row]
  edges = np.geomspace(k.min(), k.max() + 1, num_bins + 1)
  idx = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, num_bins - 1)
  out = [(np.exp(np.log(k[idx == b]).mean()), d[idx == b].mean(), d[idx == b].std(ddof=1) / np.sqrt((idx == b).sum()))
         for b in range(num_bins) if (idx == b).sum() > 1]
  return tuple(np.array(v) for v in zip(*out))


def plot_crossings(path: str, truth: Samples, truth_fit: scaling.ScalingFit, best: dict[str, np.ndarray],
                   pairs: Sequence[Sequence[int]], k_range: tuple[int, int],
                   labels: Sequence[str] | None = None) -> str:
  """One panel per pair of ground-truth rows: binned sample means (error bars), the law fitted to the ground
  truth (solid) and the MLE and amortized laws of ``best`` (dashed, dotted); ``labels`` name each pool point's
  group in the legend."""
  pairs = list(pairs) or [[0, min(1, len(truth.points) - 1)]]
  fig, axes = reports.figure(len(pairs), size=(4.6, 3.8))
  axes = np.atleast_1d(axes).ravel()
  grid = np.geomspace(*k_range, 60)
  for ax, pair in zip(axes, pairs):
    for row, color in zip(pair, ("tab:blue", "tab:red")):
      z = int(truth.points[row])
      name = f"point {z}" + (f" ({labels[z]})" if labels is not None else "")
      k, mean, se = _binned(truth, row)
      ax.errorbar(k, mean, yerr=se, fmt="o", ms=4, color=color, label=f"{name}: sample means")
      ax.plot(grid, scaling.law(truth_fit.c[row], truth_fit.alpha[row], grid), "-", color=color,
              label=f"true law, alpha={truth_fit.alpha[row]:.2f}")
      for method, style in (("mle", "--"), ("amortized", ":")):
        ax.plot(grid, scaling.law(best[f"{method}_c"][z], best[f"{method}_alpha"][z], grid), style, color=color,
                label=f"{method}, alpha={best[f'{method}_alpha'][z]:.2f}")
    ax.set_xscale("log")
    ticks = np.unique(np.round(np.geomspace(*k_range, 4)).astype(int))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("dataset size k")
    ax.set_ylabel("E[Delta | k]")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6)
  for ax in axes[len(pairs):]:
    ax.set_visible(False)
  fig.suptitle("crossing pairs: true and estimated curves")
  return reports.save_figure(fig, path, dpi=DPI)


def _recovery_rows(rec: dict[str, Any], budgets: Sequence[int]) -> list[list[str]]:
  fields = (("alpha_spearman", "Spearman(alpha, true alpha)"), ("nrmse_kmin", "value at k_min: RMSE/std"),
            ("nrmse_kmax", "value at k_max: RMSE/std"), ("spearman_kmin", "value at k_min: Spearman"),
            ("spearman_kmax", "value at k_max: Spearman"))
  rows = []
  for field, label in fields:
    for method, name in LAW_METHODS.items():
      if field in rec["methods"].get(method, {}).get(budgets[0], {}):
        rows.append([f"{name}: {label}", *(f"{rec['methods'][method][b][field]:.3f}" for b in budgets)])
  return rows


def laws_section(report: reports.Report, k_range: tuple[int, int], budgets: Sequence[int],
                 summary: dict[str, Any]) -> None:
  """The section on crossing curves, the recovery of (c, alpha) and the groups (``summary``: metrics.json's
  ``crossings``, ``recovery`` and ``groups``, budgets as strings or ints)."""
  k_min, k_max = k_range
  cr, rec = summary["crossings"], summary["recovery"]
  report.heading("Do the per-point laws differ? Crossing curves and estimator recovery").text(
      f"Ground truth: the MLE law fitted to each ground-truth point's samples, and the means of its samples within "
      f"25% of k_min={k_min} and k_max={k_max}. Of {cr['pairs']} pairs of ground-truth points, {cr['law_crossings']} "
      f"have fitted laws that swap order inside [{k_min}, {k_max}], and **{cr['significant_crossings']} of "
      f"{cr['pairs']} pairs** swap order significantly by the sample means (difference beyond two standard errors "
      "at both ends, opposite signs).")
  report.text(reports.verdict(cr["significant_crossings"] > 0,
                              "the true per-point curves cross inside the size range" if cr["significant_crossings"]
                              else "no pair of ground-truth curves crosses significantly inside the size range"))
  if rec["methods"]:
    keys = [b if b in rec["methods"]["mle"] else str(b) for b in budgets]
    report.text(f"Recovery per budget (samples per point). alpha is scored on the {rec['clear_points']} ground-truth "
                "points with value above two standard errors; values at the ends against the ground-truth means "
                f"there, whose own noise is {rec['noise_floor_kmin']:.3f} (k_min) and {rec['noise_floor_kmax']:.3f} "
                "(k_max) of their std. The MC mean predicts one size-free value at both ends.")
    report.table(["metric", *(f"b={b}" for b in budgets)], _recovery_rows(rec, keys))
  if summary.get("groups"):
    groups = summary["groups"]
    rules = list(next(iter(groups.values()))["chosen"])
    report.text("Groups of the synthetic pool (ground-truth means near each end; how many of each rule's points "
                "belong to the group):")
    report.table(["group", "points", "median true alpha", f"mean value at k={k_min}", f"mean value at k={k_max}",
                  *rules],
                 [[name, str(g["points"]), f"{g['median_alpha']:.2f}", f"{g['value_kmin']:.2e}",
                   f"{g['value_kmax']:.2e}", *(str(g["chosen"][r]) for r in rules)] for name, g in groups.items()])
