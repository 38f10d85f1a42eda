"""The networks and objectives of contrastive feature selection: a background autoencoder, two feature selectors
(stochastic gates and a Concrete top-k layer) and the reconstruction / classification losses they train with.

* :class:`Autoencoder` - MLP encoder g: x -> k' dims and decoder, trained on background data (MSE).
* :class:`StochasticGates` - one gate per player: ``z = clip(mu + 0.5 + sigma * eps, 0, 1)``, ``eps ~ N(0, 1)``
  drawn once per minibatch (as in the public STG/CFS code), ``mu`` initialized ``N(0, 0.01^2)`` so the gate's mean
  ``mu + 0.5`` starts at ``N(0.5, 0.01^2)``; penalty ``mean_j Phi((mu_j + 0.5) / sigma)`` = the expected fraction of
  open gates (:func:`gate_penalty`). At the end the players are ranked by ``mu``.
* :class:`ConcreteTopK` - k Concrete (Gumbel-softmax) rows over the players (the layer of
  :class:`xattr.selection.baselines.ConcreteSelector`), one noise draw per minibatch, temperature decaying
  exponentially from 10 to 0.01 over training; the union of the rows masks the input; exactly k distinct players
  at the end (:func:`xattr.selection.baselines.cae_selection`).

Players may be groups of features: a 0/1 group matrix ``G[p, d]`` maps a player mask m to the feature mask
``min(1, m @ G)``.

Objectives (:func:`loss_fn`, one compiled step per task and architecture): ``"reconstruct"`` - a network f
reproduces x from ``[g(x), x * mask]`` (g(x) precomputed by the frozen background encoder, absent in the
no-background ablation); ``"joint"`` - the paper's joint variant, encoder trained together: target reconstructed
from ``[stop_gradient(g(x_t)), x_t * mask]`` and background from ``[g(x_b), 0]`` by the same f;
``"classify"`` - supervised STG, a classifier on ``x * mask``. The penalty weight is state (``bundle.lam``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from xattr.cfs import model
  >>> round(float(model.gate_penalty(jnp.zeros(3), 0.5)), 4)      # Phi(1) for every gate
  0.8413
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import _checks
from xattr.models import MLP
from xattr.selection import baselines as selection_baselines
from xattr.selection import predictor as predictor_lib

__all__ = ["Autoencoder", "StochasticGates", "ConcreteTopK", "gate_penalty", "feature_mask", "group_variable",
           "loss_fn", "TASKS"]

TASKS = ("reconstruct", "joint", "classify")


def gate_penalty(mu: jax.Array, sigma: float) -> jax.Array:
  """``mean_j Phi((mu_j + 0.5) / sigma)``: the expected fraction of open stochastic gates.

  Its gradient is ``phi((mu_j + 0.5) / sigma) / (sigma * p)`` (phi the standard normal density).

  Example:
    >>> float(gate_penalty(jnp.array([-0.5]), 0.5))
    0.5
  """
  return jnp.mean(jax.scipy.stats.norm.cdf((mu + 0.5) / sigma))


def group_variable(groups: np.ndarray | None, num_features: int) -> tuple[predictor_lib.GroupMatrix | None, int]:
  """The group matrix as module state (or None) and the number of players it defines.

  Example:
    >>> g, p = group_variable(np.array([[1, 1, 0, 0], [0, 0, 1, 1]]), 4)
    >>> p, g[...].shape
    (2, (2, 4))
  """
  if groups is None:
    return None, num_features
  g = np.asarray(groups)
  if g.ndim != 2 or g.shape[1] != num_features or g.shape[0] == 0:
    raise ValueError(f"groups must be a 0/1 matrix [num_groups, num_features={num_features}], got shape {g.shape}.")
  if not np.isin(g, (0, 1)).all():
    raise ValueError("groups must hold only 0/1 (or False/True) entries.")
  if not g.any(0).all():
    raise ValueError(f"groups must cover every feature; features {np.flatnonzero(~g.any(0)).tolist()[:10]} belong "
                     f"to no group.")
  return predictor_lib.GroupMatrix(jnp.asarray(g, jnp.float32)), int(g.shape[0])


def feature_mask(groups: predictor_lib.GroupMatrix | None, mask: jax.Array) -> jax.Array:
  """Player mask float[..., p] -> feature mask float[..., d] (identity without groups).

  Example:
    >>> g, _ = group_variable(np.array([[1, 1, 0], [0, 0, 1]]), 3)
    >>> feature_mask(g, jnp.array([0.0, 1.0])).tolist()
    [0.0, 0.0, 1.0]
  """
  return mask if groups is None else jnp.minimum(mask @ groups[...], 1.0)


class Autoencoder(nnx.Module):
  """An MLP autoencoder: ``encoder: d -> hidden -> code_size``, ``decoder: code_size -> reversed hidden -> d``.

  Example:
    >>> ae = Autoencoder(6, 2, (8,), rngs=nnx.Rngs(0))
    >>> ae.encoder(jnp.ones((3, 6))).shape, ae(jnp.ones((3, 6))).shape
    ((3, 2), (3, 6))
  """

  def __init__(self, num_features: int, code_size: int, hidden_sizes: Sequence[int], *, rngs: nnx.Rngs):
    d = _checks.positive_int("num_features", num_features)
    k = _checks.positive_int("code_size", code_size)
    self.encoder = MLP(d, tuple(hidden_sizes), k, rngs=rngs)
    self.decoder = MLP(k, tuple(hidden_sizes)[::-1], d, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.decoder(self.encoder(x))


class StochasticGates(nnx.Module):
  """Stochastic gates over p players (see the module docstring); ``groups`` maps players to features.

  Example:
    >>> g = StochasticGates(4, rngs=nnx.Rngs(0))
    >>> z = g.sample(jax.random.key(1))
    >>> z.shape, bool((z >= 0).all() and (z <= 1).all())
    ((4,), True)
  """

  def __init__(self, num_players: int, *, sigma: float = 0.5, groups: predictor_lib.GroupMatrix | None = None,
               rngs: nnx.Rngs):
    p = _checks.positive_int("num_players", num_players)
    if not sigma > 0:
      raise ValueError(f"sigma must be > 0, got {sigma}.")
    self.mu = nnx.Param(0.01 * jax.random.normal(rngs.params(), (p,)))
    self.sigma = float(sigma)
    self.groups = groups

  def sample(self, key: jax.Array) -> jax.Array:
    """One relaxed gate vector float[p] for a minibatch."""
    eps = jax.random.normal(key, self.mu.shape)
    return jnp.clip(self.mu[...] + 0.5 + self.sigma * eps, 0.0, 1.0)

  def penalty(self) -> jax.Array:
    return gate_penalty(self.mu[...], self.sigma)

  def scores(self) -> np.ndarray:
    """Per-player scores (``mu``; higher = kept)."""
    return np.asarray(self.mu[...])


class ConcreteTopK(nnx.Module):
  """k Concrete rows over p players with an exponentially decaying temperature (see the module docstring).

  Example:
    >>> c = ConcreteTopK(2, 5, num_steps=10, rngs=nnx.Rngs(0))
    >>> m = c.sample(jax.random.key(0))
    >>> m.shape, len(c.selection())
    ((5,), 2)
  """

  def __init__(self, num_selected: int, num_players: int, *, num_steps: int, start_temperature: float = 10.0,
               end_temperature: float = 0.01, groups: predictor_lib.GroupMatrix | None = None, rngs: nnx.Rngs):
    _checks.positive_int("num_steps", num_steps)
    if not 0 < end_temperature <= start_temperature:
      raise ValueError(f"temperatures must satisfy 0 < end_temperature <= start_temperature, got "
                       f"{start_temperature} -> {end_temperature}.")
    self.layer = selection_baselines.ConcreteSelector(num_selected, num_players, rngs=rngs)
    self.schedule = predictor_lib.Scalar(jnp.array([start_temperature, end_temperature, num_steps], jnp.float32))
    self.groups = groups

  def temperature(self) -> jax.Array:
    start, end, total = self.schedule[...]
    return start * (end / start) ** jnp.minimum(self.layer.step[...] / total, 1.0)

  def sample(self, key: jax.Array) -> jax.Array:
    """The relaxed union mask float[p] for a minibatch (advances the temperature schedule)."""
    m = self.layer(key, 1, self.temperature())[0]
    self.layer.step[...] = self.layer.step[...] + 1
    return m

  def penalty(self) -> jax.Array:
    return jnp.zeros(())

  def scores(self) -> np.ndarray:
    """Per-player scores: the largest selection probability any row gives the player."""
    return np.asarray(jax.nn.softmax(self.layer.logits[...], axis=-1).max(0))

  def selection(self) -> np.ndarray:
    """Exactly k distinct players (rows in order of confidence)."""
    return selection_baselines.cae_selection(np.asarray(self.layer.logits[...]))


def _mse(pred: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(pred - x))


@functools.lru_cache(maxsize=None)
def loss_fn(task: str):
  """The training objective ``(bundle, batch) -> (loss, metrics)`` of a task in :data:`TASKS` (one object per
  task, so :func:`xattr.training.train` reuses its compiled step across runs of the same architecture).

  The bundle (:class:`xattr.selection.predictor.Bundle`) holds ``selector``, ``net``, ``rngs``, the penalty
  weight ``lam`` and, for ``"joint"``, ``encoder``. Batches: ``{"x"[, "code"]}`` (reconstruct), ``{"x",
  "background"}`` (joint), ``{"x", "y"}`` (classify).

  Example:
    >>> loss_fn("reconstruct") is loss_fn("reconstruct")
    True
  """
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}.")

  def objective(b: predictor_lib.Bundle, batch):
    m = b.selector.sample(b.rngs())
    x = batch["x"]
    xs = x * feature_mask(b.selector.groups, m)
    if task == "classify":
      fit = predictor_lib.cross_entropy(b.net(xs), batch["y"]).mean()
    elif task == "joint":
      xb = batch["background"]
      code_t = jax.lax.stop_gradient(b.encoder(x))
      fit = _mse(b.net(jnp.concatenate([code_t, xs], -1)), x)
      fit = fit + _mse(b.net(jnp.concatenate([b.encoder(xb), jnp.zeros_like(xb)], -1)), xb)
    else:
      inputs = jnp.concatenate([batch["code"], xs], -1) if "code" in batch else xs
      fit = _mse(b.net(inputs), x)
    penalty = b.selector.penalty()
    return fit + b.lam[...] * penalty, {"fit": fit, "penalty": penalty, "open": jnp.mean(m > 0)}

  return objective
