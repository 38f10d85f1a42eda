"""Amortized explanation objectives: pure loss functions for training explainers inside any JAX step.

An amortized explainer ``phi(x; theta) -> float[d, k]`` is trained once and then explains a new input with a
single forward pass. Three objectives, all plain functions of arrays (so they fit any training step, including
``xattr.training.train``):

  * :func:`fastshap_loss` (FastSHAP, Jethani et al. 2022): the weighted least squares characterisation of the
    Shapley value. With coalitions ``z`` drawn from the Shapley kernel (paired), minimise
    ``d * E_z[(null + z^T phi - v(z))^2]`` over ``phi``; after the additive efficient normalization
    ``phi + (grand - null - 1^T phi) / d`` the minimiser is exactly the Shapley value, for every class at once.
  * :func:`regression_loss` (stochastic amortization, Covert et al. 2024): ``d * MSE`` onto noisy but unbiased
    labels (e.g. KernelSHAP or permutation estimates with few samples). Unbiased noise leaves the optimum unchanged;
    it only slows SGD down.
  * :func:`surrogate_kl_loss`: trains a surrogate that accepts a mask to match the original model's prediction
    under removal, ``KL(p_model(x) || p_surrogate(x, z))``; :func:`surrogate_mse_loss` for regression models.

Example (a linear "explainer" recovers an additive game's weights):
  >>> import jax, jax.numpy as jnp
  >>> from xattr import amortize, masks
  >>> w = jnp.array([1.0, -2.0, 0.5])
  >>> z = masks.shapley_kernel(jax.random.key(0), 3, 64)[None]       # [batch=1, samples, d]
  >>> values = (z @ w)[..., None]                                    # v(z) for one class, null = 0
  >>> null, grand = jnp.zeros(1), w.sum()[None, None]
  >>> loss = lambda phi: amortize.fastshap_loss(phi, z, values, null, grand)
  >>> phi = jnp.zeros((1, 3, 1))
  >>> for _ in range(300):
  ...   phi = phi - 0.5 * jax.grad(loss)(phi)
  >>> jnp.round(amortize.efficient_normalize(phi, grand, null)[0, :, 0], 3).tolist()  # raw phi: up to a shift
  [1.0, -2.0, 0.5]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xattr import shapley

__all__ = ["efficient_normalize", "fastshap_loss", "regression_loss", "surrogate_kl_loss", "surrogate_mse_loss"]


def _check_rank(name: str, value: jax.Array, rank: int, shape_hint: str) -> None:
  if value.ndim != rank:
    raise ValueError(f"{name} must be {shape_hint} (rank {rank}), got shape {tuple(value.shape)}.")


def efficient_normalize(phi: jax.Array, grand: jax.Array, null: jax.Array) -> jax.Array:
  """Additive efficient normalization of a batch of explanations, so each sums to ``grand - null`` per class.

  Args:
    phi: float[B, d, k] raw explainer outputs.
    grand: float[B, k], v(1) per input.
    null: float[k] or float[B, k], v(0).

  Returns:
    float[B, d, k].

  Example:
    >>> efficient_normalize(jnp.zeros((1, 2, 1)), jnp.ones((1, 1)), jnp.zeros(1))[0, :, 0].tolist()
    [0.5, 0.5]
  """
  _check_rank("phi", phi, 3, "float[batch, players, classes]")
  null = jnp.broadcast_to(null, grand.shape)
  return shapley.normalize_efficient(phi, grand, null)


def fastshap_loss(phi: jax.Array, masks: jax.Array, values: jax.Array, null: jax.Array,
                  grand: jax.Array | None = None, *, normalize: bool = True,
                  efficiency_weight: float = 0.0) -> jax.Array:
  """FastSHAP objective ``d * mean_{x, z, class} (null + z^T phi(x) - v_x(z))^2``.

  Args:
    phi: float[B, d, k] explainer outputs for B inputs.
    masks: bool[B, m, d] coalitions per input (Shapley-kernel samples, paired: see
      :func:`xattr.masks.shapley_kernel`).
    values: float[B, m, k] game values v_x(z) of those coalitions (e.g. surrogate class probabilities).
    null: float[k] or float[B, k], v(0).
    grand: float[B, k], v(1); needed when ``normalize`` or ``efficiency_weight`` is used.
    normalize: apply :func:`efficient_normalize` first (the reference default): the optimum is then exactly
      the Shapley value and efficiency holds by construction.
    efficiency_weight: weight of an optional penalty ``mean (1^T phi - (grand - null))^2`` (for unnormalized
      training).

  Returns:
    scalar loss.
  """
  _check_rank("phi", phi, 3, "float[batch, players, classes]")
  _check_rank("masks", masks, 3, "bool[batch, samples, players]")
  _check_rank("values", values, 3, "float[batch, samples, classes]")
  b, d, k = phi.shape
  if masks.shape[0] != b or masks.shape[2] != d:
    raise ValueError(f"masks must be [batch={b}, samples, players={d}] to match phi, got {tuple(masks.shape)}.")
  if values.shape != (b, masks.shape[1], k):
    raise ValueError(f"values must be [batch, samples, classes] = {(b, masks.shape[1], k)}, "
                     f"got {tuple(values.shape)}.")
  if (normalize or efficiency_weight) and grand is None:
    raise ValueError("grand (v(1) per input, float[batch, classes]) is required when normalize=True or "
                     "efficiency_weight > 0.")
  null = jnp.broadcast_to(null, (b, k))
  if normalize:
    phi = efficient_normalize(phi, grand, null)
  pred = null[:, None, :] + jnp.einsum("bmd,bdk->bmk", masks.astype(phi.dtype), phi)
  loss = d * jnp.mean((pred - values) ** 2)
  if efficiency_weight:
    loss = loss + efficiency_weight * jnp.mean((phi.sum(1) - (grand - null)) ** 2)
  return loss


def regression_loss(phi: jax.Array, labels: jax.Array, *, scale: float | jax.Array = 1.0) -> jax.Array:
  """Stochastic-amortization objective ``d * mean ((phi - labels) / scale)^2`` onto (noisy) attribution labels.

  Args:
    phi: float[B, d] or float[B, d, k] explainer outputs.
    labels: same shape: precomputed or freshly sampled noisy estimates (unbiased for the target values).
    scale: target scale (a scalar or broadcastable array, e.g. the labels' std) so that learning rates carry
      over between datasets.

  Example:
    >>> float(regression_loss(jnp.ones((2, 4)), jnp.zeros((2, 4))))
    4.0
  """
  if phi.shape != labels.shape:
    raise ValueError(f"labels must have the explainer's output shape {tuple(phi.shape)}, got {tuple(labels.shape)}.")
  if phi.ndim not in (2, 3):
    raise ValueError(f"phi must be float[batch, players] or float[batch, players, classes], got {tuple(phi.shape)}.")
  return phi.shape[1] * jnp.mean(((phi - labels) / scale) ** 2)


def surrogate_kl_loss(surrogate_logits: jax.Array, target_probs: jax.Array) -> jax.Array:
  """Mean ``KL(target || softmax(surrogate_logits))`` over all leading axes.

  Args:
    surrogate_logits: float[..., k] surrogate outputs on masked inputs (e.g. [batch, masks, k]).
    target_probs: float[..., k] the original model's class probabilities on the full inputs, broadcastable
      (e.g. [batch, 1, k]).

  Example:
    >>> p = jnp.array([0.25, 0.75])
    >>> abs(round(float(surrogate_kl_loss(jnp.log(p), p)), 6))
    0.0
  """
  log_q = jax.nn.log_softmax(surrogate_logits, axis=-1)
  target_probs = jnp.broadcast_to(target_probs, log_q.shape)
  log_p = jnp.log(jnp.clip(target_probs, 1e-12, 1.0))
  return jnp.mean(jnp.sum(target_probs * (log_p - log_q), axis=-1))


def surrogate_mse_loss(surrogate_outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error between a regression surrogate's masked outputs and the model's full-input outputs.

  Example:
    >>> float(surrogate_mse_loss(jnp.ones((2, 3)), jnp.zeros((2, 1))))
    1.0
  """
  return jnp.mean((surrogate_outputs - jnp.broadcast_to(targets, surrogate_outputs.shape)) ** 2)
