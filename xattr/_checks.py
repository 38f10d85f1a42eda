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


class ArgumentTypeError(TypeError, ValueError):
  """A wrong argument type; also a ValueError, so callers catching bad values catch it too."""


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  """Returns ``value`` as an int, raising if it is not an integer >= ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    raise ArgumentTypeError(f"{name} must be {wanted}, got {value!r} of type {type(value).__name__} ({name} must "
                            f"be a Python int >= {minimum}, a static value).")
  if value < minimum:
    raise ValueError(f"{name} must be a positive int, got {value}." if minimum == 1 else
                     f"{name} must be >= {minimum}, got {value}.")
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


def prng_key(name: str, key: Any) -> None:
  """Raises unless ``key`` is a PRNG key: a typed key (``jax.random.key``) or a legacy uint32[2] key.

  Works on tracers (it reads only dtype and shape), so it also catches swapped arguments under ``jit``.
  """
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
    return
  if dtype == np.uint32 and shape == (2,):                     # legacy jax.random.PRNGKey
    return
  raise ArgumentTypeError(f"{name} must be a PRNG key, e.g. jax.random.key(0) (or a legacy uint32[2] "
                          f"jax.random.PRNGKey), got {_describe(key)}. Check the argument order.")


def _describe(value: Any) -> str:
  if hasattr(value, "dtype") and hasattr(value, "shape"):
    return f"an array of dtype {value.dtype} and shape {tuple(value.shape)}"
  return f"{value!r} of type {type(value).__name__}"
