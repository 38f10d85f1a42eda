"""Banzhaf, leave-one-out and LIME against enumeration and closed forms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import table_game
from xattr import banzhaf, lime, loo

KEY = jax.random.key(0)


def brute_force_banzhaf(values):
  d = int(np.log2(values.shape[0]))
  phi = np.zeros((d,) + values.shape[1:])
  for i in range(d):
    for s in range(2 ** d):
      if not s >> i & 1:
        phi[i] += values[s | 1 << i] - values[s]
  return phi / 2 ** (d - 1)


def test_exact_banzhaf_matches_brute_force(random_table):
  values, _ = random_table
  np.testing.assert_allclose(banzhaf.exact(table_game(values), 6, batch_size=8), brute_force_banzhaf(values),
                             atol=1e-5)


def test_exact_banzhaf_null_and_symmetric_players():
  # v depends on players 0 and 1 only through "both kept", player 2 is null.
  v = lambda m: (m[:, 0] & m[:, 1]).astype(jnp.float32) * 3.0
  phi = np.asarray(banzhaf.exact(v, 3))
  np.testing.assert_allclose(phi, [1.5, 1.5, 0.0], atol=1e-6)


def test_msr_matches_exact_within_reported_std(random_table):
  values, _ = random_table
  exact = brute_force_banzhaf(values)
  est = banzhaf.msr(table_game(values), 6, KEY, num_samples=20000, batch_size=1000)
  assert est.values.shape == (6, 2)
  assert np.all(np.abs(np.asarray(est.values) - exact) < 5 * np.asarray(est.std))
  assert int(est.num_evals) == 20000


def test_msr_std_calibrated_across_seeds(random_table):
  values, _ = random_table
  game = table_game(values[:, 1])
  run = lambda k: banzhaf.msr(game, 6, k, num_samples=512, batch_size=128)
  est = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(7), 200))
  observed = np.asarray(est.values).std(0, ddof=1)
  reported = np.sqrt(np.mean(np.asarray(est.std) ** 2, 0))
  ratio = np.sqrt(np.mean(observed ** 2) / np.mean(reported ** 2))
  assert 0.8 < ratio < 1.2, ratio


def test_msr_convergence_mode():
  v = lambda m: m.astype(jnp.float32) @ jnp.array([1.0, 2.0, 3.0, 4.0])
  est = banzhaf.msr(v, 4, KEY, threshold=0.02, batch_size=256)
  assert bool(est.converged)
  assert float(est.std.max()) / float(np.ptp(np.asarray(est.values))) < 0.02


def test_leave_one_out_closed_form():
  w = jnp.array([1.0, -1.0, 2.0])
  v = lambda m: jnp.stack([m.astype(jnp.float32) @ w, jnp.all(m, 1).astype(jnp.float32)], -1)
  np.testing.assert_allclose(loo.leave_one_out(v, 3), [[1.0, 1.0], [-1.0, 1.0], [2.0, 1.0]])


def test_lime_recovers_linear_game_and_matches_weighted_least_squares():
  rng = np.random.default_rng(3)
  w = rng.normal(size=5)
  linear = lambda m: m.astype(jnp.float32) @ jnp.asarray(w, jnp.float32) + 0.3
  est = lime.lime(linear, 5, KEY, num_samples=200)
  np.testing.assert_allclose(est.values, w, atol=1e-4)
  # A non-linear game: compare with numpy's weighted least squares on the same samples.
  table = rng.normal(size=2 ** 5)
  game = table_game(table)
  est = lime.lime(game, 5, KEY, num_samples=300, kernel_width=0.75)
  from xattr import masks
  z = np.asarray(masks.uniform_cardinality(KEY, 5, 300)).copy()
  z[0] = True
  y = table[(z * 2 ** np.arange(5)).sum(1)]
  wts = np.exp(-(1 - np.sqrt(z.sum(1) / 5)) ** 2 / 0.75 ** 2)
  x = np.c_[np.ones(300), z]
  beta = np.linalg.lstsq(x * np.sqrt(wts)[:, None], y * np.sqrt(wts), rcond=None)[0]
  np.testing.assert_allclose(est.values, beta[1:], atol=1e-4)


def test_lime_too_few_samples():
  with pytest.raises(ValueError, match="num_samples=4 is too few"):
    lime.lime(lambda m: m.sum(1).astype(jnp.float32), 5, KEY, num_samples=4)
