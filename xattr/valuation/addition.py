"""Size-aware selection by point addition: do the best points to add depend on the dataset size?

The fitted individualized laws c k^-alpha rank the pool points by their predicted contribution at a target size
k*. :func:`point_addition` adds the top ``num_added`` points of the ranking made at each target size (several
sizes, e.g. spanning 10x), the top ground-truth points by their mean contribution near each size, the top points
by size-free values (the law's distributional value, TMC Data Shapley, Data Banzhaf where computed) and random
points to the same random class-stratified base datasets of each size, and measures the utility gains. If the
best points depend on the size, the size-matched ranking gains more than the ranking made at the other end of
the sizes, at both ends (:func:`gains` pairs the rules over the same bases, :data:`COMPARISONS`).

Example:
  >>> import numpy as np
  >>> bases = sample_bases(np.random.default_rng(0), np.arange(20) % 2, exclude=[0, 1], size=6, repeats=3)
  >>> bases.shape, bases.sum(1).tolist(), bool(bases[:, :2].any())
  ((3, 20), [6, 6, 6], False)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import stats
from sklearn import model_selection

from xattr import artifacts
from xattr.valuation import samplers, scaling
from xattr.valuation.study import Samples, Study

__all__ = ["LAWS", "COMPARISONS", "Addition", "target_sizes", "law_rule", "truth_rule", "other_end",
           "sample_bases", "local_values", "choose", "comparisons", "gains", "point_addition"]

LAWS = ("mle", "amortized")
# Paired comparisons at each size: name -> what the size-matched law ranking is compared with there.
COMPARISONS = ("law vs other end", "ground truth vs other end", "law vs distributional value",
               "law vs TMC Data Shapley", "law vs Data Banzhaf", "law vs random")
# Size-free values a rule can rank by: rule label -> key of the pool's values (see point_addition).
VALUE_RULES = {"distributional value": "psi", "TMC Data Shapley": "tmc", "Data Banzhaf": "banzhaf"}


class Addition(NamedTuple):
  """The outcome of :func:`point_addition`.

  Attributes:
    sizes: the target (base) sizes k*, ascending.
    chosen: rule -> the added points.
    gains: base size -> rule -> {'mean', 'se'} of U(D u S) - U(D) over the base datasets.
    paired: comparison (:data:`COMPARISONS`, those whose rules ran) -> base size -> {'mean', 'se'} of (the
      size-matched ranking's gain) - (the compared rule's gain), paired over the same bases.
    rank_correlation: Spearman correlation of the law's predictions at the smallest and largest size.
    truth_rank_correlation: the same for the ground-truth points' mean contributions near those sizes.
    overlap: points shared by the law's top sets at the smallest and largest size.
  """

  sizes: tuple[int, ...]
  chosen: dict[str, np.ndarray]
  gains: dict[int, dict[str, dict[str, float]]]
  paired: dict[str, dict[int, dict[str, float]]]
  rank_correlation: float
  truth_rank_correlation: float
  overlap: int


def target_sizes(addition: Any) -> tuple[int, ...]:
  """The target sizes of an ``addition`` config section: ``sizes``, or ``(small, large)`` when it is empty."""
  sizes = tuple(int(k) for k in (addition.sizes or (addition.small, addition.large)))
  if len(sizes) < 2 or any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
    raise ValueError(f"config.addition.sizes (or small, large) must be at least two increasing positive sizes, got "
                     f"{sizes}.")
  return sizes


def law_rule(k: int) -> str:
  return f"top by law at k={k}"


def truth_rule(k: int) -> str:
  return f"top by ground truth at k={k}"


def other_end(sizes: tuple[int, ...], k: int) -> int:
  """The end of ``sizes`` farther from ``k`` in log k (the largest for the smallest size and vice versa).

  Example:
    >>> other_end((20, 60, 200), 20), other_end((20, 60, 200), 200), other_end((20, 40, 200), 40)
    (200, 20, 200)
  """
  return sizes[-1] if np.log(k / sizes[0]) <= np.log(sizes[-1] / k) else sizes[0]


def sample_bases(rng: np.random.Generator, labels: np.ndarray, exclude: Any, size: int, repeats: int) -> np.ndarray:
  """bool[repeats, n]: ``repeats`` class-stratified subsets (proportional) of ``size`` points outside ``exclude``."""
  labels = np.asarray(labels)
  allowed = np.setdiff1d(np.arange(len(labels)), exclude)
  out = np.zeros((repeats, len(labels)), bool)
  for r in range(repeats):
    _, chosen = model_selection.train_test_split(allowed, test_size=size, stratify=labels[allowed],
                                                 random_state=int(rng.integers(2 ** 31)))
    out[r, chosen] = True
  return out


def local_values(truth: Samples, size: int) -> np.ndarray:
  """Each ground-truth point's mean contribution over its samples with k within 25% of ``size``
  (:meth:`~xattr.valuation.study.Samples.near`).

  Example:
    >>> t = Samples(np.arange(1), np.array([[10.0, 11.0, 30.0]]), np.array([[1.0, 3.0, 9.0]]), 0.0)
    >>> local_values(t, 10).tolist()
    [2.0]
  """
  return truth.near(size)[0]


def choose(law_c: np.ndarray, law_alpha: np.ndarray, truth: Samples, sizes: tuple[int, ...], num_added: int,
           seed: int, values: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Rule -> added points: top by the law at each size, top ground-truth points (by :func:`local_values`) at each
  size (at most half of them), top by each of ``values`` (label -> float[n] size-free values, e.g. Data
  Shapley) and random points (seeded by ``[seed, 5]``)."""
  truth_order = {k: truth.points[np.argsort(-local_values(truth, k))] for k in sizes}
  num_truth = min(num_added, len(truth.points) // 2)
  chosen = {law_rule(k): np.argsort(-scaling.law(law_c, law_alpha, k))[:num_added] for k in sizes}
  chosen.update({truth_rule(k): truth_order[k][:num_truth] for k in sizes})
  chosen.update({f"top by {name}": np.argsort(-np.nan_to_num(v, nan=-np.inf))[:num_added]
                 for name, v in (values or {}).items()})
  chosen["random"] = np.random.default_rng([seed, 5]).choice(len(law_c), num_added, replace=False)
  return chosen


def comparisons(chosen: dict[str, np.ndarray], sizes: tuple[int, ...], k: int) -> dict[str, tuple[str, str]]:
  """Comparison name -> (size-matched rule, compared rule) at base size ``k``, for the rules in ``chosen``.

  Example:
    >>> rules = dict.fromkeys([law_rule(10), law_rule(100), "random"])
    >>> comparisons(rules, (10, 100), 100)["law vs other end"]
    ('top by law at k=100', 'top by law at k=10')
  """
  other = other_end(sizes, k)
  pairs = {"law vs other end": (law_rule(k), law_rule(other)),
           "ground truth vs other end": (truth_rule(k), truth_rule(other)),
           **{f"law vs {name}": (law_rule(k), f"top by {name}") for name in VALUE_RULES},
           "law vs random": (law_rule(k), "random")}
  return {name: pair for name, pair in pairs.items() if pair[0] in chosen and pair[1] in chosen}


def _mean_se(g: np.ndarray) -> dict[str, float]:
  return dict(mean=float(g.mean()), se=float(g.std(ddof=1) / np.sqrt(len(g))))


def gains(values: dict[str, np.ndarray], chosen: dict[str, np.ndarray], sizes: tuple[int, ...]
          ) -> tuple[dict[int, dict[str, dict[str, float]]], dict[str, dict[int, dict[str, float]]]]:
  """Per size the gain of each rule, and the paired differences of :func:`comparisons`.

  Args:
    values: ``'k<size>'`` -> float[1 + rules, repeats]: utilities of the bases, then of the bases with each
      rule's points (rules in the order of ``chosen``, as :func:`choose` makes them).
    chosen: rule -> points.
    sizes: the base sizes, ascending.
  """
  result, paired = {}, {}
  for k in sizes:
    g = dict(zip(chosen, values[f"k{k}"][1:] - values[f"k{k}"][0]))
    result[k] = {rule: _mean_se(gain) for rule, gain in g.items()}
    for name, (own, other) in comparisons(chosen, sizes, k).items():
      paired.setdefault(name, {})[k] = _mean_se(g[own] - g[other])
  return result, paired


def _evaluate(study: Study, chosen: dict[str, np.ndarray], union: np.ndarray, sizes: tuple[int, ...]
              ) -> dict[str, np.ndarray]:
  ad, n = study.config.addition, study.num_points
  rng = np.random.default_rng([study.config.seed, 6])
  out = {}
  for k in sizes:
    bases = sample_bases(rng, study.pool.y, union, k, ad.repeats)
    masks = [bases] + [bases | np.isin(np.arange(n), idx)[None] for idx in chosen.values()]
    vals = samplers.evaluate(study.utility, np.concatenate(masks), mesh=study.mesh,
                             chunk_size=study.config.sampling.chunk_size, progress=False)
    out[f"k{k}"] = vals[study.config.metric].reshape(len(masks), ad.repeats)
  return out


def point_addition(study: Study, best: dict[str, np.ndarray], truth: Samples,
                   pool_values: dict[str, np.ndarray] | None = None) -> Addition:
  """Runs the addition experiment of ``study.config.addition`` with the laws of ``best`` (the estimates at the
  largest budget) at every target size of :func:`target_sizes`; its utilities are saved in
  ``estimates/addition.npz``.

  Args:
    study: the study.
    best: one budget's estimates (:func:`xattr.valuation.study.fit_estimators`): ``<law>_c``, ``<law>_alpha``
      and the law's distributional value ``<law>``.
    truth: the ground-truth samples.
    pool_values: the pool baselines (:func:`xattr.valuation.study.pool_baselines`); its ``tmc`` and ``banzhaf``
      values, where present, add the 'top by TMC Data Shapley' and 'top by Data Banzhaf' rules.
  """
  config, ad, n = study.config, study.config.addition, study.num_points
  if ad.law not in LAWS:
    raise ValueError(f"config.addition.law must be one of {LAWS}, got {ad.law!r}.")
  law_c, law_alpha = best[f"{ad.law}_c"], best[f"{ad.law}_alpha"]
  sizes = target_sizes(ad)
  known = {"psi": best[ad.law], **(pool_values or {})}
  values = {name: known[key] for name, key in VALUE_RULES.items() if key in known}
  chosen = choose(law_c, law_alpha, truth, sizes, ad.num_added, config.seed, values)
  union = np.unique(np.concatenate(list(chosen.values())))
  if sizes[-1] + len(union) > n:
    raise ValueError(f"the largest addition size + the added points of every rule ({sizes[-1]} + {len(union)}) "
                     f"exceed the pool of {n}; lower config.addition.sizes (or large) or addition.num_added.")
  fp = study.fingerprint(ad, sizes, {rule: idx.tolist() for rule, idx in chosen.items()})
  utilities = artifacts.compute_or_load(study.path("estimates", "addition.npz"), fp,
                                        lambda: _evaluate(study, chosen, union, sizes))
  result, paired = gains(utilities, chosen, sizes)
  small, large = sizes[0], sizes[-1]
  return Addition(
      sizes, chosen, result, paired,
      float(stats.spearmanr(scaling.law(law_c, law_alpha, small), scaling.law(law_c, law_alpha, large)).statistic),
      float(stats.spearmanr(local_values(truth, small), local_values(truth, large)).statistic),
      int(len(np.intersect1d(chosen[law_rule(small)], chosen[law_rule(large)]))))
