"""xattr: removal-based explainability and feature/data selection in JAX.

Pure-functional cores (coalition samplers, games, Shapley/Banzhaf estimators, multi-device helpers) usable from
any JAX code under ``jit``, ``vmap`` and ``grad``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import xattr
  >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 3.0])
  >>> xattr.shapley.exact(v, 3).tolist()
  [1.0, 2.0, 3.0]
"""

from xattr import (amortize, attributions, banzhaf, chunked, evaluation, games, lime, locality, loo, masks,
                   noisy_labels, outputs, parallel, selection, shapley, valuation)
from xattr.estimate import Estimate

__all__ = ["Estimate", "amortize", "attributions", "banzhaf", "chunked", "evaluation", "games", "lime", "locality", "loo",
           "masks", "noisy_labels", "outputs", "parallel", "selection", "shapley", "valuation"]
__version__ = "0.1.0"
