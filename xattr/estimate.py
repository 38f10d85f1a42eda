"""The result type shared by every sampling-based estimator."""

from __future__ import annotations

from typing import NamedTuple

import jax


class Estimate(NamedTuple):
  """A stochastic estimate of per-player values with its uncertainty.

  A pytree, so it passes through ``jit``/``vmap`` and can be stacked over inputs.

  Attributes:
    values: float[d] or float[d, k] (k outputs of a vector-valued game).
    std: same shape; estimated standard deviation of ``values`` across random keys.
    num_evals: int32 scalar; game evaluations (coalitions) spent, grand and null included.
    converged: bool scalar; whether ``max(std) / (max(values) - min(values)) < threshold``.
  """

  values: jax.Array
  std: jax.Array
  num_evals: jax.Array
  converged: jax.Array
