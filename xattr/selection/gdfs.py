"""GDFS: greedy dynamic feature selection with a policy network trained through a Concrete relaxation.

Greedy CMI selection picks, at every step, the feature with the largest conditional mutual information with the
label given what has been observed. GDFS learns this choice directly: a policy network ``pi(x_S)`` scores every
player, and the policy is trained so that the *predictor's loss after adding the chosen player* is small, which
(for a Bayes-optimal predictor) is what the CMI-maximizing choice minimizes in expectation. Training a discrete
choice by gradient needs a relaxation. For k = 1..K, with the current hard selection m (K steps per batch,
one optimizer step on the average of the K losses):

  * logits = pi(x_S), with already selected players excluded (a large negative logit);
  * soft = Concrete(logits / gamma, temperature tau) = softmax((logits / gamma + g) / tau), g ~ Gumbel
    (gamma = 0.2 sharpens the policy's logits, as in the original method);
  * loss_k = CE(f(x_{max(m, soft)}), y): the predictor sees the selection plus the relaxed new player, and the
    gradient reaches the policy through ``soft``;
  * the hard selection grows by argmax(logits / gamma + g) with the same noise g (the zero-temperature limit of
    the soft sample, so the path follows the relaxation), excluded players never chosen, under stop_gradient.

The predictor (pretrained on uniform-cardinality masks) is fine-tuned jointly. The temperature decreases over
stages (``geomspace(1.0, 0.1, 5)``), each stage a call of the shared training loop with a fresh optimizer; after
every stage the model is scored at zero temperature (deterministic argmax selection by the greedy rollout on
validation data, predictor loss averaged over 1..K selections) and the best one is kept.

At inference, the policy is a ``score_fn`` for :func:`xattr.selection.rollout.greedy` (argmax of the logits over
unselected players).

Example:
  >>> import jax.numpy as jnp
  >>> from xattr.selection import gdfs
  >>> logits = jnp.array([[3.0, 1.0, 2.0]])
  >>> gdfs.hard_select(logits, jnp.array([[True, False, False]])).tolist()    # 0 is taken: next best is 2
  [2]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr.selection import predictor as predictor_lib
from xattr.selection import rollout as rollout_lib

__all__ = ["GAMMA", "TEMPERATURES", "EXCLUDED", "exclude", "concrete", "hard_select", "loss", "predict_fn",
           "score_fn", "validation_loss", "GDFSResult", "train"]

GAMMA = 0.2
TEMPERATURES = tuple(float(t) for t in np.geomspace(1.0, 0.1, 5))
# A finite "minus infinity": softmax gives it exactly zero weight, and unlike -inf it never produces NaN
# gradients through where().
EXCLUDED = -1e9


def exclude(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Sets the logits of selected players (mask True / > 0) to :data:`EXCLUDED`.

  Example:
    >>> exclude(jnp.array([1.0, 2.0]), jnp.array([False, True])).tolist()
    [1.0, -1000000000.0]
  """
  return jnp.where(mask.astype(bool), EXCLUDED, logits)


def concrete(key: jax.Array, logits: jax.Array, temperature: float | jax.Array, *,
             gamma: float = GAMMA) -> tuple[jax.Array, jax.Array]:
  """A Concrete (Gumbel-softmax) sample over the last axis and its Gumbel-perturbed logits.

  Args:
    key: PRNG key.
    logits: float[..., p].
    temperature: tau > 0; the sample tends to a one-hot vector as tau -> 0.
    gamma: the logits are divided by gamma first.

  Returns:
    (soft float[..., p] summing to 1, perturbed = logits / gamma + Gumbel noise); the hard sample is
    ``argmax(perturbed)``.

  Example:
    >>> soft, perturbed = concrete(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
    >>> soft.sum(-1).round(5).tolist()
    [1.0, 1.0]
  """
  perturbed = logits / gamma + jax.random.gumbel(key, logits.shape, logits.dtype)
  return jax.nn.softmax(perturbed / temperature, axis=-1), perturbed


