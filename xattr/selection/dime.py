"""DIME: greedy dynamic feature selection with a value network that estimates conditional mutual information.

The CMI between the label and an unobserved feature i, given the observed ones, is the expected drop of the
Bayes-optimal predictor's cross-entropy when i is added: I(y; x_i | x_S) = E[l(f(x_S), y) - l(f(x_{S+i}), y)].
DIME regresses a value network ``v(x_S) -> float[p]`` onto sampled loss drops, which are unbiased targets of
that expectation. For k = 1..K per batch (one optimizer step on the average over k):

  * CMI estimate c = scale(v(x_S)): ``"bounded"``: sigmoid(v) * H(p(y | x_S)), since the information a feature
    carries about y cannot exceed the predictor's current entropy; ``"positive"``: softplus(v); ``"raw"``: v;
  * action: with probability 1 - epsilon the argmax of c / cost, otherwise a uniformly random player, both
    *among unselected players* (re-selecting a player adds nothing and would only train on zero targets);
  * target = stop_gradient(loss_{k-1} - loss_k), the predictor's per-sample loss drop when the action is added;
  * loss = (c_action - target)^2 + CE of the predictor on the new selection (the predictor keeps learning on
    the selections the policy makes; the entropy in the bounded scaling is under stop_gradient too, so the
    value regression never moves the predictor).

Exploration decays on plateaus: training runs in blocks (one call of the shared training loop each); after
each block the greedy rollout is scored on validation data, and after ``patience`` blocks without improvement
epsilon is multiplied by ``decay`` (0.2); training ends when epsilon falls below ``min_epsilon``. The best
validation model is kept.

Costs: the greedy choice maximizes CMI per unit cost, and :func:`score_fn` gives the rollout c / cost, so the
rollout's ``penalty`` rule stops when the best information per unit cost falls below lambda. Prior information
z (features known before any selection) is passed as inputs ``{"x", "prior"}`` to both networks.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr.selection import dime
  >>> c = dime.cmi_estimate(jnp.zeros((1, 3)), jnp.zeros((1, 4)), "bounded")    # sigmoid(0) * log 4
  >>> [round(v, 4) for v in c[0].tolist()]
  [0.6931, 0.6931, 0.6931]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks
from xattr.selection import gdfs
from xattr.selection import predictor as predictor_lib
from xattr.selection import rollout as rollout_lib

__all__ = ["SCALINGS", "entropy", "cmi_estimate", "select_action", "Transition", "transition", "loss",
           "predict_fn", "score_fn", "DIMEResult", "train"]

SCALINGS = ("bounded", "positive", "raw")


def entropy(logits: jax.Array) -> jax.Array:
  """Entropy (nats) of softmax(logits) over the last axis.

  Example:
    >>> round(float(entropy(jnp.zeros(4))), 4)
    1.3863
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)


def cmi_estimate(raw: jax.Array, logits: jax.Array, scaling: str = "bounded") -> jax.Array:
  """Maps the value network's raw outputs float[B, p] to CMI estimates (nats).

  Args:
    raw: value network outputs.
    logits: the predictor's logits float[B, C] on the current selection (used by ``"bounded"``, under
      stop_gradient).
    scaling: ``"bounded"`` (sigmoid(raw) * entropy), ``"positive"`` (softplus) or ``"raw"``.

  Example:
    >>> cmi_estimate(jnp.array([[-1.0, 2.0]]), jnp.zeros((1, 2)), "raw").tolist()
    [[-1.0, 2.0]]
  """
  if scaling == "bounded":
    return jax.nn.sigmoid(raw) * jax.lax.stop_gradient(entropy(logits))[..., None]
  if scaling == "positive":
    return jax.nn.softplus(raw)
  if scaling == "raw":
    return raw
  raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}.")


