"""Scoring feature selection: accuracy or AUROC against the number of features and the cost spent.

A greedy rollout records the prediction after every number of selections (``Rollout.step_logits``), so one
rollout of T steps gives a whole curve, metric(budget) for budget 0..T. Stopping rules that give each sample its
own budget (penalized lambda, confidence threshold) give one point each: (average cost, metric). Results over
seeds are summarized by their mean and standard deviation.

Example:
  >>> import numpy as np
  >>> from xattr.selection import evaluation
  >>> logits = np.array([[[0.0, 1.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]])    # 2 samples, budgets 0..1
  >>> evaluation.budget_curve(logits, np.array([0, 1]), "accuracy").tolist()
  [0.5, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

__all__ = ["METRICS", "default_metric", "score", "budget_curve", "step_costs", "rollout_scores", "stopping_point",
           "mean_std", "markdown_table"]

METRICS = ("accuracy", "auroc")


def default_metric(num_classes: int) -> str:
  """AUROC for binary problems (as in the GDFS and DIME papers' medical datasets), accuracy otherwise.

  Example:
    >>> default_metric(2), default_metric(10)
    ('auroc', 'accuracy')
  """
  return "auroc" if num_classes == 2 else "accuracy"


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def score(logits: np.ndarray, labels: np.ndarray, metric: str) -> float:
  """Accuracy, or AUROC (binary: class-1 probability; multiclass: one-vs-rest macro average).

  Example:
    >>> score(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 0]), "auroc")
    1.0
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  if metric == "accuracy":
    return float(np.mean(logits.argmax(-1) == labels))
  if metric == "auroc":
    probs = _softmax(logits)
    if len(np.unique(labels)) < 2:
      return float("nan")                       # undefined with one class present
    if probs.shape[-1] == 2:
      return float(sk_metrics.roc_auc_score(labels, probs[:, 1]))
    return float(sk_metrics.roc_auc_score(labels, probs, multi_class="ovr", labels=np.arange(probs.shape[-1])))
  raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")


def budget_curve(step_logits: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
  """metric after 0..T selections from a rollout's ``step_logits`` float[N, T + 1, C]: float64[T + 1]."""
  step_logits = np.asarray(step_logits)
  if step_logits.ndim != 3 or step_logits.shape[0] != len(labels):
    raise ValueError(f"step_logits must be float[num_samples={len(labels)}, T + 1, classes], got shape "
                     f"{step_logits.shape}.")
  return np.array([score(step_logits[:, t], labels, metric) for t in range(step_logits.shape[1])])


def step_costs(order: np.ndarray, costs: np.ndarray) -> np.ndarray:
  """Cost spent after 0..T selections of each sample: float64[N, T + 1] (stopped steps, ``-1``, cost nothing).

  Example:
    >>> step_costs(np.array([[2, 0], [1, -1]]), np.array([1.0, 2.0, 3.0])).tolist()
    [[0.0, 3.0, 4.0], [0.0, 2.0, 2.0]]
  """
  order, costs = np.asarray(order), np.asarray(costs)
  spent = np.where(order >= 0, costs[order], 0.0)
  return np.concatenate([np.zeros((len(order), 1)), np.cumsum(spent, 1)], axis=1)


def rollout_scores(out: Any, labels: np.ndarray, costs: np.ndarray, metric: str) -> dict[str, np.ndarray]:
  """The curves of one rollout run to its full budget T (a :class:`~xattr.selection.rollout.Rollout` or anything
  with ``step_logits`` float[N, T + 1, C] and ``order`` int[N, T]).

  Returns:
    ``curve`` (``metric`` after 0..T selections), ``accuracy`` (the same for accuracy), ``cost`` (average cost
    spent after 0..T selections) and ``order`` (the selections).

  Example:
    >>> from types import SimpleNamespace
    >>> out = SimpleNamespace(step_logits=np.array([[[0.0, 1.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 3.0]]]),
    ...                       order=np.array([[1], [0]]))
    >>> r = rollout_scores(out, np.array([0, 1]), np.array([1.0, 2.0]), "accuracy")
    >>> r["curve"].tolist(), r["cost"].tolist()
    ([0.5, 1.0], [0.0, 1.5])
  """
  order, step_logits = np.asarray(out.order), np.asarray(out.step_logits)
  return {"curve": budget_curve(step_logits, labels, metric), "accuracy": budget_curve(step_logits, labels, "accuracy"),
          "cost": step_costs(order, costs).mean(0), "order": order}


def stopping_point(out: Any, labels: np.ndarray, metric: str) -> tuple[float, float]:
  """(average cost, metric) of a rollout with a per-sample stopping rule (its final ``cost`` and ``logits``).

  Example:
    >>> from types import SimpleNamespace
    >>> out = SimpleNamespace(cost=np.array([1.0, 3.0]), logits=np.array([[0.0, 1.0], [0.0, 1.0]]))
    >>> stopping_point(out, np.array([1, 0]), "accuracy")
    (2.0, 0.5)
  """
  return float(np.mean(np.asarray(out.cost))), score(np.asarray(out.logits), labels, metric)


def mean_std(values: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation (ddof=0) over the leading (seed) axis.

  Example:
    >>> mean_std(np.array([[1.0, 2.0], [3.0, 2.0]]))
    (array([2., 2.]), array([1., 0.]))
  """
  arr = np.asarray(values, np.float64)
  return arr.mean(0), arr.std(0)


def markdown_table(budgets: Sequence[int], columns: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   *, digits: int = 3, bold_best: bool = True, row_label: str = "features") -> str:
  """A markdown table: one row per budget, one column per method, cells ``mean ± std`` (best mean in bold).

  Args:
    budgets: row labels.
    columns: method -> (mean float[len(budgets)], std float[len(budgets)]); NaN cells print as "–".
    digits: decimals; bold_best: bold the best mean of each row; row_label: header of the budget column.

  Example:
    >>> print(markdown_table([1], {"a": (np.array([0.5]), np.array([0.1])), "b": (np.array([0.7]), np.array([0.0]))}))
    | features | a | b |
    |---|---|---|
    | 1 | 0.500 ± 0.100 | **0.700 ± 0.000** |
  """
  names = list(columns)
  lines = [f"| {row_label} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for i, budget in enumerate(budgets):
    means = np.array([columns[n][0][i] for n in names], np.float64)
    best = np.nanmax(means) if bold_best and np.isfinite(means).any() else np.nan
    cells = []
    for n, m in zip(names, means):
      if not np.isfinite(m):
        cells.append("–")
        continue
      text = f"{m:.{digits}f} ± {columns[n][1][i]:.{digits}f}"
      cells.append(f"**{text}**" if m == best else text)
    lines.append(f"| {budget} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
