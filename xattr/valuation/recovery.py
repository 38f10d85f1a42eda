"""Do the individualized scaling laws differ across points, and do the estimators recover them?

Against the ground truth (many samples per point, sizes spread over [k_min, k_max)):

* :func:`crossings` — how many pairs of points swap order between k_min and k_max: by the laws fitted to the
  ground-truth samples, and significantly by the model-free means of the samples near each end (both
  differences beyond two standard errors, with opposite signs). Crossing curves are what makes the best points
  to add depend on the dataset size.
* :func:`recovery` — per estimator (MLE, log-log regression, amortized network; the size-free MC mean as a
  reference) and sample budget: Spearman correlation of alpha with the ground-truth law's alpha (over points
  with a clearly positive value, where alpha is defined), and the error of the predicted value c k^-alpha at
  k = k_min and k = k_max against the ground-truth means there.
* :func:`group_summary` — where the pool knows its points' groups (the synthetic pool): each group's typical
  law and its share of each selection rule's points.

Example:
  >>> import numpy as np
  >>> from xattr.valuation.study import Samples
  >>> k = np.tile(np.geomspace(10, 100, 8), (2, 1))
  >>> truth = Samples(np.arange(2), k, np.array([[1.0], [0.1]]) * k ** -np.array([[1.0], [0.0]]), 0.0)
  >>> law = (np.array([1.0, 0.1]), np.array([1.0, 0.0]))        # curves 1/k and 0.1 cross at k = 10
  >>> crossings(truth, law, (9, 101))["law_crossings"]
  1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from xattr.valuation import scaling
from xattr.valuation.pool import Pool
from xattr.valuation.study import Samples, fit_law

__all__ = ["LAW_METHODS", "Laws", "crossings", "recovery", "group_summary", "analyse"]

# Estimators whose (c, alpha) are scored: estimate key prefix -> label. 'mc' predicts its size-free mean.
LAW_METHODS = {"mle": "MLE scaling law", "loglog": "log-log regression", "amortized": "amortized scaling law (NLL)",
               "mc": "MC mean (size-free reference)"}


def _pair_signs(v: np.ndarray) -> np.ndarray:
  return np.sign(v[:, None] - v[None, :])


def crossings(truth: Samples, law: tuple[np.ndarray, np.ndarray], k_range: tuple[int, int],
              num_examples: int = 3) -> dict[str, Any]:
  """Pairs of ground-truth points whose curves cross inside [k_min, k_max].

  Args:
    truth: ground-truth samples.
    law: (c, alpha) of the law fitted to each ground-truth point's samples.
    k_range: (k_min, k_max).
    num_examples: how many of the most clearly crossing pairs to return.

  Returns:
    ``pairs`` (all pairs), ``law_crossings`` (pairs whose fitted laws swap order between k_min and k_max),
    ``significant_crossings`` (pairs whose sample means near k_min and near k_max, :meth:`Samples.near`, differ
    by over two standard errors at both ends with opposite signs) and ``examples``: rows into ``truth`` of the
    clearest significant pairs (largest smaller-end z-score first, no point in two pairs), as [i, j] lists.
  """
  k_min, k_max = k_range
  c, alpha = law
  flips = _pair_signs(scaling.law(c, alpha, k_min)) * _pair_signs(scaling.law(c, alpha, k_max)) < 0
  (m0, s0), (m1, s1) = truth.near(k_min), truth.near(k_max)
  z0 = (m0[:, None] - m0[None]) / np.sqrt(s0[:, None] ** 2 + s0[None] ** 2)
  z1 = (m1[:, None] - m1[None]) / np.sqrt(s1[:, None] ** 2 + s1[None] ** 2)
  upper = np.triu(np.ones(flips.shape, bool), 1)
  clear = np.nan_to_num(np.minimum(np.abs(z0), np.abs(z1))) * (z0 * z1 < 0)
  significant = upper & (clear > 2)
  i, j = np.nonzero(significant)
  examples, used = [], set()
  for o in np.argsort(-clear[i, j]):            # the clearest pairs, each point in one example at most
    if len(examples) < num_examples and not {i[o], j[o]} & used:
      examples.append([int(i[o]), int(j[o])])
      used |= {i[o], j[o]}
  p = len(truth.points)
  return dict(pairs=p * (p - 1) // 2, law_crossings=int((flips & upper).sum()),
              significant_crossings=int(significant.sum()), examples=examples)


def _predicted(best: dict[str, np.ndarray], method: str, truth: Samples, k: float) -> np.ndarray:
  """The method's law averaged over the ground-truth samples near ``k`` (what :meth:`Samples.near` averages:
  at an end of the range that window is one-sided, and a steep law's mean over it is not its value at k)."""
  if method == "mc":
    return best["mc"][truth.points]
  near = truth.near_mask(k)
  c, alpha = best[f"{method}_c"][truth.points], best[f"{method}_alpha"][truth.points]
  return (scaling.law(c[:, None], alpha[:, None], truth.sizes) * near).sum(1) / np.maximum(near.sum(1), 1)