def hard_select(logits: jax.Array, mask: jax.Array, noise: jax.Array | None = None, *,
                gamma: float = GAMMA) -> jax.Array:
  """Gumbel-max selection with exclusion: ``argmax(logits / gamma + noise)`` over unselected players.

  Args:
    logits: float[B, p] policy logits.
    mask: bool or 0/1 float [B, p], the players already selected (never chosen again).
    noise: optional Gumbel noise float[B, p]; None gives the deterministic argmax.
    gamma: logit scale, as in :func:`concrete`.

  Returns:
    int32[B], the selected player of each row.

  Example:
    >>> hard_select(jnp.array([[5.0, 0.0]]), jnp.array([[1.0, 0.0]])).tolist()
    [1]
  """
  perturbed = logits / gamma if noise is None else logits / gamma + noise
  return jnp.argmax(exclude(perturbed, mask), axis=-1).astype(jnp.int32)


def loss(predict: predictor_lib.ApplyFn, policy: predictor_lib.ApplyFn, params: Mapping[str, Any], inputs: Any,
         labels: jax.Array, key: jax.Array, *, num_players: int, num_steps: int, temperature: float | jax.Array,
         gamma: float = GAMMA) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The GDFS objective on one batch: predictor loss after each of ``num_steps`` relaxed selections, averaged.

  Args:
    predict: ``(params, inputs, mask float[B, p]) -> logits``, the masked predictor.
    policy: ``(params, inputs, mask) -> float[B, p]`` policy logits.
    params: ``{"predictor": ..., "policy": ...}``, differentiated through.
    inputs: the batch's network inputs (leading axis B).
    labels: int[B].
    key: PRNG key for the Gumbel noise.
    num_players: p, the policy's output width (static).
    num_steps: K, selections per sample (static).
    temperature: Concrete temperature.
    gamma: logit scale.

  Returns:
    (scalar loss, metrics: ``loss_first`` / ``loss_last``, the predictor loss after 1 and K selections).

  Example:
    >>> predict = lambda p, x, m: (x * m) @ p          # receives params["predictor"]
    >>> policy = lambda p, x, m: jnp.broadcast_to(p, m.shape)
    >>> params = {"predictor": jnp.eye(3), "policy": jnp.array([0.0, 5.0, 0.0])}
    >>> value, aux = loss(predict, policy, params, jnp.eye(3), jnp.arange(3), jax.random.key(0), num_players=3,
    ...                   num_steps=2, temperature=0.1)
    >>> aux["loss_last"].shape
    ()
  """
  batch = labels.shape[0]
  mask0 = jnp.zeros((batch, num_players), jnp.float32)

  def step(mask, step_key):
    logits = exclude(policy(params["policy"], inputs, mask), mask)
    soft, perturbed = concrete(step_key, logits, temperature, gamma=gamma)
    pred = predict(params["predictor"], inputs, jnp.maximum(mask, soft))
    step_loss = predictor_lib.cross_entropy(pred, labels).mean()
    choice = jnp.argmax(perturbed, axis=-1)               # excluded players carry EXCLUDED / gamma: never chosen
    mask = jax.lax.stop_gradient(jnp.maximum(mask, jax.nn.one_hot(choice, mask.shape[-1])))
    return mask, step_loss

  _, losses = jax.lax.scan(step, mask0, jax.random.split(key, num_steps))
  return losses.mean(), {"loss_first": losses[0], "loss_last": losses[-1]}


@functools.lru_cache(maxsize=64)
def predict_fn(predict: predictor_lib.ApplyFn) -> rollout_lib.PredictFn:
  """The rollout's ``predict_fn`` over params ``{"predictor": ..., "policy": ...}``."""
  return lambda params, inputs, mask: predict(params["predictor"], inputs, mask)


@functools.lru_cache(maxsize=64)
def score_fn(policy: predictor_lib.ApplyFn) -> rollout_lib.ScoreFn:
  """The rollout's ``score_fn``: the policy's logits (argmax over unselected players = zero-temperature GDFS)."""
  return lambda params, inputs, mask, logits: policy(params["policy"], inputs, mask)


def validation_loss(predict: rollout_lib.PredictFn, score: rollout_lib.ScoreFn, params: Any,
                    data: Mapping[str, np.ndarray], *, num_players: int, num_steps: int,
                    costs: jax.Array | None = None) -> float:
  """Predictor cross-entropy after 1..T greedy selections (averaged over steps and rows): the model-selection
  score of GDFS and DIME.

  Example:
    >>> predict = lambda p, x, m: (x * m) @ jnp.eye(2)
    >>> score = lambda p, x, m, logits: jnp.ones_like(x)
    >>> data = {"x": np.eye(2, dtype=np.float32), "y": np.arange(2)}
    >>> round(validation_loss(predict, score, None, data, num_players=2, num_steps=2), 4)
    0.4082
  """
  out = rollout_lib.greedy(predict, score, params, predictor_lib.inputs_of(data), num_players=num_players,
                           num_steps=num_steps, costs=costs)
  ce = predictor_lib.cross_entropy(out.step_logits[:, 1:], jnp.asarray(data["y"])[:, None])
  return float(ce.mean())


