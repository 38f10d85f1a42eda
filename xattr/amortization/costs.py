"""Errors against ground truth, the per-example cost that reaches an error, and amortization speedups.

Cost accounting ("model evaluations per explained input"): a per-example estimator pays its budget for every
input; an amortized explainer pays its training evaluations divided by the number of training inputs (plus one
for the grand value when it is normalized). The speedup of an amortized explainer is the cost at which the
per-example reference estimator of its target (:data:`REFERENCE`: KernelSHAP for Shapley values, MSR for
Banzhaf values, LIME for the LIME solution) reaches the same held-out error, interpolated on the per-example
curve, divided by the explainer's cost.

Example:
  >>> from xattr.amortization import costs
  >>> rows = [dict(kind="per-example", method="kernel_shap", target="shapley", evals=e, mae=m)
  ...         for e, m in ((10, 1.0), (100, 0.1))]
  >>> sa = dict(kind="stochastic amortization", method="kernel_shap", target="shapley", evals=3.0, mae=0.1)
  >>> costs.speedup(rows, sa)[1], round(costs.speedup(rows, sa)[0], 2)
  ('=', 33.33)
  >>> costs.bound_text(">") + "12x"
  '>=12x'
"""

from __future__ import annotations

import numpy as np

__all__ = ["REFERENCE", "BOUND", "TRAIN_PASSES", "bound_text", "errors", "cost_to_reach", "speedup", "add_speedups", "best_row"]

# Target -> the per-example estimator (registry name, see xattr.methods) an amortized explainer is compared with.
REFERENCE = {"shapley": "kernel_shap", "banzhaf": "banzhaf_msr", "lime": "lime"}
# A training row costs its forward pass and a backward pass of about twice that: 3 forward passes' worth.
TRAIN_PASSES = 3.0
# Relation returned by cost_to_reach -> its prefix in reports ('>=': the reference never reached the error).
BOUND = {"=": "", ">": ">=", "<": "<=", "?": "no reference "}


def bound_text(relation: str) -> str:
  """The report prefix of a :func:`cost_to_reach` relation (``'>'`` -> ``'>='``).

  Raises:
    ValueError: an unknown relation.
  """
  if relation not in BOUND:
    raise ValueError(f"relation must be one of {sorted(BOUND)}, got {relation!r}.")
  return BOUND[relation]


def errors(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """Mean absolute error over all entries, and the mean over inputs of ||est - truth|| / ||truth||.

  Example:
    >>> errors(np.ones((2, 3)), np.full((2, 3), 2.0))
    {'mae': 1.0, 'relative_l2': 0.5}
  """
  estimate, truth = np.asarray(estimate), np.asarray(truth)
  if estimate.shape != truth.shape:
    raise ValueError(f"estimate must have the shape of truth {truth.shape}, got {estimate.shape}.")
  err = estimate - truth
  rel = np.linalg.norm(err.reshape(len(err), -1), axis=1) / np.maximum(
      np.linalg.norm(truth.reshape(len(truth), -1), axis=1), 1e-12)
  return dict(mae=float(np.abs(err).mean()), relative_l2=float(rel.mean()))


def cost_to_reach(costs: np.ndarray, errs: np.ndarray, target: float) -> tuple[float, str]:
  """Per-example cost at which a per-example curve reaches ``target`` error (log-log interpolation).

  Returns (cost, relation): '=' interpolated; '>' the curve never gets there (cost is its largest budget, a lower
  bound); '<' its smallest budget already does (an upper bound).

  Example:
    >>> cost, relation = cost_to_reach(np.array([10, 100]), np.array([1.0, 0.1]), 0.316)
    >>> round(cost, 1), relation
    (31.6, '=')
  """
  if len(costs) == 0 or len(costs) != len(errs):
    raise ValueError(f"costs and errs must be non-empty and of equal length, got {len(costs)} and {len(errs)}.")
  order = np.argsort(costs)
  c, e = np.asarray(costs, float)[order], np.minimum.accumulate(np.asarray(errs, float)[order])
  if target < e[-1]:
    return float(c[-1]), ">"
  if target >= e[0]:
    return float(c[0]), "<"
  i = int(np.argmax(e <= target))
  t = (np.log(target) - np.log(e[i - 1])) / (np.log(e[i]) - np.log(e[i - 1]))
  return float(np.exp(np.log(c[i - 1]) + t * (np.log(c[i]) - np.log(c[i - 1])))), "="


def speedup(rows: list[dict], row: dict) -> tuple[float, str]:
  """Cost the per-example reference estimator of ``row``'s target needs for ``row``'s error, divided by ``row``'s
  cost, and the bound direction (``'?'``: no per-example reference rows).

  Args:
    rows: table rows with ``kind``, ``method``, ``target``, ``evals`` and ``mae``.
    row: the (amortized) row to price.
  """
  ref = [r for r in rows if r["kind"] == "per-example" and r["method"] == REFERENCE.get(row["target"])]
  if not ref:
    return float("nan"), "?"
  c, rel = cost_to_reach(np.array([r["evals"] for r in ref]), np.array([r["mae"] for r in ref]), row["mae"])
  return c / row["evals"], rel


def add_speedups(rows: list[dict]) -> list[dict]:
  """Sets ``speedup`` and ``bound`` on every row that is not per-example (in place) and returns ``rows``."""
  for r in rows:
    if r["kind"] != "per-example":
      r["speedup"], r["bound"] = speedup(rows, r)
  return rows


def best_row(rows: list[dict], kind: str = "stochastic amortization", target: str = "shapley") -> dict | None:
  """The row of ``kind`` and ``target`` with the largest speedup (ties: a lower bound wins), labelled
  ``'<method> <setting>'``; None if there is none. Call :func:`add_speedups` first.

  Example:
    >>> rows = [dict(kind="stochastic amortization", target="shapley", method="lime", setting="32/label",
    ...              speedup=2.0, bound="=")]
    >>> best_row(rows)["label"]
    'lime 32/label'
  """
  candidates = [r for r in rows if r["kind"] == kind and r["target"] == target]
  best = max(candidates, key=lambda r: (r["speedup"], r["bound"] == ">"), default=None)
  return None if best is None else dict(best, label=f"{best['method']} {best['setting']}")
