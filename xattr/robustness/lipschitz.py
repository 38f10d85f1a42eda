"""Lipschitz constants (2-norm to 2-norm) of the models whose attributions are bounded: exact, upper, lower.

* Linear f(x) = x W + b: L = sigma_max(W) exactly (one output: ||w||_2). Logistic sigmoid(x w + b): L = ||w||_2 / 4
  exactly (the sigmoid's slope peaks at 1/4, on the decision boundary, which every line through it crosses).
* MLP x -> W_L rho(... rho(x W_1 + b_1) ...) + b_L with a rho-Lipschitz activation: L <= rho^(L-1) prod_l
  sigma_max(W_l) (composition of Lipschitz maps). For one output c, the last factor is ||W_L[:, c]||_2.
  :func:`spectral_norm` computes sigma_max by power iteration (jittable; converges from below, so the
  estimate can only under-shoot) or exactly by SVD (``method='svd'``, the default of :func:`mlp_upper`, so the
  upper bound is certified up to float round-off).
* Any model: L >= ||grad f(x)||_2 at every point x; :func:`gradient_lower` maximises it over data points and a few
  gradient-ascent steps from them (jittable).
* Outputs: the softmax probability of class c has gradient p_c (e_c - p) w.r.t. the logits, of norm
  p_c sqrt((1 - p_c)^2 + sum_{j != c} p_j^2) <= sqrt(2) p_c (1 - p_c) <= sqrt(2) / 4: :data:`PROBABILITY_FACTOR`.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr.robustness import lipschitz
  >>> w = jnp.array([[3.0, 0.0], [0.0, 4.0]])
  >>> round(float(lipschitz.linear(w)), 4), round(float(lipschitz.logistic(jnp.array([3.0, 4.0]))), 4)
  (4.0, 1.25)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATION_LIPSCHITZ", "PROBABILITY_FACTOR", "spectral_norm", "linear", "logistic", "mlp_upper",
           "gradient_norms", "gradient_lower"]

ACTIVATION_LIPSCHITZ = {"relu": 1.0, "tanh": 1.0, "elu": 1.0, "gelu": 1.129, "silu": 1.1}
"""sup |rho'| of the activations of :data:`xattr.models.ACTIVATIONS` (gelu: 1.1289, silu: 1.0998, rounded up)."""
PROBABILITY_FACTOR = math.sqrt(2.0) / 4.0
"""Lipschitz constant of a softmax probability as a function of the logits (module docstring)."""


def spectral_norm(w: jax.Array, *, method: str = "power", num_iters: int = 100) -> jax.Array:
  """sigma_max(w) of a matrix: power iteration on w^T w from a fixed start (jittable), or exact by SVD.

  Example:
    >>> w = jnp.diag(jnp.array([1.0, 5.0, 2.0]))
    >>> round(float(spectral_norm(w)), 4), round(float(spectral_norm(w, method="svd")), 4)
    (5.0, 5.0)
  """
  w = jnp.asarray(w, jnp.float32)
  if w.ndim != 2:
    raise ValueError(f"w must be a 2-D matrix, got shape {tuple(w.shape)}.")
  if method == "svd":
    return jnp.linalg.svd(w, compute_uv=False)[0]
  if method != "power":
    raise ValueError(f"method must be 'power' or 'svd', got {method!r}.")
  v0 = jnp.ones(w.shape[1]) + 0.01 * jnp.arange(w.shape[1])

  def step(v, _):
    v = w.T @ (w @ v)
    return v / jnp.maximum(jnp.linalg.norm(v), 1e-30), None

  v, _ = jax.lax.scan(step, v0 / jnp.linalg.norm(v0), None, length=num_iters)
  return jnp.linalg.norm(w @ v)


def linear(w: jax.Array) -> jax.Array:
  """Exact Lipschitz constant of x -> x w + b: sigma_max(w) (a vector w: ||w||_2)."""
  w = jnp.asarray(w, jnp.float32)
  return jnp.linalg.norm(w) if w.ndim == 1 else spectral_norm(w, method="svd")


def logistic(w: jax.Array) -> jax.Array:
  """Exact Lipschitz constant of x -> sigmoid(x w + b): ||w||_2 / 4."""
  return jnp.linalg.norm(jnp.asarray(w, jnp.float32)) / 4.0


def mlp_upper(kernels: Sequence[jax.Array], *, activation: str = "relu", output: int | None = None,
              method: str = "svd") -> jax.Array:
  """Upper bound rho^(L-1) prod_l sigma_max(W_l) on an MLP's Lipschitz constant (module docstring).

  Args:
    kernels: the layers' kernels [in, out] (x @ W convention), first to last.
    activation: a name in :data:`ACTIVATION_LIPSCHITZ` (or a float: rho itself).
    output: bound one output's Lipschitz constant (last factor ||W_L[:, output]||); None: the vector output's.
    method: 'svd' (certified) or 'power' (power iteration; may under-shoot before it converges).

  Example:
    >>> k = [jnp.eye(2) * 3.0, jnp.array([[1.0], [1.0]])]
    >>> round(float(mlp_upper(k)), 4)
    4.2426
  """
  rho = activation if isinstance(activation, (int, float)) else ACTIVATION_LIPSCHITZ.get(activation)
  if rho is None:
    raise ValueError(f"activation must be a float or one of {sorted(ACTIVATION_LIPSCHITZ)}, got {activation!r}.")
  if not kernels:
    raise ValueError("kernels must hold at least one layer kernel.")
  *hidden, last = [jnp.asarray(k, jnp.float32) for k in kernels]
  factor = jnp.linalg.norm(last[:, output]) if output is not None else spectral_norm(last, method=method)
  for k in hidden:
    factor = factor * spectral_norm(k, method=method) * rho
  return factor


def gradient_norms(fn: Callable[[jax.Array], jax.Array], points: jax.Array) -> jax.Array:
  """||grad f(x)||_2 float[n] at each row of ``points``, for a scalar function ``fn: float[b, d] -> float[b]``.

  Example:
    >>> gradient_norms(lambda x: x @ jnp.array([3.0, 4.0]), jnp.zeros((2, 2))).tolist()
    [5.0, 5.0]
  """
  grad = jax.vmap(jax.grad(lambda x: fn(x[None])[0]))
  return jnp.linalg.norm(grad(jnp.asarray(points, jnp.float32)), axis=-1)


def gradient_lower(fn: Callable[[jax.Array], jax.Array], points: jax.Array, *, num_steps: int = 10,
                   step_size: float = 0.1) -> jax.Array:
  """A lower bound on the Lipschitz constant: max ||grad f|| over ``points`` and ``num_steps`` ascent steps on it.

  Every value is the gradient norm at some point, so the result is <= L whatever the ascent does (for ReLU
  networks the gradient is piecewise constant and the ascent mostly stays at the data's maximum).

  Example:
    >>> f = lambda x: jnp.sin(x[:, 0])
    >>> bool(gradient_lower(f, jnp.array([[1.0], [0.5]]), num_steps=50) > 0.99)
    True
  """
  norms = lambda x: gradient_norms(fn, x)
  ascent = jax.vmap(jax.grad(lambda x: jnp.sum(jax.grad(lambda y: fn(y[None])[0])(x) ** 2)))

  def step(x, _):
    g = ascent(x)
    x = x + step_size * g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    return x, norms(x).max()

  x0 = jnp.asarray(points, jnp.float32)
  _, best = jax.lax.scan(step, x0, None, length=num_steps)
  return jnp.maximum(norms(x0).max(), best.max() if num_steps else 0.0)