def select_action(key: jax.Array, cmi: jax.Array, mask: jax.Array, epsilon: float | jax.Array,
                  costs: jax.Array | None = None) -> jax.Array:
  """Epsilon-greedy choice among unselected players: argmax(cmi / cost) w.p. 1 - epsilon, else uniform.

  Returns:
    int32[B]; never a player already in ``mask`` (rows must have an unselected player).

  Example:
    >>> select_action(jax.random.key(0), jnp.array([[9.0, 1.0, 2.0]]), jnp.array([[True, False, False]]),
    ...               0.0).tolist()
    [2]
  """
  explore_key, uniform_key = jax.random.split(key)
  ratio = cmi if costs is None else cmi / costs
  greedy = jnp.argmax(jnp.where(mask, -jnp.inf, ratio), -1)
  noise = jax.random.uniform(uniform_key, mask.shape)
  uniform = jnp.argmax(jnp.where(mask, -1.0, noise), -1)        # uniform over unselected players
  explore = jax.random.bernoulli(explore_key, epsilon, (mask.shape[0],))
  return jnp.where(explore, uniform, greedy).astype(jnp.int32)


class Transition(NamedTuple):
  """One DIME step for a batch: the new selection and what the losses are made of."""

  mask: jax.Array          # bool[B, p] after the action
  logits: jax.Array        # predictor logits on the new selection
  action: jax.Array        # int32[B]
  estimate: jax.Array      # float[B], c_action
  target: jax.Array        # float[B], stop_gradient(loss_before - loss_after)
  value_loss: jax.Array    # scalar, mean (estimate - target)^2
  pred_loss: jax.Array     # scalar, mean CE on the new selection


def transition(predict: predictor_lib.ApplyFn, value: predictor_lib.ApplyFn, params: Mapping[str, Any],
               inputs: Any, labels: jax.Array, mask: jax.Array, logits: jax.Array, key: jax.Array, *,
               epsilon: float | jax.Array, scaling: str = "bounded",
               costs: jax.Array | None = None) -> Transition:
  """Adds one epsilon-greedy player to every row and computes the value regression target and losses.

  Args:
    predict, value: ``(params, inputs, mask) -> logits / raw values``.
    params: ``{"predictor": ..., "value": ...}``.
    inputs, labels: the batch.
    mask: bool[B, p], the current selection (every row must have an unselected player); ``logits``: the
      predictor's logits on it.
    key: PRNG key for the action.
    epsilon, scaling, costs: see :func:`select_action` and :func:`cmi_estimate`.

  Example:
    >>> predict = lambda p, x, m: (x * m) @ jnp.eye(2)
    >>> value = lambda p, x, m: jnp.zeros(m.shape)
    >>> x, y, m = jnp.eye(2), jnp.arange(2), jnp.zeros((2, 2), bool)
    >>> t = transition(predict, value, {"predictor": None, "value": None}, x, y, m, predict(None, x, m),
    ...                jax.random.key(0), epsilon=0.0)
    >>> t.action.tolist(), [round(v, 4) for v in t.target.tolist()]   # log 2 - log(1 + 1/e) for row 0
    ([0, 0], [0.3799, 0.0])
  """
  estimates = cmi_estimate(value(params["value"], inputs, mask), logits, scaling)
  action = select_action(key, jax.lax.stop_gradient(estimates), mask, epsilon, costs)
  new_mask = mask | jax.nn.one_hot(action, mask.shape[-1], dtype=bool)
  new_logits = predict(params["predictor"], inputs, new_mask)
  before = predictor_lib.cross_entropy(logits, labels)
  after = predictor_lib.cross_entropy(new_logits, labels)
  target = jax.lax.stop_gradient(before - after)
  estimate = jnp.take_along_axis(estimates, action[:, None], axis=-1)[:, 0]
  return Transition(new_mask, new_logits, action, estimate, target, jnp.mean((estimate - target) ** 2),
                    jnp.mean(after))


