"""odd_kernel_shap: KernelSHAP with a third-order Walsh kernel (issue 13, sample efficiency)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import smooth_game, third_order_game
from xattr import shapley

KEY = jax.random.key(0)


def test_a_third_order_game_is_recovered_where_kernel_shap_is_not():
  d, n = 8, 200
  v = third_order_game(d)
  truth = shapley.exact(v, d)
  keys = jax.random.split(KEY, 5)
  odd = [float(jnp.abs(shapley.odd_kernel_shap(v, d, k, num_samples=n).values - truth).max()) for k in keys]
  ks = [float(jnp.abs(shapley.kernel_shap(v, d, k, num_samples=n).values - truth).max()) for k in keys]
  assert max(odd) < 0.02, odd
  assert np.mean(odd) < 0.1 * np.mean(ks), (odd, ks)


def test_more_accurate_than_kernel_shap_on_a_smooth_game_at_equal_evaluations():
  d, n = 10, 300
  v = smooth_game(d, scale=0.5)
  truth = shapley.exact(v, d)
  keys = jax.random.split(KEY, 20)
  odd = jax.jit(jax.vmap(lambda k: shapley.odd_kernel_shap(v, d, k, num_samples=n)))(keys)
  ks = jax.jit(jax.vmap(lambda k: shapley.kernel_shap(v, d, k, num_samples=n)))(keys)
  assert int(odd.num_evals[0]) == int(ks.num_evals[0]) == n + 2
  mse = lambda est: float(jnp.mean((est.values - truth) ** 2))
  assert mse(odd) < 0.5 * mse(ks), (mse(odd), mse(ks))


def test_std_is_calibrated_over_seeds():
  d, n = 10, 300
  v = smooth_game(d)
  truth = shapley.exact(v, d)
  est = jax.jit(jax.vmap(lambda k: shapley.odd_kernel_shap(v, d, k, num_samples=n)))(jax.random.split(KEY, 60))
  ratio = float(jnp.sqrt(jnp.mean(est.std ** 2) / jnp.mean((est.values - truth) ** 2)))
  assert 0.6 < ratio < 1.6, ratio


def test_full_enumeration_is_exact_with_zero_std():
  d = 6
  v = smooth_game(d)
  est = shapley.odd_kernel_shap(v, d, KEY, num_samples=2 ** d - 2)
  np.testing.assert_allclose(est.values, shapley.exact(v, d), atol=1e-5)
  assert float(est.std.max()) == 0.0 and bool(est.converged) and int(est.num_evals) == 2 ** d


def test_vector_games_are_efficient_and_keys_deterministic():
  d = 8
  v1, v2 = smooth_game(d), third_order_game(d)
  vec = lambda m: jnp.stack([v1(m), v2(m)], -1)
  est = shapley.odd_kernel_shap(vec, d, KEY, num_samples=120)
  assert est.values.shape == est.std.shape == (d, 2)
  full, empty = vec(jnp.ones((1, d), bool))[0], vec(jnp.zeros((1, d), bool))[0]
  np.testing.assert_allclose(est.values.sum(0), full - empty, rtol=1e-5, atol=1e-5)
  again = shapley.odd_kernel_shap(vec, d, KEY, num_samples=120)
  other = shapley.odd_kernel_shap(vec, d, jax.random.key(1), num_samples=120)
  np.testing.assert_array_equal(est.values, again.values)
  assert not np.allclose(est.values, other.values)


def test_fixed_ridge_and_grad_through_the_values():
  d = 8
  v = third_order_game(d)
  a = shapley.odd_kernel_shap(v, d, KEY, num_samples=120, ridge=1.0).values
  b = shapley.odd_kernel_shap(v, d, KEY, num_samples=120, ridge=1e-3).values
  assert not np.allclose(a, b)
  scale = lambda s: shapley.odd_kernel_shap(lambda m: s * v(m), d, KEY, num_samples=120).values.sum()
  np.testing.assert_allclose(jax.grad(scale)(2.0), float(v(jnp.ones((1, d), bool))[0] - v(jnp.zeros((1, d), bool))[0]),
                             rtol=1e-4)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_players=2, num_samples=64), "num_players"),
    (dict(num_players=8, num_samples=65), "num_samples"),
    (dict(num_players=8, num_samples=64, ridge=-1.0), "ridge"),
    (dict(num_players=12, num_samples=24, enumerate_sizes=0), "num_samples=24 is too few"),
])
def test_bad_arguments_name_themselves(kwargs, fragment):
  v = lambda m: m.astype(jnp.float32).sum(-1)
  with pytest.raises(ValueError, match=fragment):
    shapley.odd_kernel_shap(v, key=KEY, **kwargs)
