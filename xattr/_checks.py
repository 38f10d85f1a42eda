"""Argument validation shared by the public functions.

Checks run outside ``jit`` on static Python values and on array *shapes* (which are static even under
``jit``/``vmap``), so they raise at trace time with a message that names the argument, what was expected and
what was received. Value checks (finiteness) only run on concrete arrays; under ``jit`` they are skipped and
non-finite values propagate as NaN.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  """Returns ``value`` as an int, raising if it is not an integer >= ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be a Python int >= {minimum} (a static value), got {value!r} "
                    f"of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def probability(name: str, value: Any) -> float:
  """Returns ``value`` as a float, raising unless 0 <= value <= 1."""
  value = float(value)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must lie in [0, 1], got {value}.")
  return value


def even_if_paired(num_samples: int, paired: bool, name: str = "num_samples") -> None:
  """Paired samplers emit (z, 1 - z) in adjacent rows, so they need an even count."""
  if paired and num_samples % 2:
    raise ValueError(f"{name} must be even when paired=True (samples come in complementary pairs), "
                     f"got {num_samples}.")


def mask_batch(name: str, mask: Any, num_players: int | None = None) -> None:
  """Raises unless ``mask`` is bool[n, num_players]."""
  shape = getattr(mask, "shape", None)
  dtype = getattr(mask, "dtype", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"{name} must be a 2-D array bool[num_masks, num_players], got shape {shape}.")
  if dtype != np.bool_:
    raise TypeError(f"{name} must have dtype bool (True = player kept), got {dtype}. "
                    f"Convert with mask.astype(bool).")
  if num_players is not None and shape[1] != num_players:
    raise ValueError(f"{name} must have {num_players} columns (num_players), got shape {tuple(shape)}.")


def is_concrete(*arrays: Any) -> bool:
  """True when every leaf is a concrete array (not a tracer inside jit/vmap/grad)."""
  leaves = jax.tree.leaves(arrays)
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def finite(name: str, value: Any, hint: str = "") -> None:
  """Raises if a concrete ``value`` holds NaN or inf; a no-op on tracers."""
  if not is_concrete(value):
    return
  arr = np.asarray(value)
  if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise FloatingPointError(f"{name} contains {bad} non-finite value(s) (NaN or inf). {hint}".rstrip())