def loss(predict: predictor_lib.ApplyFn, value: predictor_lib.ApplyFn, params: Mapping[str, Any], inputs: Any,
         labels: jax.Array, key: jax.Array, *, num_players: int, num_steps: int, epsilon: float | jax.Array,
         scaling: str = "bounded", costs: jax.Array | None = None,
         pred_weight: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DIME objective on one batch: ``num_steps`` epsilon-greedy transitions from the empty selection.

  Returns:
    (mean over steps of value_loss + pred_weight * pred_loss, metrics ``value_loss``, ``pred_loss``,
    ``target_first`` (mean loss drop of the first selection)).

  Example:
    >>> predict = lambda p, x, m: (x * m) @ p          # receives params["predictor"]
    >>> value = lambda p, x, m: jnp.broadcast_to(p, m.shape)
    >>> params = {"predictor": jnp.eye(3), "value": jnp.zeros(3)}
    >>> total, aux = loss(predict, value, params, jnp.eye(3), jnp.arange(3), jax.random.key(0), num_players=3,
    ...                   num_steps=2, epsilon=0.5)
    >>> sorted(aux)
    ['pred_loss', 'target_first', 'value_loss']
  """
  batch = labels.shape[0]
  mask0 = jnp.zeros((batch, num_players), bool)
  logits0 = predict(params["predictor"], inputs, mask0)

  def step(carry, step_key):
    mask, logits = carry
    t = transition(predict, value, params, inputs, labels, mask, logits, step_key, epsilon=epsilon,
                   scaling=scaling, costs=costs)
    return (t.mask, t.logits), (t.value_loss, t.pred_loss, t.target.mean())

  _, (value_losses, pred_losses, targets) = jax.lax.scan(step, (mask0, logits0), jax.random.split(key, num_steps))
  # The empty selection's loss too: the predictor must also predict from nothing.
  pred_loss = (predictor_lib.cross_entropy(logits0, labels).mean() + pred_losses.sum()) / (num_steps + 1)
  value_loss = value_losses.mean()
  return value_loss + pred_weight * pred_loss, {"value_loss": value_loss, "pred_loss": pred_loss,
                                                 "target_first": targets[0]}


@functools.lru_cache(maxsize=64)
def predict_fn(predict: predictor_lib.ApplyFn) -> rollout_lib.PredictFn:
  """The rollout's ``predict_fn`` over params ``{"predictor": ..., "value": ..., "costs": ...}``."""
  return lambda params, inputs, mask: predict(params["predictor"], inputs, mask)


@functools.lru_cache(maxsize=64)
def score_fn(value: predictor_lib.ApplyFn, scaling: str = "bounded") -> rollout_lib.ScoreFn:
  """The rollout's ``score_fn``: CMI estimates per unit cost, ``c / params["costs"]`` (costs optional in params).

  With it, the rollout's ``penalty=lambda`` stops a sample when max_i c_i / cost_i < lambda.
  """
  if scaling not in SCALINGS:
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}.")

  def score(params, inputs, mask, logits):
    c = cmi_estimate(value(params["value"], inputs, mask), logits, scaling)
    costs = params.get("costs") if isinstance(params, Mapping) else None
    return c if costs is None else c / costs

  return score


class DIMEResult(NamedTuple):
  """What :func:`train` returns: per-block epsilon and validation loss, the kept block, the histories."""

  best_block: int
  epsilons: list[float]
  val_losses: list[float]
  histories: list[list[dict[str, float]]]


