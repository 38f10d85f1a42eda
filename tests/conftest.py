"""Shared fixtures: small games with known answers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


def table_game(values: np.ndarray):
  """A game given by a value table over all 2^d coalitions (index = bitmask, bit i = player i)."""
  table = jnp.asarray(values, jnp.float32)
  d = int(np.log2(table.shape[0]))
  powers = 2 ** jnp.arange(d)

  def game(mask):
    return table[(mask.astype(jnp.int32) * powers).sum(-1)]

  return game


def brute_force_shapley(values: np.ndarray) -> np.ndarray:
  """Shapley values by averaging marginal contributions over all d! orderings (float64, numpy)."""
  d = int(np.log2(values.shape[0]))
  phi = np.zeros((d,) + values.shape[1:])
  orders = list(itertools.permutations(range(d)))
  for order in orders:
    coalition = 0
    for player in order:
      phi[player] += values[coalition | (1 << player)] - values[coalition]
      coalition |= 1 << player
  return phi / len(orders)


@pytest.fixture
def random_table():
  """Random game on 6 players, vector-valued with 2 outputs, plus the exact Shapley values."""
  rng = np.random.default_rng(0)
  values = rng.normal(size=(2 ** 6, 2))
  return values, brute_force_shapley(values)


def third_order_game(d: int):
  """Additive + two three-way AND terms: its odd part lies in the span of first- and third-order Walsh terms."""
  w = jnp.linspace(-1.0, 2.0, d)
  return lambda m: (m.astype(jnp.float32) @ w + 3.0 * (m[:, 0] & m[:, 1] & m[:, 2])
                    - 2.0 * (m[:, 3] & m[:, 4] & m[:, d - 1]))


def smooth_game(d: int, scale: float = 1.0):
  """A saturating model of all players: every order present, decaying (like a small MLP)."""
  w = scale * jax.random.normal(jax.random.key(7), (d,))
  u = scale * jax.random.normal(jax.random.key(8), (d,))
  return lambda m: jnp.tanh(m.astype(jnp.float32) @ w) * jax.nn.sigmoid(m.astype(jnp.float32) @ u)
