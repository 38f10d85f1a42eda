"""The greedy rollout kernel: one jit-compiled ``lax.scan`` that selects features step by step for a batch.

Given a masked predictor ``predict_fn(params, inputs, mask) -> logits`` and a selector
``score_fn(params, inputs, mask, logits) -> scores[B, num_players]`` (GDFS policy logits, DIME CMI estimates per
unit cost, or any fixed ranking), every step of the scan

  1. predicts from the current selection (these logits are recorded: ``step_logits[:, t]`` is the prediction
     after ``t`` selections, so one rollout to ``T`` steps gives the accuracy at every budget 0..T at once);
  2. decides, per sample, whether to stop (see the rules below; a stopped sample stays stopped);
  3. otherwise adds the highest-scoring *available* player: not yet selected and, with a cost budget, no more
     expensive than what remains of it. Selected players are excluded by construction, so a player is never
     chosen twice.

Stopping rules (any combination; each a scalar or a per-sample array, so every sample can have its own budget):
  * ``budget``: at most this many selections;
  * ``cost_budget``: the summed cost of the selection never exceeds it (a sample stops when nothing fits);
  * ``penalty`` (lambda): stop when the best available score is below lambda. With DIME scores
    ``CMI / cost`` this is the penalized rule "acquire while the information per unit cost exceeds lambda";
  * ``confidence``: stop when the predicted class probability ``max softmax(logits)`` reaches the threshold.
A sample also stops when every player is selected.

The scan is the whole loop: no Python per step, the networks are traced once, and the batch may be split over
devices (:func:`greedy_sharded`); rows never interact, so the result does not depend on the device count.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr.selection import rollout
  >>> w = jnp.array([[0.1, 0.2], [3.0, -1.0], [0.5, 0.5]])        # 3 players, 2 classes
  >>> predict = lambda p, x, m: (x * m) @ w
  >>> score = lambda p, x, m, logits: jnp.abs(x) * jnp.array([1.0, 2.0, 3.0])
  >>> out = rollout.greedy(predict, score, None, jnp.ones((1, 3)), num_players=3, num_steps=2)
  >>> out.order.tolist(), out.masks.tolist(), out.num_selected.tolist()
  ([[2, 1]], [[False, True, True]], [2])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from xattr import _checks, parallel

__all__ = ["Rollout", "greedy", "greedy_sharded", "PredictFn", "ScoreFn"]

PredictFn = Callable[[Any, Any, jax.Array], jax.Array]
ScoreFn = Callable[[Any, Any, jax.Array, jax.Array], jax.Array]
_LOWEST = float(np.finfo(np.float32).min)


class Rollout(NamedTuple):
  """The result of a greedy rollout over a batch of B inputs, T steps, C classes and p players.

  Attributes:
    masks: bool[B, p], the final selection.
    order: int32[B, T], the player selected at each step; -1 once the sample has stopped.
    logits: float[B, C], the prediction from the final selection.
    step_logits: float[B, T + 1, C]; ``[:, t]`` is the prediction after ``min(t, num_selected)`` selections.
    num_selected: int32[B].
    cost: float32[B], summed cost of the selection (its size when no costs are given).
  """

  masks: jax.Array
  order: jax.Array
  logits: jax.Array
  step_logits: jax.Array
  num_selected: jax.Array
  cost: jax.Array


def _batch_size(inputs: Any) -> int:
  leaves = jax.tree.leaves(inputs)
  if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
    raise ValueError("inputs must be an array or a pytree of arrays with a leading batch axis.")
  sizes = {np.shape(leaf)[0] for leaf in leaves}
  if len(sizes) != 1:
    raise ValueError(f"inputs leaves must share their leading (batch) axis, got shapes "
                     f"{[np.shape(leaf) for leaf in leaves]}.")
  return int(sizes.pop())


def _per_sample(name: str, value: Any, batch: int) -> None:
  if value is None:
    return
  shape = np.shape(value)
  if shape not in ((), (batch,)):
    raise ValueError(f"{name} must be a scalar or one value per input (shape ({batch},)), got shape {shape}.")
  if _checks.is_concrete(value):
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} must hold finite numbers, got {value!r}.")


def _validate(inputs, num_players, num_steps, costs, initial_mask, rules):
  batch = _batch_size(inputs)
  p = _checks.positive_int("num_players", num_players)
  _checks.positive_int("num_steps", num_steps)
  if num_steps > p:
    raise ValueError(f"num_steps must be <= num_players={p} (a player is selected at most once), got {num_steps}.")
  if costs is not None:
    if np.shape(costs) != (p,):
      raise ValueError(f"costs must be float[num_players={p}], got shape {np.shape(costs)}.")
    if _checks.is_concrete(costs) and not np.all(np.asarray(costs) > 0):
      raise ValueError(f"costs must be positive, got min {np.min(np.asarray(costs))}.")
  if initial_mask is not None:
    _checks.mask_batch("initial_mask", initial_mask, p)
    if initial_mask.shape[0] != batch:
      raise ValueError(f"initial_mask must have one row per input ({batch}), got shape {initial_mask.shape}.")
  for name, value in rules.items():
    _per_sample(name, value, batch)
  if rules["confidence"] is not None and _checks.is_concrete(rules["confidence"]):
    if np.asarray(rules["confidence"]).min() < 0:
      raise ValueError(f"confidence must be >= 0 (a class probability; above 1 never stops), got "
                       f"{rules['confidence']!r}.")
  return batch


def _scan(predict_fn: PredictFn, score_fn: ScoreFn, num_players: int, num_steps: int, params: Any, inputs: Any,
          costs: jax.Array | None, initial_mask: jax.Array | None, budget: Any, cost_budget: Any, penalty: Any,
          confidence: Any) -> Rollout:
  batch = _batch_size(inputs)
  p = num_players
  costs = jnp.ones((p,), jnp.float32) if costs is None else jnp.asarray(costs, jnp.float32)
  mask0 = jnp.zeros((batch, p), bool) if initial_mask is None else jnp.asarray(initial_mask, bool)
  # What the initial selection already cost counts against the cost budget.
  spent0 = (mask0.astype(jnp.float32) * costs).sum(-1)
  count0 = mask0.sum(-1).astype(jnp.int32)
  full = lambda v, dtype: jnp.broadcast_to(jnp.asarray(v, dtype), (batch,))

  def step(carry, _):
    mask, active, count, spent = carry
    logits = predict_fn(params, inputs, mask)
    available = ~mask
    if cost_budget is not None:
      available &= spent[:, None] + costs <= full(cost_budget, jnp.float32)[:, None]
    go = active & available.any(-1)
    if budget is not None:
      go &= count < full(budget, jnp.int32)
    if confidence is not None:
      go &= jax.nn.softmax(logits, -1).max(-1) < full(confidence, jnp.float32)
    # Available players always outrank unavailable ones, even with -inf or NaN scores, so the argmax can never
    # return a selected player while another one is available.
    raw = jnp.nan_to_num(score_fn(params, inputs, mask, logits).astype(jnp.float32), nan=_LOWEST, neginf=_LOWEST)
    scores = jnp.where(available, raw, -jnp.inf)
    if penalty is not None:
      go &= scores.max(-1) >= full(penalty, jnp.float32)
    choice = jnp.argmax(scores, -1).astype(jnp.int32)
    picked = jax.nn.one_hot(choice, p, dtype=bool) & go[:, None]
    new = (mask | picked, go, count + go, spent + jnp.where(go, costs[choice], 0.0))
    return new, (jnp.where(go, choice, -1), logits)

  init = (mask0, jnp.ones((batch,), bool), count0, spent0)
  (mask, _, count, spent), (order, logits) = jax.lax.scan(step, init, None, length=num_steps)
  final = predict_fn(params, inputs, mask)
  step_logits = jnp.concatenate([jnp.moveaxis(logits, 0, 1), final[:, None]], axis=1)
  return Rollout(mask, order.T, final, step_logits, count, spent)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _scan_jit(predict_fn, score_fn, num_players, num_steps, *args):
  return _scan(predict_fn, score_fn, num_players, num_steps, *args)


def greedy(predict_fn: PredictFn, score_fn: ScoreFn, params: Any, inputs: Any, *, num_players: int,
           num_steps: int, costs: jax.Array | None = None, initial_mask: jax.Array | None = None,
           budget: Any = None, cost_budget: Any = None, penalty: Any = None, confidence: Any = None) -> Rollout:
  """Greedy feature selection for a batch: one jit-compiled ``lax.scan`` of ``num_steps`` steps.

  Every stopping rule is a traced argument: one compiled rollout serves every value of it, and a rule given a
  value that never triggers (``penalty=-3e38``, ``confidence=2.0``) shares the program of the rule in use.

  Args:
    predict_fn: ``(params, inputs, mask bool[B, p]) -> logits float[B, C]``, the masked predictor.
    score_fn: ``(params, inputs, mask, logits) -> float[B, p]``, larger = select first (the current
      prediction's logits are passed along, e.g. for DIME's entropy scaling). Scores of selected or
      unaffordable players are ignored.
    params: pytree handed to both functions (e.g. ``{"predictor": ..., "selector": ...}``); an argument of the
      compiled function, not a constant baked into it.
    inputs: array or pytree of arrays with a leading batch axis B.
    num_players: p (static).
    num_steps: T <= p, the most selections made (static).
    costs: optional float[p] positive acquisition costs (default 1 each).
    initial_mask: optional bool[B, p] of players known from the start (they count towards the budgets).
    budget: max number of selected players (scalar or int[B]).
    cost_budget: max summed cost (scalar or float[B]).
    penalty: lambda; stop when the best available score < lambda (scalar or float[B]).
    confidence: stop when max softmax(logits) >= this (scalar or float[B]; above 1 never stops).

  Returns:
    :class:`Rollout`. Functions are static arguments: pass the same function objects to reuse the compilation.

  Raises:
    ValueError: on a mismatched shape, a non-positive cost, ``num_steps > num_players`` or a negative
      confidence.

  Example:
    >>> predict = lambda p, x, m: jnp.zeros((x.shape[0], 2))
    >>> score = lambda p, x, m, logits: x
    >>> x = jnp.array([[0.3, 0.9, 0.1], [0.5, 0.2, 0.4]])
    >>> greedy(predict, score, None, x, num_players=3, num_steps=3, budget=jnp.array([1, 2])).order.tolist()
    [[1, -1, -1], [0, 2, -1]]
  """
  rules = dict(budget=budget, cost_budget=cost_budget, penalty=penalty, confidence=confidence)
  _validate(inputs, num_players, num_steps, costs, initial_mask, rules)
  return _scan_jit(predict_fn, score_fn, num_players, num_steps, params, inputs, costs, initial_mask,
                   budget, cost_budget, penalty, confidence)


@functools.lru_cache(maxsize=16)
def _sharded_fn(predict_fn, score_fn, num_players, num_steps, mesh, axis_name, has_costs):
  rows = parallel.data_sharding(mesh, axis_name)
  rep = parallel.replicated(mesh)

  def run(params, costs, per_sample):
    return _scan(predict_fn, score_fn, num_players, num_steps, params, per_sample["inputs"], costs,
                 per_sample.get("initial_mask"), per_sample.get("budget"), per_sample.get("cost_budget"),
                 per_sample.get("penalty"), per_sample.get("confidence"))

  del has_costs                          # part of the cache key only: None and an array compile differently
  return jax.jit(run, in_shardings=(rep, rep, rows), out_shardings=rows)


def greedy_sharded(predict_fn: PredictFn, score_fn: ScoreFn, params: Any, inputs: Any, *, num_players: int,
                   num_steps: int, mesh: Mesh | None = None, axis_name: str = "data", costs: jax.Array | None = None,
                   initial_mask: jax.Array | None = None, budget: Any = None, cost_budget: Any = None,
                   penalty: Any = None, confidence: Any = None) -> Rollout:
  """:func:`greedy` with the batch split over the devices of ``mesh`` (parameters and costs replicated).

  The batch (and every per-sample stopping value) is padded to a multiple of the mesh size by repeating its
  last row, split over ``axis_name`` and stripped of the padding afterwards. Rows are independent, so the result
  equals :func:`greedy`'s on any number of devices.

  Example:
    >>> predict = lambda p, x, m: jnp.zeros((x.shape[0], 2))
    >>> score = lambda p, x, m, logits: x
    >>> out = greedy_sharded(predict, score, None, jnp.eye(3), num_players=3, num_steps=1)
    >>> out.order[:, 0].tolist()
    [0, 1, 2]
  """
  rules = dict(budget=budget, cost_budget=cost_budget, penalty=penalty, confidence=confidence)
  batch = _validate(inputs, num_players, num_steps, costs, initial_mask, rules)
  mesh = parallel.make_mesh(axis_name=axis_name) if mesh is None else mesh
  per_sample: dict[str, Any] = {"inputs": inputs}
  if initial_mask is not None:
    per_sample["initial_mask"] = initial_mask
  dtypes = dict(budget=np.int32, cost_budget=np.float32, penalty=np.float32, confidence=np.float32)
  for name, value in rules.items():
    if value is not None:
      per_sample[name] = np.broadcast_to(np.asarray(value, dtypes[name]), (batch,))
  sharded, n = parallel.shard_batch(per_sample, mesh, axis_name)
  fn = _sharded_fn(predict_fn, score_fn, num_players, num_steps, mesh, axis_name, costs is not None)
  rep = parallel.replicated(mesh)
  costs = None if costs is None else jax.device_put(jnp.asarray(costs, jnp.float32), rep)
  out = fn(jax.device_put(params, rep), costs, sharded)
  return jax.tree.map(lambda a: a[:n], out)
