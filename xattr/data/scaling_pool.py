"""A synthetic classification pool whose points follow visibly different individualized scaling laws.

Data valuation with scaling laws (Covert et al., 2024) says a point's expected marginal contribution at dataset
size k behaves like c(z) k^-alpha(z), with alpha varying across points, so that some points are worth more in
small datasets and others in large ones. :func:`make` draws a pool where that is true by construction (checked
by brute-force sampling in ``configs/valuation/synthetic.py``):

* the **main mode** (most points): two Gaussian classes along a direction of ``main_dims`` features. Points near
  their class centre (group ``'prototype'``) teach the main decision rule, which a few dozen points already
  learn: large value at small k, fast decay. The other main-mode points (group ``'main'``: boundary points and
  the far tails) are worth little or less than nothing under the cross-entropy utility;
* a **rare subgroup** (``subgroup_fraction`` of the pool and of the validation set, group ``'subgroup'``) that
  lives in ``subgroup_dims`` other features with a small scale (``subgroup_scale``) and its own label direction.
  Under the utility's L2 penalty a few subgroup points barely move the weights on those features, so each one
  adds little at small k, but the subgroup keeps needing points long after the main mode is learnt: small value
  at small k, slow decay.

Everything is drawn from ``numpy.random.default_rng([seed, part])``: no files, no network.

Example:
  >>> from xattr.data import scaling_pool
  >>> p = scaling_pool.make(num_train=100, num_val=50, seed=0)
  >>> p.x_train.shape, p.x_val.shape, sorted(set(p.group_names[g] for g in p.groups_train))
  ((100, 8), (50, 8), ['main', 'prototype', 'subgroup'])
  >>> int((p.groups_train == 2).sum())
  15
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xattr import _checks

__all__ = ["GROUPS", "ScalingPool", "make"]

GROUPS = ("prototype", "main", "subgroup")
PROTOTYPE_RADIUS = 0.6      # main-mode points within this distance of their class centre (along the rule)


class ScalingPool(NamedTuple):
  """Training pool and validation set of :func:`make`.

  Attributes:
    x_train, y_train: float32[n, main_dims + subgroup_dims] features and int32[n] labels (2 classes).
    groups_train: int32[n] index into ``group_names`` of each training point.
    x_val, y_val, groups_val: the same for the validation set.
    group_names: :data:`GROUPS`.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  groups_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  groups_val: np.ndarray
  group_names: tuple[str, ...] = GROUPS


def _draw(rng: np.random.Generator, n: int, subgroup_fraction: float, main_dims: int, subgroup_dims: int,
          separation: float, subgroup_separation: float, subgroup_scale: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  m = int(round(subgroup_fraction * n))
  p = n - m
  y = np.concatenate([np.arange(p) % 2, np.arange(m) % 2]).astype(np.int32)
  sign = (2.0 * y - 1.0)[:, None]
  x = np.zeros((n, main_dims + subgroup_dims), np.float64)
  rule = np.ones(main_dims) / np.sqrt(main_dims)
  x[:p, :main_dims] = sign[:p] * separation * rule + rng.normal(size=(p, main_dims))
  sub_rule = np.ones(subgroup_dims) / np.sqrt(subgroup_dims)
  x[p:, main_dims:] = subgroup_scale * (sign[p:] * subgroup_separation * sub_rule + rng.normal(size=(m, subgroup_dims)))
  along = (x[:p, :main_dims] @ rule) * sign[:p, 0]
  groups = np.concatenate([np.where(np.abs(along - separation) < PROTOTYPE_RADIUS, 0, 1), np.full(m, 2)])
  order = rng.permutation(n)
  return x[order].astype(np.float32), y[order], groups[order].astype(np.int32)


def make(num_train: int = 400, num_val: int = 2000, *, seed: int = 0, subgroup_fraction: float = 0.15,
         main_dims: int = 4, subgroup_dims: int = 4, separation: float = 1.2, subgroup_separation: float = 2.5,
         subgroup_scale: float = 0.2) -> ScalingPool:
  """Draws the pool and a validation set from the same mixture (seeded; points in random order).

  Args:
    num_train, num_val: pool and validation sizes.
    seed: the draw (pool: ``default_rng([seed, 0])``, validation: ``[seed, 1]``).
    subgroup_fraction: share of the rare subgroup in both sets, in [0, 1).
    main_dims, subgroup_dims: features of the main mode and of the subgroup (zero for the other's points).
    separation: distance of each main class centre from the origin along the main rule (noise std 1).
    subgroup_separation: the same for the subgroup's classes (before scaling).
    subgroup_scale: scale of the subgroup's features; small: the L2 penalty makes its points slow learners.

  Returns:
    :class:`ScalingPool`.
  """
  _checks.positive_int("num_train", num_train, minimum=4)
  _checks.positive_int("num_val", num_val, minimum=2)
  _checks.positive_int("main_dims", main_dims)
  _checks.positive_int("subgroup_dims", subgroup_dims)
  if not 0.0 <= subgroup_fraction < 1.0:
    raise ValueError(f"subgroup_fraction must lie in [0, 1), got {subgroup_fraction}.")
  if not (separation > 0 and subgroup_separation > 0 and subgroup_scale > 0):
    raise ValueError(f"separation, subgroup_separation and subgroup_scale must be > 0, got {separation}, "
                     f"{subgroup_separation}, {subgroup_scale}.")
  shape = (subgroup_fraction, main_dims, subgroup_dims, separation, subgroup_separation, subgroup_scale)
  train = _draw(np.random.default_rng([seed, 0]), num_train, *shape)
  val = _draw(np.random.default_rng([seed, 1]), num_val, *shape)
  return ScalingPool(*train, *val)
