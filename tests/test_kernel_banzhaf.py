"""banzhaf.kernel_banzhaf: Kernel Banzhaf regression with third-order covariates (issue 13, Banzhaf half)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import smooth_game, third_order_game
from xattr import banzhaf

KEY = jax.random.key(0)


def _mse(est, truth):
  return float(jnp.mean((est.values - truth) ** 2))


def test_a_third_order_game_is_recovered_where_msr_is_not():
  d, n = 8, 128
  v = third_order_game(d)
  truth = banzhaf.exact(v, d)
  keys = jax.random.split(KEY, 5)
  kb = [float(jnp.abs(banzhaf.kernel_banzhaf(v, d, k, num_samples=n).values - truth).max()) for k in keys]
  mc = [float(jnp.abs(banzhaf.msr(v, d, k, num_samples=n).values - truth).max()) for k in keys]
  assert max(kb) < 0.08, kb           # ridges >= 1e-2 (walsh.RIDGE_GRID): 0.02-0.06 here
  assert np.mean(kb) < 0.1 * np.mean(mc), (kb, mc)


@pytest.mark.parametrize("interactions, factor", [(False, 0.5), (True, 0.2)])
def test_more_accurate_than_msr_at_equal_evaluations(interactions, factor):
  d, n = 10, 300
  v = smooth_game(d, scale=0.5)
  truth = banzhaf.exact(v, d)
  keys = jax.random.split(KEY, 20)
  kb = jax.jit(jax.vmap(lambda k: banzhaf.kernel_banzhaf(v, d, k, num_samples=n, interactions=interactions)))(keys)
  mc = jax.jit(jax.vmap(lambda k: banzhaf.msr(v, d, k, num_samples=n)))(keys)
  assert int(kb.num_evals[0]) == int(mc.num_evals[0]) == n
  assert _mse(kb, truth) < factor * _mse(mc, truth), (_mse(kb, truth), _mse(mc, truth))


def test_third_order_covariates_lower_the_error_of_plain_kernel_banzhaf():
  d, n = 10, 400
  v = smooth_game(d)
  truth = banzhaf.exact(v, d)
  keys = jax.random.split(KEY, 20)
  run = lambda inter: jax.jit(jax.vmap(lambda k: banzhaf.kernel_banzhaf(v, d, k, num_samples=n,
                                                                         interactions=inter)))(keys)
  assert _mse(run(True), truth) < 0.7 * _mse(run(False), truth)


@pytest.mark.parametrize("interactions", [False, True])
def test_std_is_calibrated_over_seeds(interactions):
  d, n = 10, 300
  v = smooth_game(d)
  truth = banzhaf.exact(v, d)
  est = jax.jit(jax.vmap(lambda k: banzhaf.kernel_banzhaf(v, d, k, num_samples=n, interactions=interactions)))(
      jax.random.split(KEY, 60))
  ratio = float(jnp.sqrt(jnp.mean(est.std ** 2) / jnp.mean((est.values - truth) ** 2)))
  assert 0.6 < ratio < 1.6, ratio


def test_pairs_are_distinct_so_all_but_one_pair_is_nearly_exact():
  # Without replacement, 31 of the 32 pairs of d = 6 leave one unseen: the finite-population std collapses.
  d = 6
  v = smooth_game(d)
  truth = banzhaf.exact(v, d)
  near = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=62, interactions=False)
  half = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=32, interactions=False)
  assert float(near.std.max()) < 0.25 * float(half.std.max())
  assert float(jnp.abs(near.values - truth).max()) < 0.25 * float(jnp.abs(half.values - truth).max()) + 1e-6


def test_full_budget_is_exact_with_zero_std():
  d = 6
  v = smooth_game(d)
  est = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=2 ** d)
  np.testing.assert_allclose(est.values, banzhaf.exact(v, d), atol=1e-6)
  assert float(est.std.max()) == 0.0 and bool(est.converged) and int(est.num_evals) == 2 ** d


def test_vector_games_columns_and_keys_are_deterministic():
  d = 8
  v1, v2 = smooth_game(d), third_order_game(d)
  vec = lambda m: jnp.stack([v1(m), v2(m)], -1)
  est = banzhaf.kernel_banzhaf(vec, d, KEY, num_samples=120, interactions=False)
  assert est.values.shape == est.std.shape == (d, 2)
  one = banzhaf.kernel_banzhaf(v1, d, KEY, num_samples=120, interactions=False)
  np.testing.assert_allclose(est.values[:, 0], one.values, rtol=1e-5, atol=1e-6)
  again = banzhaf.kernel_banzhaf(vec, d, KEY, num_samples=120, interactions=False)
  other = banzhaf.kernel_banzhaf(vec, d, jax.random.key(1), num_samples=120, interactions=False)
  np.testing.assert_array_equal(est.values, again.values)
  assert not np.allclose(est.values, other.values)


def test_fixed_ridge_and_grad_through_the_values():
  d = 8
  v = third_order_game(d)
  a = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=60, ridge=1.0).values
  b = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=60, ridge=1e-3).values
  assert not np.allclose(a, b)
  # The values are linear in the game: d/ds of kernel_banzhaf(s * v) is kernel_banzhaf(v).
  grad = jax.grad(lambda s: banzhaf.kernel_banzhaf(lambda m: s * v(m), d, KEY, num_samples=60).values.sum())(2.0)
  np.testing.assert_allclose(grad, float(banzhaf.kernel_banzhaf(v, d, KEY, num_samples=60).values.sum()), rtol=1e-4)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_players=2, num_samples=64), "num_players"),
    (dict(num_players=8, num_samples=65), "num_samples must be even"),
    (dict(num_players=8, num_samples=64, ridge=-1.0), "ridge"),
    (dict(num_players=12, num_samples=24), "num_samples=24 is too few"),
])
def test_bad_arguments_name_themselves(kwargs, fragment):
  v = lambda m: m.astype(jnp.float32).sum(-1)
  with pytest.raises(ValueError, match=fragment):
    banzhaf.kernel_banzhaf(v, key=KEY, **kwargs)
