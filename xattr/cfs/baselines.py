"""Baselines for contrastive feature selection, all with the same budget k and the :class:`Selection` output.

* :func:`stg` - supervised: stochastic gates and a classifier MLP trained on the target's labels (STG);
* :func:`cae` - unsupervised on the target alone: a concrete autoencoder (Concrete top-k layer + decoder, i.e.
  :func:`xattr.cfs.select` with the Concrete selector and no background);
* :func:`no_background` - CFS without the background encoder (stochastic gates reconstructing the target from
  ``x * gate`` only): the ablation showing what the background adds;
* :func:`laplacian_score` (He, Cai and Niyogi 2005), :func:`variance` and :func:`pca_loading` - classical
  target-only rankings.

With a group matrix the rankings score a group by the mean of its features' scores.

Example:
  >>> import numpy as np
  >>> from xattr.cfs import baselines
  >>> x = np.random.default_rng(0).normal(size=(100, 3)) * [1.0, 3.0, 0.5]
  >>> baselines.variance(x, num_features=2).indices.tolist()
  [1, 0]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from xattr import _checks
from xattr.cfs import model
from xattr.cfs import core as select_lib
from xattr.data import contrastive
from xattr.models import MLP

__all__ = ["RANKINGS", "stg", "cae", "no_background", "laplacian_score", "variance", "pca_loading", "group_scores"]


def stg(key: jax.Array, target: np.ndarray, labels: np.ndarray, *, num_features: int,
        groups: np.ndarray | None = None, workdir: str | os.PathLike | None = None, progress: bool = False,
        mesh: Any = "auto", **overrides: Any) -> select_lib.Selection:
  """Supervised stochastic gates: a classifier on ``x * gate`` trained with cross-entropy + lambda * penalty.

  Args:
    key: PRNG key.
    target: float[n, d].
    labels: int[n] class labels of the target rows.
    num_features: k (top-k by mu).
    groups, workdir, progress, mesh: as in :func:`xattr.cfs.select`.
    **overrides: :class:`xattr.cfs.select.Settings` fields (hidden_sizes, penalty, selector_steps, ...).

  Example:
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> sel = stg(jax.random.key(0), x, (x[:, 2] > 0).astype(np.int32), num_features=1,   # doctest: +SKIP
    ...           hidden_sizes=(8,), selector_steps=5, batch_size=32)
    >>> sel.indices.shape                                                                 # doctest: +SKIP
    (1,)
  """
  target, _ = contrastive.check_pair(target, None)
  labels = np.asarray(labels)
  if labels.shape != (len(target),) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
    raise ValueError(f"labels must be non-negative int[{len(target)}] (one class per target row), got shape "
                     f"{labels.shape} and dtype {labels.dtype}.")
  s = select_lib.settings(**overrides)
  net_key, key = jax.random.split(key)
  net = MLP(target.shape[1], s.hidden_sizes, int(labels.max()) + 1, rngs=nnx.Rngs(params=net_key))
  indices, scores, history, stopped = select_lib.train_selector(
      key, "classify", {"x": target, "y": labels.astype(np.int32)}, net, kind="gates", num_features=num_features,
      groups=groups, s=s, workdir=None if workdir is None else os.fspath(workdir), progress=progress, mesh=mesh)
  return select_lib.Selection(indices, scores, {"selector": history, "stopped_early": stopped})


def cae(key: jax.Array, target: np.ndarray, *, num_features: int, **kwargs: Any) -> select_lib.Selection:
  """A concrete autoencoder on the target alone (exactly k features); ``kwargs`` as in :func:`xattr.cfs.select`.

  Example:
    >>> x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    >>> sel = cae(jax.random.key(0), x, num_features=3, hidden_sizes=(8,), selector_steps=5)   # doctest: +SKIP
    >>> len(set(sel.indices.tolist()))                                                       # doctest: +SKIP
    3
  """
  return select_lib.select(key, target, None, num_features=num_features, **{**kwargs, "selector": "concrete"})


def no_background(key: jax.Array, target: np.ndarray, *, num_features: int, **kwargs: Any) -> select_lib.Selection:
  """CFS's stochastic gates without the background encoder; ``kwargs`` as in :func:`xattr.cfs.select`.

  Example:
    >>> x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    >>> sel = no_background(jax.random.key(0), x, num_features=2, hidden_sizes=(8,), selector_steps=5)  # doctest: +SKIP
    >>> sel.indices.shape                                                                  # doctest: +SKIP
    (2,)
  """
  return select_lib.select(key, target, None, num_features=num_features, **{**kwargs, "selector": "gates"})


def group_scores(scores: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
  """Per-group scores: the mean score of each group's features (unchanged without groups).

  Example:
    >>> group_scores(np.array([1.0, 3.0, 5.0]), np.array([[1, 1, 0], [0, 0, 1]])).tolist()
    [2.0, 5.0]
  """
  if groups is None:
    return np.asarray(scores, np.float64)
  model.group_variable(groups, len(scores))            # validates the matrix
  g = np.asarray(groups, np.float64)
  return g @ np.asarray(scores, np.float64) / g.sum(1)


def _ranked(scores: np.ndarray, num_features: int, groups: np.ndarray | None) -> select_lib.Selection:
  scores = group_scores(scores, groups)
  k = _checks.positive_int("num_features", num_features)
  if k > len(scores):
    raise ValueError(f"num_features must be <= the number of {'groups' if groups is not None else 'features'} "
                     f"({len(scores)}), got {k}.")
  return select_lib.Selection(select_lib.top_k(scores, k), scores.astype(np.float32), {})


def variance(target: np.ndarray, *, num_features: int, groups: np.ndarray | None = None) -> select_lib.Selection:
  """The k features of largest variance on the target."""
  target, _ = contrastive.check_pair(target, None)
  return _ranked(target.astype(np.float64).var(0), num_features, groups)


def pca_loading(target: np.ndarray, *, num_features: int, num_components: int | None = None,
                groups: np.ndarray | None = None) -> select_lib.Selection:
  """Features ranked by their variance captured by the top principal components: ``sum_c lambda_c V_jc^2``.

  Args:
    num_components: how many components (default: ``num_features``, capped at the rank).

  Example:
    >>> x = np.random.default_rng(0).normal(size=(200, 1)) * [[1.0, 1.0, 0.0]]
    >>> pca_loading(x + 0.01, num_features=2, num_components=1).indices.tolist()
    [0, 1]
  """
  target, _ = contrastive.check_pair(target, None)
  x = target.astype(np.float64) - target.mean(0)
  _, sv, vt = np.linalg.svd(x, full_matrices=False)
  c = min(num_components or num_features, len(sv))
  scores = ((sv[:c, None] ** 2) * vt[:c] ** 2).sum(0) / max(len(x) - 1, 1)
  return _ranked(scores, num_features, groups)


def laplacian_score(target: np.ndarray, *, num_features: int, num_neighbors: int = 5, max_rows: int = 2000,
                    seed: int = 0, groups: np.ndarray | None = None) -> select_lib.Selection:
  """The Laplacian score: features that best preserve the target's kNN graph (smallest score ranks first).

  Heat-kernel weights ``exp(-|x_i - x_j|^2 / t)`` on the symmetrized ``num_neighbors``-NN graph, ``t`` the mean
  squared neighbour distance; at most ``max_rows`` rows (a seeded subsample) enter the graph. The returned
  ``scores`` are minus the Laplacian scores (higher = better, as everywhere in :mod:`xattr.cfs`).

  Example:
    >>> rng = np.random.default_rng(0)
    >>> c = rng.integers(0, 2, 100)
    >>> x = np.stack([c * 4 + rng.normal(size=100), rng.normal(size=100)], 1)
    >>> laplacian_score(x, num_features=1).indices.tolist()     # the feature with cluster structure
    [0]
  """
  target, _ = contrastive.check_pair(target, None)
  _checks.positive_int("num_neighbors", num_neighbors)
  x = target.astype(np.float64)
  if len(x) > max_rows:
    x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
  sq = (x * x).sum(1)
  dist = np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0.0)
  np.fill_diagonal(dist, np.inf)
  k = min(num_neighbors, len(x) - 1)
  nn = np.argsort(dist, axis=1)[:, :k]
  adj = np.zeros_like(dist, dtype=bool)
  adj[np.repeat(np.arange(len(x)), k), nn.reshape(-1)] = True
  adj |= adj.T
  t = dist[adj].mean() if adj.any() else 1.0
  w = np.where(adj, np.exp(-np.where(adj, dist, 0.0) / t), 0.0)
  deg = w.sum(1)
  f = x - (deg @ x) / deg.sum()
  lap = (f * (deg[:, None] * f - w @ f)).sum(0)          # f' (D - W) f per feature
  denom = (deg[:, None] * f * f).sum(0)
  score = np.where(denom > 0, lap / np.maximum(denom, 1e-300), np.inf)
  return _ranked(-score, num_features, groups)


# Name -> target-only ranking ``(target, *, num_features, groups) -> Selection`` (no training).
RANKINGS = {"laplacian": laplacian_score, "variance": variance, "pca": pca_loading}
