"""Error-minimising perturbations: the bi-level min-min of "unlearnable examples", class-wise or per sample.

``min_delta min_theta E[loss(f_theta(clip(x + delta_row)), y)]`` over ``||delta_row|| <= budget``: alternately
(one *round*) train a small surrogate network for ``train_steps`` minibatch steps on the perturbed images, then
take ``delta_steps`` projected signed-gradient steps (normalised-gradient steps for a pure l_2 budget) that
*decrease* the surrogate's loss. Rows are classes (class-wise universal perturbations, one per class) or images
(``per_sample=True``). Rounds stop early once the surrogate's accuracy on the perturbed data reaches
``stop_accuracy``: the perturbations are then an easy, class-predictive signal.

Every phase is one jitted ``lax.scan`` over minibatches drawn from the key, so the result depends only on
``key`` and the settings.

Example:
  >>> import jax, numpy as np
  >>> from flax import nnx
  >>> from xattr import shortcuts
  >>> rng = np.random.default_rng(0)
  >>> x, y = rng.uniform(size=(64, 8, 8, 1)).astype(np.float32), np.arange(64) % 4   # no signal in x
  >>> net = shortcuts.MLPNet((8, 8, 1), 4, (32,), rngs=nnx.Rngs(0))
  >>> sc = shortcuts.error_minimizing(jax.random.key(0), x, y, 4, surrogate=net, linf=0.1, rounds=5,
  ...                                 train_steps=10, delta_steps=10, batch_size=32)
  >>> sc.delta.shape, bool(abs(sc.delta).max() <= 0.1 + 1e-6)
  ((4, 8, 8, 1), True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks
from xattr.shortcuts.budget import Budget, Shortcut
from xattr.shortcuts.generators import project

__all__ = ["error_minimizing", "Settings"]


class Settings(NamedTuple):
  """Static settings of the min-min (hashable: they key the compiled phases)."""

  linf: float | None
  l2: float | None
  step_size: float
  train_steps: int
  delta_steps: int
  batch_size: int
  learning_rate: float


def _loss(apply: Callable, params: Any, images: jax.Array, delta_rows: jax.Array, labels: jax.Array) -> jax.Array:
  logits = apply(params, jnp.clip(images + delta_rows, 0.0, 1.0))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _batches(key: jax.Array, n: int, steps: int, batch_size: int) -> jax.Array:
  """int32[steps, batch_size]: rows of ``steps`` minibatches, epochs of a key-seeded shuffle."""
  epochs = -(-steps * batch_size // n)
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
  return perms.reshape(-1)[:steps * batch_size].reshape(steps, batch_size)


@functools.lru_cache(maxsize=16)
def _round_fn(apply: Callable, tx: optax.GradientTransformation, s: Settings) -> Callable:
  """One jitted min-min round: ``train_steps`` surrogate updates, then ``delta_steps`` perturbation updates."""

  def train_step(carry, idx, images, rows, labels):
    params, opt_state, delta = carry
    grads = jax.grad(_loss, argnums=1)(apply, params, images[idx], delta[rows[idx]], labels[idx])
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, delta), None

  def delta_step(carry, idx, images, rows, labels):
    params, opt_state, delta = carry
    g = jax.grad(lambda d: _loss(apply, params, images[idx], d[rows[idx]], labels[idx]))(delta)
    if s.linf is not None:
      step = jnp.sign(g)
    else:
      norms = jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, 1)).reshape((-1,) + (1,) * (g.ndim - 1))
      step = g / jnp.maximum(norms, 1e-12)
    delta = project(delta - s.step_size * step, linf=s.linf, l2=s.l2)
    return (params, opt_state, delta), None

  @jax.jit
  def run(carry, key, images, rows, labels):
    k_train, k_delta = jax.random.split(key)
    n = images.shape[0]
    bind = lambda f: functools.partial(f, images=images, rows=rows, labels=labels)
    train_batches = _batches(k_train, n, s.train_steps, s.batch_size)
    delta_batches = _batches(k_delta, n, s.delta_steps, s.batch_size)
    carry, _ = jax.lax.scan(lambda c, i: bind(train_step)(c, i), carry, train_batches)
    carry, _ = jax.lax.scan(lambda c, i: bind(delta_step)(c, i), carry, delta_batches)
    return carry

  return run


@functools.lru_cache(maxsize=16)
def _accuracy_fn(apply: Callable) -> Callable:
  @jax.jit
  def accuracy(params, images, delta_rows, labels):
    logits = apply(params, jnp.clip(images + delta_rows, 0.0, 1.0))
    return jnp.mean(jnp.argmax(logits, -1) == labels)
  return accuracy


def _check_data(images: Any, labels: Any, num_classes: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  images, labels = np.asarray(images, np.float32), np.asarray(labels)
  if images.ndim != 4 or len(labels) != len(images):
    raise ValueError(f"images must be [N, H, W, C] and labels [N], got {images.shape} and {labels.shape}.")
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}].")
  if not 1 <= batch_size <= len(images):
    raise ValueError(f"batch_size must lie in [1, {len(images)}] (the number of images), got {batch_size}.")
  return images, labels.astype(np.int32)


def error_minimizing(key: jax.Array, images: Any, labels: Any, num_classes: int, *, surrogate: nnx.Module,
                     linf: float | None = 8 / 255, l2: float | None = None, per_sample: bool = False,
                     rounds: int = 10, train_steps: int = 20, delta_steps: int = 20, step_size: float | None = None,
                     batch_size: int = 128, learning_rate: float = 1e-3, stop_accuracy: float = 0.99) -> Shortcut:
  """Class-wise (or per-sample) error-minimising perturbations against a surrogate trained on the perturbed data.

  Args:
    key: PRNG key (minibatch orders of both phases).
    images: float ``[N, H, W, C]`` in [0, 1], the images to be released.
    labels: int ``[N]``.
    num_classes: K.
    surrogate: an NNX module ``images -> logits`` (not modified: its initial parameters are copied).
    linf, l2: the budget (at least one set); steps are signed for l_inf, normalised for a pure l_2 budget.
    per_sample: one perturbation per image (rows follow ``images``) instead of one per class.
    rounds: at most this many (train, perturb) rounds.
    train_steps, delta_steps: minibatch steps per round of each phase.
    step_size: perturbation step (default ``linf / 4``, or ``l2 / 4``).
    batch_size, learning_rate: of both phases (Adam for the surrogate).
    stop_accuracy: stop once the surrogate classifies this share of the perturbed images correctly.

  Returns:
    An additive :class:`Shortcut` named ``'error_min_classwise'`` or ``'error_min_samplewise'``.
  """
  if linf is None and l2 is None:
    raise ValueError("error_minimizing needs a budget: linf or l2 must be set, got both None.")
  k = _checks.positive_int("num_classes", num_classes)
  images, labels = _check_data(images, labels, k, int(batch_size))
  rows = np.arange(len(images), dtype=np.int32) if per_sample else labels
  settings = Settings(None if linf is None else float(linf), None if l2 is None else float(l2),
                      float(step_size or (linf if linf is not None else l2) / 4), int(train_steps),
                      int(delta_steps), int(batch_size), float(learning_rate))
  graphdef, params = nnx.split(surrogate)
  apply = _apply_fn(graphdef)
  tx = optax.adam(settings.learning_rate)
  params = jax.tree.map(jnp.copy, params)
  carry = (params, tx.init(params), jnp.zeros(((len(images) if per_sample else k), *images.shape[1:]), jnp.float32))
  run, accuracy = _round_fn(apply, tx, settings), _accuracy_fn(apply)
  data = (jnp.asarray(images), jnp.asarray(rows), jnp.asarray(labels))
  for r, round_key in enumerate(jax.random.split(key, _checks.positive_int("rounds", rounds))):
    carry = run(carry, round_key, *data)
    acc = float(accuracy(carry[0], data[0], carry[2][data[1]], data[2]))
    if acc >= stop_accuracy:
      break
  name = "error_min_samplewise" if per_sample else "error_min_classwise"
  return Shortcut.additive(name, carry[2], Budget(linf=settings.linf, l2=settings.l2), per_sample=per_sample)


@functools.lru_cache(maxsize=16)
def _apply_fn(graphdef: nnx.GraphDef) -> Callable:
  def apply(params, x):
    return nnx.merge(graphdef, params)(x)
  return apply