def train(key: jax.Array, predictor: nnx.Module, value_net: nnx.Module, train_data: Mapping[str, np.ndarray],
          val_data: Mapping[str, np.ndarray], *, num_steps: int, steps_per_block: int, batch_size: int,
          epsilon: float = 0.5, decay: float = 0.2, min_epsilon: float = 1e-3, patience: int = 1,
          max_blocks: int = 20, scaling: str = "bounded", costs: np.ndarray | None = None,
          learning_rate: float = 1e-3, pred_weight: float = 1.0, workdir: str | None = None,
          progress: bool = True) -> DIMEResult:
  """Trains a DIME value network and fine-tunes its predictor (both in place), with epsilon decay on plateaus.

  Args:
    key: PRNG key (actions and data order of every block).
    predictor: masked predictor module with ``num_players`` (pretrained).
    value_net: masked module with ``num_players`` outputs.
    train_data, val_data: ``{"x", "y"[, "prior"]}`` arrays.
    num_steps: K, transitions per training sample (and the validation rollout length).
    steps_per_block: optimizer steps between validation checks.
    batch_size: rows per step.
    epsilon, decay, min_epsilon, patience: exploration starts at ``epsilon`` and is multiplied by ``decay``
      after ``patience`` blocks without a better validation loss; training stops below ``min_epsilon``.
    max_blocks: hard cap on the number of blocks.
    scaling: CMI scaling (see :func:`cmi_estimate`).
    costs: optional float[p] positive feature costs (the greedy action maximizes CMI / cost).
    learning_rate: Adam learning rate (one optimizer state per block).
    pred_weight: weight of the predictor loss.
    workdir: block b checkpoints in ``workdir/block_<b>``; a rerun replays the finished blocks from their
      checkpoints (same validation losses, so the same epsilon decisions) and resumes.
    progress: progress bars.

  Returns:
    :class:`DIMEResult`; the modules hold the best validation block's parameters.
  """
  num_players, num_steps = predictor_lib.check_training(predictor, value_net, "value_net", num_steps, train_data, val_data)
  if scaling not in SCALINGS:
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}.")
  _checks.probability("epsilon", epsilon)
  if not 0 < decay < 1 or not 0 < min_epsilon:
    raise ValueError(f"decay must lie in (0, 1) and min_epsilon be > 0, got decay={decay}, "
                     f"min_epsilon={min_epsilon}.")
  cost_array = None
  if costs is not None:
    cost_array = np.asarray(costs, np.float32)
    if cost_array.shape != (num_players,) or not np.all(cost_array > 0):
      raise ValueError(f"costs must be {num_players} positive values, got shape {cost_array.shape}.")

  cost_jnp = None if cost_array is None else jnp.asarray(cost_array)

  def loss_fn(b: predictor_lib.Bundle, batch):
    pred, val = predictor_lib.masked_fn(b.predictor), predictor_lib.masked_fn(b.value)
    return loss(pred.apply, val.apply, {"predictor": pred.params, "value": val.params},
                predictor_lib.inputs_of(batch), batch["y"], b.rngs(), num_players=num_players,
                num_steps=num_steps, epsilon=b.epsilon[...], scaling=scaling, costs=cost_jnp,
                pred_weight=pred_weight)

  optimizer = optax.adam(learning_rate)
  epsilons, val_losses, histories = [], [], []
  best, best_state, stale, eps = np.inf, None, 0, float(epsilon)
  for block in range(max_blocks):
    if eps < min_epsilon:
      break
    # Epsilon is state, so every block runs the same compiled program (see predictor.Bundle).
    result = predictor_lib.train_stage(
        jax.random.fold_in(key, block), loss_fn, train_data, scalars={"epsilon": eps}, optimizer=optimizer,
        num_steps=steps_per_block, batch_size=batch_size,
        workdir=None if workdir is None else os.path.join(workdir, f"block_{block:03d}"), progress=progress,
        desc=f"dime eps={eps:.3g}", predictor=predictor, value=value_net)
    histories.append(result.history)
    epsilons.append(eps)
    pred, val = predictor_lib.masked_fn(predictor), predictor_lib.masked_fn(value_net)
    params = {"predictor": pred.params, "value": val.params}
    if cost_array is not None:
      params["costs"] = jnp.asarray(cost_array)
    loss_val = gdfs.validation_loss(predict_fn(pred.apply), score_fn(val.apply, scaling), params, val_data,
                                    num_players=num_players, num_steps=num_steps)
    val_losses.append(loss_val)
    if loss_val < best:
      best, stale = loss_val, 0
      best_state = jax.tree.map(jnp.copy, (nnx.state(predictor), nnx.state(value_net)))
    else:
      stale += 1
      if stale >= patience:
        eps, stale = eps * decay, 0
  if best_state is None:
    raise FloatingPointError(f"every block's validation loss is NaN ({val_losses}); lower the learning rate "
                             f"or check the data for non-finite values.")
  nnx.update(predictor, best_state[0])
  nnx.update(value_net, best_state[1])
  return DIMEResult(int(np.argmin(val_losses)), epsilons, val_losses, histories)
