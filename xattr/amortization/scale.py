"""Amortization at scale: the total compute to explain N inputs, per-example vs amortized, at equal error.

A per-example estimator pays its budget for every one of the N inputs. An amortized explainer pays once for its
training (the labels of its ``n_train`` training inputs, or FastSHAP's masked evaluations) and then
``explain_evals`` per input (the grand value for the efficient normalization; FastSHAP also counts the null). So
at N inputs

  amortized total = train_evals + N * explain_evals,
  per-example total at the same error = N * (KernelSHAP's per-input cost for that error, interpolated),

and ``speedup = per-example total / amortized total``. An explainer may only be priced at N >= its ``n_train``:
its training inputs are among the inputs it explains. With ``flops`` (:func:`mlp_flops` of the model per game
evaluation and of the explainer per input), the same totals are also priced in FLOPs, the explainer's training
included (3 forward passes' worth per training row: forward and backward):

  amortized FLOPs = train_evals * model + 3 * explainer * explainer_rows + N * (explain_evals * model + explainer),
  per-example FLOPs = N * per-input evaluations * model.

Example:
  >>> from xattr.amortization import scale
  >>> ref = [dict(kind="per-example", method="kernel_shap", target="shapley", evals=e, mae=m)
  ...        for e, m in ((32, 0.1), (512, 0.025))]
  >>> sa = dict(kind="stochastic amortization", method="kernel_shap", setting="32/label", target="shapley",
  ...           mae=0.05, n_train=1000, train_evals=32_000.0, explain_evals=1)
  >>> [(r["n_explain"], round(r["speedup"], 1)) for r in scale.at_scale(ref + [sa], (1000, 100_000))]
  [(1000, 3.9), (100000, 97.0)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xattr.amortization import costs

__all__ = ["amortized_entry", "at_scale", "best_at", "mlp_flops", "total_evals"]


def mlp_flops(widths: Sequence[int]) -> float:
  """FLOPs of one row through dense layers of these widths (2 per weight: a multiply and an add).

  Example:
    >>> mlp_flops((16, 64, 64, 2))
    10496.0
  """
  return float(sum(2 * a * b for a, b in zip(widths[:-1], widths[1:])))


def amortized_entry(row: dict, n_train: int, explainer_rows: int = 0) -> dict:
  """``row`` (an amortized row of the study, its ``evals`` per training input) with ``n_train``, ``train_evals``
  (its whole training cost in model evaluations), ``explain_evals`` (per explained input) and ``explainer_rows``
  (inputs pushed through the explainer in training: steps x batch) added.

  Example:
    >>> amortized_entry(dict(kind="FastSHAP", target="shapley", evals=34.0), 100)["train_evals"]
    3200.0
  """
  if row["kind"] == "FastSHAP":
    explain = 2                                  # grand and null values for the efficient normalization
  else:
    explain = 1 if row["target"] == "shapley" else 0
  return dict(row, n_train=int(n_train), explain_evals=explain, train_evals=float(n_train * (row["evals"] - explain)),
              explainer_rows=int(explainer_rows))


def total_evals(entry: dict, n_explain: int) -> float:
  """Model evaluations to train ``entry``'s explainer and explain ``n_explain`` inputs with it."""
  return entry["train_evals"] + n_explain * entry["explain_evals"]


def at_scale(rows: Sequence[dict], sizes: Sequence[int], flops: dict[str, float] | None = None) -> list[dict]:
  """One entry per (N in ``sizes``, amortized row with ``n_train`` <= N): totals, the per-example KernelSHAP total
  at the same error and the speedup with its bound ('>': KernelSHAP never reached that error, a lower bound; '<':
  its smallest budget already does, an upper bound). With ``flops = {"model": per game evaluation,
  "explainer": per input}`` also ``amortized_flops``, ``per_example_flops`` and ``flops_speedup``."""
  out = []
  for n in sizes:
    for r in rows:
      if "n_train" not in r or r["n_train"] > n:
        continue
      per_input, bound = costs.speedup(list(rows), dict(r, evals=1.0))       # KernelSHAP evals for r's error
      amortized = total_evals(r, n)
      entry = dict(n_explain=int(n), label=f"{r['kind']} {r['method']} {r.get('setting', '')}".strip(),
                   n_train=r["n_train"], mae=r["mae"], amortized_evals=amortized,
                   per_example_evals=n * per_input, speedup=n * per_input / amortized, bound=bound)
      if flops:
        model, explainer = flops["model"], flops["explainer"]
        cost = (r["train_evals"] * model + costs.TRAIN_PASSES * explainer * r.get("explainer_rows", 0)
                + n * (r["explain_evals"] * model + explainer))
        entry.update(amortized_flops=cost, per_example_flops=n * per_input * model,
                     flops_speedup=n * per_input * model / cost)
      out.append(entry)
  return out


def best_at(entries: Sequence[dict], n_explain: int) -> dict | None:
  """The entry with the largest speedup at ``n_explain`` (None if there is none). Upper bounds (bound '<': the
  explainer is no better than KernelSHAP's smallest budget) only count when nothing else is priced at N.

  Example:
    >>> e = [dict(n_explain=10, speedup=9.0, bound="<"), dict(n_explain=10, speedup=3.0, bound="=")]
    >>> best_at(e, 10)["speedup"]
    3.0
  """
  cands = [e for e in entries if e["n_explain"] == n_explain and np.isfinite(e["speedup"])]
  measured = [e for e in cands if e["bound"] != "<"]
  return max(measured or cands, key=lambda e: e["speedup"], default=None)
