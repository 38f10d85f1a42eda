"""The stochastic marginal game: unbiased per coalition, and KernelSHAP on it unbiased with a calibrated std."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xattr import games, shapley

D, M = 6, 32


def _setup():
  rng = np.random.default_rng(7)
  w1 = jnp.asarray(rng.normal(size=(D, 12)) * 2 / np.sqrt(D), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=12), jnp.float32)
  model = lambda b: jnp.tanh(b @ w1) @ w2
  x = jnp.asarray(rng.normal(size=D), jnp.float32)
  background = jnp.asarray(rng.normal(size=(M, D)), jnp.float32)
  return model, x, background


MODEL, X, BACKGROUND = _setup()
ALL_MASKS = jnp.asarray(list(itertools.product([False, True], repeat=D)))


def test_call_is_the_exact_marginal_game():
  v = games.stochastic_marginal(MODEL, X, BACKGROUND)
  np.testing.assert_allclose(v(ALL_MASKS), games.marginal(MODEL, X, BACKGROUND)(ALL_MASKS), rtol=1e-6, atol=1e-6)


def test_each_sample_is_one_background_rows_value():
  """With rows=1 every sampled value is f(x_z, b_j) for some background row j of that coalition."""
  v = games.stochastic_marginal(MODEL, X, BACKGROUND)
  per_row = np.asarray(jax.vmap(lambda b: games.baseline(MODEL, X, b)(ALL_MASKS))(BACKGROUND)).T   # [2^d, m]
  drawn = np.asarray(games.sample(v, ALL_MASKS, jax.random.key(0)))
  gap = np.abs(per_row - drawn[:, None]).min(1)
  assert gap.max() < 1e-5, gap.max()


def test_sample_mean_over_keys_equals_the_game_on_every_coalition():
  v = games.stochastic_marginal(MODEL, X, BACKGROUND, rows=2)
  draws = jax.jit(jax.vmap(lambda k: games.sample(v, ALL_MASKS, k)))(jax.random.split(jax.random.key(1), 4000))
  draws = np.asarray(draws)
  exact = np.asarray(v(ALL_MASKS))
  se = draws.std(0, ddof=1) / np.sqrt(len(draws))
  # 1e-4: float32 rounding of a 4000-draw mean where a coalition has (almost) no spread, e.g. the grand one.
  assert np.all(np.abs(draws.mean(0) - exact) <= 5 * se + 1e-4), np.abs(draws.mean(0) - exact).max()


def test_pairs_in_a_group_share_their_row():
  """For an additive model a pair (z, 1 - z) on one shared row b sums to f(x) + f(b) exactly."""
  f = lambda b: b.sum(-1)
  v = games.stochastic_marginal(f, X, BACKGROUND)
  z = ALL_MASKS[1:9]
  pairs = jnp.stack([z, ~z], 1).reshape(-1, D)
  out = np.asarray(games.sample(v, pairs, jax.random.key(3), group=2)).reshape(-1, 2).sum(1)
  candidates = float(X.sum()) + np.asarray(BACKGROUND.sum(1))
  assert np.abs(out[:, None] - candidates[None]).min(1).max() < 1e-5


def test_wrappers_stay_stochastic_and_report_their_speedup():
  v = games.stochastic_marginal(MODEL, X, BACKGROUND, rows=4)
  groups = jnp.asarray(np.kron(np.eye(3, dtype=bool), np.ones((1, 2), bool)))
  assert games.is_stochastic(games.grouped(v, groups)) and games.sample_speedup(games.grouped(v, groups)) == 8
  assert not games.is_stochastic(games.marginal(MODEL, X, BACKGROUND))
  assert games.sample_speedup(games.marginal(MODEL, X, BACKGROUND)) == 1
  g = games.grouped(v, groups)
  z = jnp.asarray([[True, False, True]])
  draws = np.asarray(jax.vmap(lambda k: games.sample(g, z, k))(jax.random.split(jax.random.key(2), 3000)))
  assert abs(draws.mean() - float(g(z)[0])) < 5 * draws.std() / np.sqrt(len(draws))


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="link must be None or 'identity'"):
    games.stochastic_marginal(MODEL, X, BACKGROUND, link="logit")
  with pytest.raises(ValueError, match=r"rows must be in \[1, 32\].*got 33"):
    games.stochastic_marginal(MODEL, X, BACKGROUND, rows=33)
  with pytest.raises(ValueError, match="whole groups of group=2"):
    games.sample(games.stochastic_marginal(MODEL, X, BACKGROUND), ALL_MASKS[:3], jax.random.key(0), group=2)


@pytest.mark.parametrize("exact_a,enumerate_sizes", [(False, 0), (False, None), (True, 0)])
def test_kernel_shap_is_unbiased_with_a_calibrated_std(exact_a, enumerate_sizes):
  """Over 200 seeds the estimates centre on the exact marginal Shapley values and their spread matches the std."""
  v = games.stochastic_marginal(MODEL, X, BACKGROUND)
  phi = np.asarray(shapley.exact(games.marginal(MODEL, X, BACKGROUND), D))
  run = lambda k: shapley.kernel_shap(v, D, k, num_samples=512, batch_size=128, exact_a=exact_a,
                                      enumerate_sizes=enumerate_sizes)
  est = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(11), 200))
  values = np.asarray(est.values)
  observed = values.std(0, ddof=1)
  reported = np.sqrt(np.mean(np.asarray(est.std) ** 2, 0))
  ratio = np.sqrt(np.mean(observed ** 2) / np.mean(reported ** 2))
  assert 0.8 < ratio < 1.2, (ratio, observed, reported)
  assert np.abs(values.mean(0) - phi).max() < 4 * observed.max() / np.sqrt(200) + 2e-3
  # The rows' noise is real: the same budget on the exact game has a smaller spread.
  exact_game = games.marginal(MODEL, X, BACKGROUND)
  exact_run = lambda k: shapley.kernel_shap(exact_game, D, k, num_samples=512, batch_size=128, exact_a=exact_a,
                                            enumerate_sizes=enumerate_sizes)
  spread = np.asarray(jax.jit(jax.vmap(exact_run))(jax.random.split(jax.random.key(11), 200)).values).std(0)
  assert np.mean(observed ** 2) > 1.2 * np.mean(spread ** 2)


def test_kernel_shap_same_key_same_result_and_efficiency():
  v = games.stochastic_marginal(MODEL, X, BACKGROUND)
  a = shapley.kernel_shap(v, D, jax.random.key(5), num_samples=256)
  b = shapley.kernel_shap(games.stochastic_marginal(MODEL, X, BACKGROUND), D, jax.random.key(5), num_samples=256)
  c = shapley.kernel_shap(v, D, jax.random.key(6), num_samples=256)
  np.testing.assert_array_equal(a.values, b.values)
  assert not np.allclose(a.values, c.values)
  full = v(jnp.ones((1, D), bool)) - v(jnp.zeros((1, D), bool))      # v(1), v(0) stay exact
  np.testing.assert_allclose(float(a.values.sum()), float(full[0]), rtol=1e-5, atol=1e-5)


def test_sampled_coalitions_cost_rows_model_rows_and_enumerated_ones_stay_exact():
  """The model sees batch_size x rows rows for sampled batches and batch x m rows for the exact coalitions."""
  seen = []

  def model(b):
    seen.append(b.shape[0])
    return MODEL(b)

  v = games.stochastic_marginal(model, X, BACKGROUND, rows=2)
  shapley.kernel_shap(v, D, jax.random.key(0), num_samples=300, batch_size=50, enumerate_sizes=1)
  assert 50 * 2 in seen                           # sampled batches: 2 rows per coalition
  assert 12 * M in seen and 2 * M in seen         # sizes 1 and 5 (12 coalitions), then v(1), v(0): exact
  assert max(seen) <= 50 * M


def test_convergence_mode_stops_and_covers_the_exact_values():
  v = games.stochastic_marginal(MODEL, X, BACKGROUND)
  est = shapley.kernel_shap(v, D, jax.random.key(9), num_samples=None, batch_size=256, threshold=0.02,
                            max_samples=2 ** 15)
  phi = np.asarray(shapley.exact(games.marginal(MODEL, X, BACKGROUND), D))
  assert bool(est.converged)
  assert np.all(np.abs(np.asarray(est.values) - phi) < 5 * np.asarray(est.std) + 1e-3)
