"""Small symmetric positive (semi)definite solves written in plain XLA ops, safe to batch on every backend.

Why not ``jnp.linalg.solve`` / ``inv`` / ``cholesky``: on XLA:CPU (jaxlib 0.10) their LAPACK custom calls split a
batch over the intra-op thread pool and wait for the pieces (``ParallelBatchMap``) from inside a pool thread.
When two such calls run at once (a ``vmap`` over inputs puts several in one program) every pool thread can end
up waiting and the program never finishes: seen here as KernelSHAP vmapped over 100 inputs hanging forever in
``lapack_sgetrf_ffi`` on a 2-core machine. The estimators' systems are tiny (d x d, d = the number of players), so
Gauss-Jordan elimination in a ``fori_loop`` costs nothing next to the game evaluations, runs as ordinary fused
XLA ops (no custom call, no nested thread pool) and vectorizes under ``vmap`` like any other op.

No pivoting: the matrices here are symmetric positive definite when the problem is solvable (KernelSHAP's
A = E[z z^T], LIME's weighted Gram matrix plus ridge), where elimination in the natural order is as stable as
Cholesky. A singular or indefinite matrix gives inf/NaN or huge entries, which the callers' condition checks
turn into their usual "ill-conditioned" result.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import linalg
  >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
  >>> [round(v, 4) for v in linalg.solve_psd(a, jnp.array([1.0, 2.0])).tolist()]
  [0.0909, 0.6364]
  >>> (linalg.inv_psd(a) @ a).round(4).tolist()
  [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["solve_psd", "inv_psd"]


def solve_psd(a: jax.Array, b: jax.Array) -> jax.Array:
  """X with A X = B for a symmetric positive definite A [d, d] and B [d, r] (or [d]).

  Args:
    a: float[d, d], symmetric positive definite.
    b: float[d, r] or float[d].

  Returns:
    X of b's shape; inf/NaN entries when A is singular.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"a must be a square matrix [d, d], got shape {tuple(a.shape)}.")
  if b.shape[:1] != a.shape[:1] or b.ndim not in (1, 2):
    raise ValueError(f"b must have shape [{a.shape[0]}] or [{a.shape[0]}, r] to match a, got {tuple(b.shape)}.")
  vector = b.ndim == 1
  dtype = jnp.result_type(a, b)
  d = a.shape[0]
  m = jnp.concatenate([a.astype(dtype), (b[:, None] if vector else b).astype(dtype)], axis=1)

  def eliminate(i, m):
    row = jax.lax.dynamic_index_in_dim(m, i, axis=0, keepdims=False)
    row = row / row[i]
    col = jax.lax.dynamic_index_in_dim(m, i, axis=1, keepdims=False)
    m = m - col[:, None] * row[None, :]                # clears column i (row i becomes 0 ...)
    return jax.lax.dynamic_update_index_in_dim(m, row, i, axis=0)     # (... and is then the scaled pivot row)

  x = jax.lax.fori_loop(0, d, eliminate, m)[:, d:]
  return x[:, 0] if vector else x


def inv_psd(a: jax.Array) -> jax.Array:
  """A^-1 of a symmetric positive definite A [d, d] (see :func:`solve_psd`)."""
  a = jnp.asarray(a)
  return solve_psd(a, jnp.eye(a.shape[-1], dtype=a.dtype))
