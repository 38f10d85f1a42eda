"""Baselines for dynamic feature selection: random order, a static greedy ranking, CAE-style static selection.

Dynamic selection is only worth its cost if it beats choices that ignore the observed values:

  * **random**: a fresh uniformly random order per sample;
  * **static ranking**: one order for everyone, built greedily on held-out data with the masked predictor: step
    t adds the player whose addition to the current *shared* set lowers the average loss most (a forward
    selection in the spirit of SAGE, whose values measure the same loss reduction averaged over orders);
  * **CAE-style static selection**: a Concrete selector layer (a Concrete autoencoder's encoder, trained here
    on the label instead of a reconstruction) learns k selector rows over the players, each a Gumbel-softmax
    sample whose temperature decays from 10 to 0.01; the union of the rows (elementwise max) masks the input of
    the jointly fine-tuned predictor. One model per budget k; the final selection is each row's argmax
    (rows taken in order of confidence, repeated players replaced by the next best unused one, so exactly k
    distinct players).

The random and static orders run through the same greedy rollout kernel as GDFS and DIME (a score per player:
earlier = higher), so every stopping rule applies to them too.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr.selection import baselines
  >>> s = baselines.ranking_scores(jnp.array([2, 0]), 3)
  >>> s.tolist()                                   # player 2 first, then 0, then 1 (unranked) last
  [2.0, -inf, 3.0]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xattr import _checks, masks, training
from xattr.selection import predictor as predictor_lib
from xattr.selection import rollout as rollout_lib

__all__ = ["random_scores", "ranking_scores", "fixed_rollout", "static_greedy_ranking", "ConcreteSelector",
           "cae_selection", "train_cae"]


def random_scores(key: jax.Array, num_samples: int, num_players: int) -> jax.Array:
  """Scores that make the rollout follow an independent uniformly random order for every sample.

  Returns:
    float32[num_samples, num_players]; row i ranks players by ``masks.permutations`` order.

  Example:
    >>> s = random_scores(jax.random.key(0), 2, 4)
    >>> sorted(s[0].tolist())
    [1.0, 2.0, 3.0, 4.0]
  """
  n = _checks.positive_int("num_samples", num_samples)
  p = _checks.positive_int("num_players", num_players)
  perms = masks.permutations(key, p, n)
  ranks = jnp.argsort(perms, axis=1)                 # position of each player in its row's order
  return (p - ranks).astype(jnp.float32)


def ranking_scores(ranking: jax.Array | np.ndarray, num_players: int) -> jax.Array:
  """Scores float32[num_players] for a static order: earlier = higher; players not in ``ranking`` get -inf.

  Example:
    >>> ranking_scores(np.array([1]), 2).tolist()
    [-inf, 2.0]
  """
  p = _checks.positive_int("num_players", num_players)
  ranking = jnp.asarray(ranking, jnp.int32)
  return jnp.full((p,), -jnp.inf).at[ranking].set(p - jnp.arange(ranking.shape[0], dtype=jnp.float32))


@functools.lru_cache(maxsize=64)
def _fixed_fns(predict_fn: rollout_lib.PredictFn):
  predict = lambda params, inputs, mask: predict_fn(params, inputs["inputs"], mask)
  score = lambda params, inputs, mask, logits: inputs["scores"]
  return predict, score


def fixed_rollout(predict_fn: rollout_lib.PredictFn, params: Any, inputs: Any, scores: jax.Array, *,
                  num_players: int, num_steps: int, **rules: Any) -> rollout_lib.Rollout:
  """Greedy rollout of a fixed ranking: per-sample scores [B, p] or one static [p] row for everyone.

  Args:
    predict_fn: ``(params, inputs, mask) -> logits``.
    params: the predictor's params.
    inputs: batch (leading axis B).
    scores: float[B, p] or float[p]; higher = selected earlier (see :func:`random_scores`, :func:`ranking_scores`).
    num_players, num_steps, **rules: as in :func:`xattr.selection.rollout.greedy` (``costs``, ``budget``, ...).

  Example:
    >>> predict = lambda p, x, m: jnp.zeros((x.shape[0], 2))
    >>> out = fixed_rollout(predict, None, jnp.ones((2, 3)), ranking_scores(np.array([2, 0, 1]), 3),
    ...                     num_players=3, num_steps=2)
    >>> out.order.tolist()
    [[2, 0], [2, 0]]
  """
  batch = jax.tree.leaves(inputs)[0].shape[0]
  scores = jnp.asarray(scores, jnp.float32)
  if scores.shape not in ((num_players,), (batch, num_players)):
    raise ValueError(f"scores must be float[num_players={num_players}] or float[{batch}, {num_players}], got "
                     f"shape {scores.shape}.")
  predict, score = _fixed_fns(predict_fn)
  wrapped = {"inputs": inputs, "scores": jnp.broadcast_to(scores, (batch, num_players))}
  return rollout_lib.greedy(predict, score, params, wrapped, num_players=num_players, num_steps=num_steps, **rules)


@functools.partial(jax.jit, static_argnames=("predict_fn", "num_players", "num_steps"))
def _forward_selection(predict_fn, params, inputs, labels, num_players, num_steps):
  n = labels.shape[0]
  p = num_players
  candidates = jnp.eye(p, dtype=bool)
  # Every candidate's mask for every row as ONE batch [p * n] (a vmap over candidates would turn the network's
  # matmuls into batched 3-D ones, several times slower on CPU).
  tiled = jax.tree.map(lambda a: jnp.tile(a, (p,) + (1,) * (a.ndim - 1)), inputs)
  tiled_labels = jnp.tile(labels, p)

  def step(selected, _):
    trial = jnp.repeat(selected[None] | candidates, n, axis=0)           # [p * n, p], candidate-major
    ce = predictor_lib.cross_entropy(predict_fn(params, tiled, trial), tiled_labels).reshape(p, n).mean(1)
    choice = jnp.argmin(jnp.where(selected, jnp.inf, ce)).astype(jnp.int32)
    return selected.at[choice].set(True), choice

  _, ranking = jax.lax.scan(step, jnp.zeros((p,), bool), None, length=num_steps)
  return ranking


def static_greedy_ranking(predict_fn: rollout_lib.PredictFn, params: Any, inputs: Any, labels: jax.Array, *,
                          num_players: int, num_steps: int) -> jax.Array:
  """Forward selection of one shared order: step t adds the player that most lowers the mean loss on the data.

  Args:
    predict_fn: ``(params, inputs, mask) -> logits``, a masked predictor.
    params: its params.
    inputs, labels: held-out data (leading axis n); the cost is num_steps * num_players * n predictor rows.
    num_players: p.
    num_steps: length of the ranking (<= p).

  Returns:
    int32[num_steps], distinct players in order of selection.

  Example:
    >>> w = jnp.array([[0.0, 0.0], [2.0, -2.0], [0.5, -0.5]])
    >>> predict = lambda p, x, m: (x * m) @ w
    >>> x = jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]); y = jnp.array([0, 1])
    >>> static_greedy_ranking(predict, None, x, y, num_players=3, num_steps=2).tolist()
    [1, 2]
  """
  p = _checks.positive_int("num_players", num_players)
  k = _checks.positive_int("num_steps", num_steps)
  if k > p:
    raise ValueError(f"num_steps must be <= num_players={p}, got {k}.")
  return _forward_selection(predict_fn, params, inputs, jnp.asarray(labels), p, k)


class _Step(nnx.Variable):
  """A step counter in the module state (checkpointed, so a resumed run keeps its temperature schedule)."""


class ConcreteSelector(nnx.Module):
  """k selector rows of logits over p players (the encoder of a Concrete autoencoder).

  Args:
    num_selected: k.
    num_players: p.
    rngs: initialization (small random logits break the symmetry between rows).
  """

  def __init__(self, num_selected: int, num_players: int, *, rngs: nnx.Rngs):
    k = _checks.positive_int("num_selected", num_selected)
    p = _checks.positive_int("num_players", num_players)
    if k > p:
      raise ValueError(f"num_selected must be <= num_players={p}, got {k}.")
    self.logits = nnx.Param(0.01 * jax.random.normal(rngs.params(), (k, p)))
    self.step = _Step(jnp.zeros((), jnp.int32))

  def __call__(self, key: jax.Array, batch: int, temperature: jax.Array) -> jax.Array:
    """A relaxed mask float[batch, p]: the elementwise max of k Gumbel-softmax rows per sample."""
    logits = self.logits[...]
    noise = jax.random.gumbel(key, (batch, *logits.shape))
    return jax.nn.softmax((logits + noise) / temperature, axis=-1).max(axis=1)


def cae_selection(logits: np.ndarray) -> np.ndarray:
  """Exactly k distinct players from k selector rows: rows in order of confidence take their best unused player.

  Example:
    >>> cae_selection(np.array([[5.0, 1.0, 0.0], [4.0, 0.0, 2.0]])).tolist()   # row 2 also wants player 0
    [0, 2]
  """
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  chosen: list[int] = []
  for row in np.argsort(-probs.max(1), kind="stable"):       # k rows: a short host loop after training
    ranked = np.argsort(-probs[row], kind="stable")
    chosen.append(int(next(j for j in ranked if j not in chosen)))
  return np.array(chosen, np.int32)


def train_cae(key: jax.Array, predictor: nnx.Module, train_data: Mapping[str, np.ndarray], *, num_selected: int,
              num_steps: int, batch_size: int, learning_rate: float = 1e-3, start_temperature: float = 10.0,
              end_temperature: float = 0.01, workdir: str | None = None, progress: bool = True) -> np.ndarray:
  """Trains a CAE-style selector and fine-tunes ``predictor`` with it (in place); returns the k selected players.

  The temperature decays exponentially from ``start_temperature`` to ``end_temperature`` over ``num_steps``
  (a step counter in the selector's state drives it, so resuming keeps the schedule).

  Args:
    key: PRNG key (selector initialization, Gumbel noise, data order).
    predictor: masked predictor module with ``num_players`` (e.g. a copy of the pretrained one); fine-tuned in place.
    train_data: ``{"x", "y"[, "prior"]}`` arrays.
    num_selected: k, the budget.
    num_steps, batch_size, learning_rate: Adam training settings.
    start_temperature, end_temperature: the Concrete temperature schedule.
    workdir: Orbax checkpoints (resumable); None: none.
    progress: progress bar.

  Returns:
    int32[num_selected] distinct players (see :func:`cae_selection`).
  """
  num_players = _checks.positive_int("predictor.num_players", getattr(predictor, "num_players", None))
  predictor_lib.check_data("train_data", train_data)
  total = _checks.positive_int("num_steps", num_steps)
  if not 0 < end_temperature <= start_temperature:
    raise ValueError(f"temperatures must satisfy 0 < end_temperature <= start_temperature, got "
                     f"{start_temperature} -> {end_temperature}.")
  init_key, mask_key = jax.random.split(key)
  mask_key, seed = predictor_lib.mask_key_and_seed(mask_key)
  selector = ConcreteSelector(num_selected, num_players, rngs=nnx.Rngs(params=init_key))
  ratio = end_temperature / start_temperature

  def loss_fn(bundle: predictor_lib.Bundle, batch):
    progress_frac = jnp.minimum(bundle.selector.step[...] / total, 1.0)
    bundle.selector.step[...] = bundle.selector.step[...] + 1
    m = bundle.selector(bundle.rngs(), batch["y"].shape[0], start_temperature * ratio ** progress_frac)
    logits = bundle.predictor(predictor_lib.inputs_of(batch), m)
    loss = predictor_lib.cross_entropy(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  bundle = predictor_lib.Bundle(mask_key, predictor=predictor, selector=selector)
  training.train(bundle, loss_fn, dict(train_data), optimizer=optax.adam(learning_rate), num_steps=total,
                 batch_size=batch_size, seed=seed, workdir=workdir, progress=progress,
                 desc=f"cae k={num_selected}")
  return cae_selection(np.asarray(selector.logits[...]))