class GDFSResult(NamedTuple):
  """What :func:`train` returns: the kept stage, each stage's zero-temperature validation loss, the histories."""

  best_stage: int
  val_losses: list[float]
  histories: list[list[dict[str, float]]]


def train(key: jax.Array, predictor: nnx.Module, policy: nnx.Module, train_data: Mapping[str, np.ndarray],
          val_data: Mapping[str, np.ndarray], *, num_steps: int, steps_per_stage: int, batch_size: int,
          temperatures: Sequence[float] = TEMPERATURES, learning_rate: float = 1e-3, gamma: float = GAMMA,
          workdir: str | None = None, progress: bool = True) -> GDFSResult:
  """Trains a GDFS policy and fine-tunes its predictor (both in place), one training-loop call per temperature.

  Args:
    key: PRNG key (Gumbel noise and data order of every stage).
    predictor: masked predictor module ``predictor(inputs, mask)`` with ``num_players`` (e.g. a pretrained
      :class:`~xattr.selection.predictor.MaskedMLP`).
    policy: masked module with ``num_players`` outputs (e.g. ``MaskedMLP(d, num_players, ...)``).
    train_data, val_data: ``{"x", "y"[, "prior"]}`` arrays.
    num_steps: K, selections per training sample (and the validation rollout length).
    steps_per_stage: optimizer steps per temperature.
    batch_size: rows per step.
    temperatures: Concrete temperatures, one stage each (default geomspace(1.0, 0.1, 5)).
    learning_rate: Adam learning rate (fresh optimizer each stage).
    gamma: logit scale.
    workdir: stage i checkpoints in ``workdir/stage_<i>`` (a rerun resumes there); None: no checkpoints.
    progress: progress bars.

  Returns:
    :class:`GDFSResult`. The modules hold the parameters of the best stage at zero temperature.
  """
  num_players, num_steps = predictor_lib.check_training(predictor, policy, "policy", num_steps, train_data, val_data)
  if not temperatures or min(temperatures) <= 0:
    raise ValueError(f"temperatures must be a non-empty sequence of positive floats, got {temperatures!r}.")

  def loss_fn(b: predictor_lib.Bundle, batch):
    pred, pol = predictor_lib.masked_fn(b.predictor), predictor_lib.masked_fn(b.policy)
    params = {"predictor": pred.params, "policy": pol.params}
    return loss(pred.apply, pol.apply, params, predictor_lib.inputs_of(batch), batch["y"], b.rngs(),
                num_players=num_players, num_steps=num_steps, temperature=b.temperature[...], gamma=gamma)

  optimizer = optax.adam(learning_rate)
  val_losses, histories, best, best_state = [], [], np.inf, None
  for i, tau in enumerate(temperatures):
    # The temperature is state, so every stage runs the same compiled program (see predictor.Bundle).
    result = predictor_lib.train_stage(
        jax.random.fold_in(key, i), loss_fn, train_data, scalars={"temperature": tau}, optimizer=optimizer,
        num_steps=steps_per_stage, batch_size=batch_size,
        workdir=None if workdir is None else os.path.join(workdir, f"stage_{i}"), progress=progress,
        desc=f"gdfs tau={tau:.3g}", predictor=predictor, policy=policy)
    histories.append(result.history)
    pred, pol = predictor_lib.masked_fn(predictor), predictor_lib.masked_fn(policy)
    val = validation_loss(predict_fn(pred.apply), score_fn(pol.apply),
                          {"predictor": pred.params, "policy": pol.params}, val_data, num_players=num_players,
                          num_steps=num_steps)
    val_losses.append(val)
    if val < best:
      best, best_state = val, jax.tree.map(jnp.copy, (nnx.state(predictor), nnx.state(policy)))
  if best_state is None:
    raise FloatingPointError(f"every stage's validation loss is NaN ({val_losses}); lower the learning rate "
                             f"or check the data for non-finite values.")
  nnx.update(predictor, best_state[0])
  nnx.update(policy, best_state[1])
  return GDFSResult(int(np.argmin(val_losses)), val_losses, histories)
