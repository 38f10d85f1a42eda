"""Batched inference on host arrays: one compiled program for any number of examples.

Example:
  >>> import numpy as np
  >>> from xattr.models.predict import predict_in_batches
  >>> predict_in_batches(lambda x: 2 * x, np.arange(5.0), batch_size=2).tolist()
  [0.0, 2.0, 4.0, 6.0, 8.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from xattr import _checks

__all__ = ["predict_in_batches"]


def predict_in_batches(fn: Callable[[jax.Array], jax.Array], x: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """``fn`` over ``x`` in fixed-size jitted batches (the last one padded), gathered on the host.

  Args:
    fn: ``float[b, ...] -> array[b, ...]``, traced once for the batch shape.
    x: the inputs, batched along the leading axis (at least one row).
    batch_size: rows per call; every call has this many (the last batch repeats its final row).

  Returns:
    numpy array: ``fn`` of every row of ``x``, in order.
  """
  batch_size = _checks.positive_int("batch_size", batch_size)
  if np.ndim(x) == 0 or len(x) == 0:
    raise ValueError(f"x must have a non-empty leading (batch) axis, got shape {np.shape(x)}.")
  fn = jax.jit(fn)
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start:start + batch_size]
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
    out.append(np.asarray(fn(padded))[:len(chunk)])
  return np.concatenate(out)
