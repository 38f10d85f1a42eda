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
