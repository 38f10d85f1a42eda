"""A small Flax NNX multilayer perceptron and the functional view the cores use.

The cores (games, estimators) take plain functions, never modules. :func:`functional` splits a module once into
``(state, apply)`` with ``apply(state, x) = nnx.merge(graphdef, state)(x)``: inside ``jax.jit`` the merge is
traced once, so hot loops pay no Python graph traversal (the pattern of Flax's performance guide).
:func:`model_fn` closes over that state to give the ``x_batch -> outputs`` function a game wants.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from xattr.models import MLP, model_fn
  >>> net = MLP(4, (8, 8), 3, rngs=nnx.Rngs(0))
  >>> f = model_fn(net, postprocess="softmax")
  >>> jax.jit(f)(jnp.ones((5, 4))).shape
  (5, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ACTIVATIONS", "POSTPROCESS", "MLP", "Functional", "functional", "model_fn", "resolve_postprocess", "rowwise"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
}

POSTPROCESS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "softmax": lambda y: jax.nn.softmax(y, axis=-1),
    "sigmoid": jax.nn.sigmoid,
    "squeeze": lambda y: y[..., 0],
}


def resolve_postprocess(postprocess: str | Callable[[jax.Array], jax.Array] | None
                        ) -> Callable[[jax.Array], jax.Array]:
  """The output transform named by ``postprocess``: a name in :data:`POSTPROCESS`, a callable, or None (identity).

  Example:
    >>> float(resolve_postprocess("sigmoid")(jnp.array(0.0))), resolve_postprocess(None)(3)
    (0.5, 3)
  """
  if isinstance(postprocess, str):
    if postprocess not in POSTPROCESS:
      raise ValueError(f"postprocess must be None, a callable or one of {sorted(POSTPROCESS)}, "
                       f"got {postprocess!r}.")
    postprocess = POSTPROCESS[postprocess]
  return postprocess or (lambda y: y)


def _activation(activation: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
  if callable(activation):
    return activation
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be a callable or one of {sorted(ACTIVATIONS)}, got {activation!r}.")
  return ACTIVATIONS[activation]


class MLP(nnx.Module):
  """Dense layers with a nonlinearity between them; the last layer is linear (logits / regression output).

  Args:
    in_features: input width d.
    hidden_sizes: widths of the hidden layers, e.g. (64, 64); empty for a linear model.
    out_features: output width (number of classes, or 1 for regression).
    activation: a name in :data:`ACTIVATIONS` or a callable.
    rngs: ``nnx.Rngs`` for the initialization.
  """

  def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int, *,
               activation: str | Callable[[jax.Array], jax.Array] = "relu", rngs: nnx.Rngs):
    sizes = [int(in_features), *map(int, hidden_sizes), int(out_features)]
    if min(sizes) < 1:
      raise ValueError(f"layer sizes must be positive, got in_features={in_features}, "
                       f"hidden_sizes={tuple(hidden_sizes)}, out_features={out_features}.")
    self.activation = _activation(activation)
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    *hidden, last = self.layers
    for layer in hidden:
      x = self.activation(layer(x))
    return last(x)


class Functional(NamedTuple):
  """A module as pure data plus a pure function: ``apply(state, x) == module(x)``."""

  state: nnx.State
  apply: Callable[[nnx.State, jax.Array], jax.Array]


def functional(model: nnx.Module) -> Functional:
  """Splits ``model`` into ``(state pytree, apply fn)`` for use inside ``jit``/``vmap``/``grad``.

  Example:
    >>> net = MLP(2, (), 1, rngs=nnx.Rngs(0))
    >>> state, apply = functional(net)
    >>> bool(jnp.allclose(apply(state, jnp.ones((1, 2))), net(jnp.ones((1, 2)))))
    True
  """
  graphdef, state = nnx.split(model)

  def apply(state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)

  return Functional(state, apply)


def rowwise(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
  """Marks a row-by-row function ``float[b, ...] -> float[b, ...]`` so that ``vmap`` folds into its rows.

  ``jax.vmap`` of a batched model turns its matmuls into 3-D ``dot_general`` s, which XLA:CPU runs several
  times slower than the same work as one 2-D matmul (about 4-5x for an MLP over vmapped explanation games, measured
  with JAX 0.10). Under ``vmap``, the wrapped function instead reshapes [B, b, ...] to [B * b, ...], calls itself
  once and reshapes back (recursively, so nested vmaps fold too). Only valid if each output row depends on its
  input row alone (no batch norm in training mode, no cross-row attention).

  Forward-mode only: ``jax.custom_batching.custom_vmap`` does not support reverse-mode differentiation, so do not
  take ``jax.grad`` through the wrapped function; use the unwrapped one for training or gradient explanations.

  Example:
    >>> w = jnp.arange(6.0).reshape(3, 2)
    >>> f = rowwise(lambda x: jnp.tanh(x @ w))
    >>> x = jnp.ones((4, 5, 3))
    >>> bool(jnp.allclose(jax.vmap(f)(x), jnp.tanh(x @ w)))
    True
  """

  @jax.custom_batching.custom_vmap
  def wrapped(x: jax.Array) -> jax.Array:
    return fn(x)

  @wrapped.def_vmap
  def _fold(axis_size: int, in_batched: list[bool], x: jax.Array):
    del in_batched                     # a single argument, batched (else vmap would not call the rule)
    out = wrapped(x.reshape(axis_size * x.shape[1], *x.shape[2:]))
    return out.reshape(axis_size, x.shape[1], *out.shape[1:]), True

  return wrapped


def model_fn(model: nnx.Module, *, postprocess: str | Callable[[jax.Array], jax.Array] | None = None,
             fold_vmap: bool = False) -> Callable[[jax.Array], jax.Array]:
  """A pure ``x_batch -> outputs`` closure over a snapshot of ``model``'s state.

  Later changes to ``model`` do not affect the returned function (the state is captured now).

  Args:
    model: an NNX module mapping float[b, ...] to float[b, k], row by row.
    postprocess: None, 'softmax' (class probabilities), 'sigmoid', 'squeeze' ([b, 1] -> [b]) or a callable.
    fold_vmap: wrap the function with :func:`rowwise` (fast ``vmap`` over inputs on CPU; no reverse-mode grad).
  """
  state, apply = functional(model)
  post: Callable[[Any], Any] = resolve_postprocess(postprocess)
  fn = lambda x: post(apply(state, x))
  return rowwise(fn) if fold_vmap else fn
