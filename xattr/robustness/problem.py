"""The data of a robustness study: features, players (groups), the explained output and, for the synthetic
Gaussian, the exact conditional distributions.

``config.dataset``:
  * ``'gaussian'``: x ~ N(0, Sigma) with d features (equicorrelated ``rho``, and features 0 and 1 correlated
    ``pair_rho``), label 1[x_0 + x_2 - x_3 + x_4 x_5 / 2 + noise > 0]: conditional removal is exact
    (:func:`xattr.robustness.bounds.gaussian_conditional`).
  * an embedded dataset ('breast_cancer', 'wine', 'digits'): standardized features; ``config.players`` groups them
    (``'split:k'``: k contiguous groups; ``'breast_cancer'``: the 10 measurements x (mean, error, worst);
    ``'blocks:r,c'``: for 8x8 digits, r x c pixel blocks; ``'features'``: one player per feature).

Example:
  >>> import ml_collections
  >>> p = load(ml_collections.ConfigDict(dict(dataset="gaussian", seed=0, players="features",
  ...     gaussian=dict(num_features=6, rho=0.3, pair_rho=0.9, num_train=64, num_test=16))))
  >>> p.x_train.shape, p.groups.shape, p.cov is not None
  ((64, 6), (6, 6), True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from xattr import data, masks

__all__ = ["Problem", "gaussian_covariance", "load", "player_groups", "correlated_pair"]


class Problem(NamedTuple):
  """Arrays of one study (float32 features, int32 labels)."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  groups: np.ndarray            # bool[d players, f features]
  mean: np.ndarray | None       # Gaussian only: the exact distribution
  cov: np.ndarray | None


def gaussian_covariance(num_features: int, rho: float, pair_rho: float) -> np.ndarray:
  """Equicorrelation ``rho`` with features 0 and 1 correlated ``pair_rho`` (raises unless positive definite)."""
  cov = np.full((num_features, num_features), rho) + (1 - rho) * np.eye(num_features)
  cov[0, 1] = cov[1, 0] = pair_rho
  if np.linalg.eigvalsh(cov).min() <= 1e-6:
    raise ValueError(f"rho={rho}, pair_rho={pair_rho} do not give a positive definite covariance.")
  return cov


def _gaussian(config: Any) -> Problem:
  g = config.gaussian
  if g.num_features < 6:
    raise ValueError(f"gaussian.num_features must be >= 6 (the label uses features 0, 2, 3, 4, 5), got "
                     f"{g.num_features}.")
  cov = gaussian_covariance(g.num_features, g.rho, g.pair_rho)
  rng = np.random.default_rng(config.seed)
  x = rng.multivariate_normal(np.zeros(g.num_features), cov, g.num_train + g.num_test).astype(np.float32)
  logit = x[:, 0] + x[:, 2] - x[:, 3] + 0.5 * x[:, 4] * x[:, 5] + 0.3 * rng.normal(size=len(x))
  y = (logit > 0).astype(np.int32)
  n = g.num_train
  return Problem("gaussian", x[:n], y[:n], x[n:], y[n:], 2, np.eye(g.num_features, dtype=bool),
                 np.zeros(g.num_features), cov)


def player_groups(spec: str, num_features: int) -> np.ndarray:
  """The bool[d, f] group matrix named by ``spec`` (module docstring).

  Example:
    >>> player_groups("split:2", 5).astype(int).tolist()
    [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
  """
  if spec == "features":
    return np.eye(num_features, dtype=bool)
  if spec.startswith("split:"):
    parts = np.array_split(np.arange(num_features), int(spec.split(":")[1]))
    return masks.group_matrix([p.tolist() for p in parts], num_features)
  if spec == "breast_cancer" and num_features == 30:
    return masks.group_matrix([[i, i + 10, i + 20] for i in range(10)], 30)
  if spec.startswith("blocks:") and num_features == 64:
    r, c = (int(v) for v in spec.split(":")[1].split(","))
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    index = (rows // r) * (8 // c) + cols // c
    return index.reshape(1, -1) == np.arange((8 // r) * (8 // c))[:, None]
  raise ValueError(f"players must be 'features', 'split:<k>', 'breast_cancer' (30 features) or 'blocks:<r>,<c>' "
                   f"(64 pixels), got {spec!r} for {num_features} features.")


def load(config: Any) -> Problem:
  """The :class:`Problem` of ``config`` (``dataset``, ``seed``, ``players``, ``gaussian``)."""
  if config.dataset == "gaussian":
    return _gaussian(config)
  ds = data.load_embedded(config.dataset, seed=config.seed)
  if ds.task != "classification":
    raise ValueError(f"dataset must be a classification dataset, got {config.dataset!r} ({ds.task}).")
  groups = player_groups(config.players, ds.num_features)
  return Problem(config.dataset, ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes, groups, None, None)


def correlated_pair(x: np.ndarray) -> tuple[int, int, float]:
  """The most correlated pair of features (i, j) and their correlation (features with zero variance skipped).

  Example:
    >>> x = np.random.default_rng(0).normal(size=(200, 3)); x[:, 2] = -x[:, 0] + 0.01 * x[:, 1]
    >>> i, j, r = correlated_pair(x); (i, j), r < -0.99
    ((0, 2), True)
  """
  std = x.std(0)
  ok = std > 1e-6
  corr = np.corrcoef(x[:, ok].T)
  np.fill_diagonal(corr, 0.0)
  a, b = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
  index = np.flatnonzero(ok)
  i, j = sorted((int(index[a]), int(index[b])))
  return i, j, float(corr[a, b])
