"""xattr: removal-based explainability and feature/data selection in JAX.

Pure-functional cores (coalition samplers, games, Shapley/Banzhaf estimators, multi-device helpers) usable from
any JAX code under ``jit``, ``vmap`` and ``grad``.

Submodules are imported on first use (``xattr.shapley``, ``from xattr import outputs``), so ``import xattr`` stays
light: checkpointing (Orbax), the attribution store (TensorStore) and TFDS load only when a job needs them.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import xattr
  >>> v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 3.0])
  >>> xattr.shapley.exact(v, 3).tolist()
  [1.0, 2.0, 3.0]
"""

import importlib
import importlib.util
from typing import Any

from xattr.estimate import Estimate

__version__ = "0.1.0"

_SUBMODULES = ("amortization", "amortize", "artifacts", "attributions", "banzhaf", "chunked", "data", "evaluation",
               "games", "jobs", "lime", "locality", "loo", "maskembed", "masks", "methods", "models", "noisy_labels",
               "outputs", "parallel", "plots", "reports", "selection", "shapley", "tabular", "training", "valuation",
               "vit_shapley")

__all__ = ["Estimate", *_SUBMODULES]


def __getattr__(name: str) -> Any:
  if name in _SUBMODULES or (not name.startswith("_") and importlib.util.find_spec(f"xattr.{name}") is not None):
    module = importlib.import_module(f"xattr.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'xattr' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_SUBMODULES))