def _score(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
  ok = np.isfinite(pred)
  if ok.sum() < 3:
    return float("nan"), float("nan")
  err = np.sqrt(np.mean((pred[ok] - target[ok]) ** 2)) / target[ok].std()
  return float(err), float(stats.spearmanr(pred[ok], target[ok]).statistic)


def recovery(estimates: dict[int, dict[str, np.ndarray]], truth: Samples, law: tuple[np.ndarray, np.ndarray],
             k_range: tuple[int, int]) -> dict[str, Any]:
  """Per estimator of :data:`LAW_METHODS` and budget: how well its laws match the ground truth.

  Returns:
    ``methods``: method -> budget -> ``alpha_spearman`` (with the ground-truth law's alpha, over the points with
    value above two standard errors), ``nrmse_kmin`` / ``nrmse_kmax`` (RMSE of c k^-alpha, averaged over the
    same sizes, against the ground-truth means within 25% of each end, over their std), ``spearman_kmin`` /
    ``spearman_kmax`` and ``valid``
    (points with a finite estimate); ``clear_points`` (points alpha is scored on) and ``noise_floor_kmin`` /
    ``noise_floor_kmax`` (RMS standard error of the ground-truth means over their std: an nrmse floor).
  """
  k_min, k_max = k_range
  ends = {"kmin": truth.near(k_min), "kmax": truth.near(k_max)}
  clear = truth.values > 2 * truth.standard_errors
  out: dict[str, Any] = {"methods": {}, "clear_points": int(clear.sum())}
  for end, (mean, se) in ends.items():
    out[f"noise_floor_{end}"] = float(np.sqrt(np.mean(se ** 2)) / mean.std())
  for method in LAW_METHODS:
    out["methods"][method] = rows = {}
    for b, best in estimates.items():
      row: dict[str, float] = {}
      if method != "mc":
        a = best[f"{method}_alpha"][truth.points]
        ok = clear & np.isfinite(a)
        row["alpha_spearman"] = (float(stats.spearmanr(a[ok], law[1][ok]).statistic) if ok.sum() > 2
                                 else float("nan"))
      for end, k in (("kmin", k_min), ("kmax", k_max)):
        pred = _predicted(best, method, truth, k)
        row[f"nrmse_{end}"], row[f"spearman_{end}"] = _score(pred, ends[end][0])
      row["valid"] = int(np.isfinite(pred).sum())
      rows[b] = row
  return out


def group_summary(groups: np.ndarray, group_names: Sequence[str], truth: Samples,
                  law: tuple[np.ndarray, np.ndarray], k_range: tuple[int, int],
                  chosen: dict[str, np.ndarray]) -> dict[str, Any]:
  """Per group (pool points' ``groups``, indices into ``group_names``): its ground-truth points' median alpha and
  mean value near k_min and k_max, and how many of each selection rule's points it holds."""
  g_truth = groups[truth.points]
  (m0, _), (m1, _) = truth.near(k_range[0]), truth.near(k_range[1])
  out: dict[str, Any] = {}
  for gi, name in enumerate(group_names):
    mask = g_truth == gi
    out[name] = dict(points=int((groups == gi).sum()), truth_points=int(mask.sum()),
                     median_alpha=float(np.median(law[1][mask])) if mask.any() else float("nan"),
                     value_kmin=float(m0[mask].mean()) if mask.any() else float("nan"),
                     value_kmax=float(m1[mask].mean()) if mask.any() else float("nan"),
                     chosen={rule: int((groups[idx] == gi).sum()) for rule, idx in chosen.items()})
  return out


class Laws(NamedTuple):
  """What :func:`analyse` finds about the per-point laws.

  Attributes:
    truth_fit: the MLE law fitted to each ground-truth point's samples (arrays over ``truth.points``).
    crossings: :func:`crossings`.
    recovery: :func:`recovery`.
    groups: :func:`group_summary`, or None when the pool has no groups.
  """

  truth_fit: scaling.ScalingFit
  crossings: dict[str, Any]
  recovery: dict[str, Any]
  groups: dict[str, Any] | None


def analyse(config: Any, pool: Pool, truth: Samples, estimates: dict[int, dict[str, np.ndarray]],
            chosen: dict[str, np.ndarray]) -> Laws:
  """Fits the ground-truth laws (``config.mle``) and scores crossings, recovery and groups over
  [``config.sampling.k_min``, ``k_max``]; ``chosen`` are the selection rules' points (for the groups)."""
  fit = fit_law(config.mle, truth.sizes, truth.deltas)
  k_range = (config.sampling.k_min, config.sampling.k_max)
  law = (fit.c, fit.alpha)
  groups = (group_summary(pool.groups, pool.group_names, truth, law, k_range, chosen)
            if pool.groups is not None else None)
  return Laws(fit, crossings(truth, law, k_range), recovery(estimates, truth, law, k_range), groups)
