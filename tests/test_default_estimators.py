"""shapley.estimate and banzhaf.estimate, the recommended default estimators (issue 13: the default is the most
accurate one available, keeping convergence mode and stochastic games), and their registered methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import smooth_game
from xattr import banzhaf, games, methods, shapley

KEY = jax.random.key(3)


def _additive(d):
  w = jnp.arange(1.0, d + 1.0)
  return lambda m: m.astype(jnp.float32) @ w


def test_the_choice_follows_the_static_arguments():
  v = _additive(10)
  stochastic = games.stochastic_marginal(lambda b: b.sum(-1), jnp.ones(10), jnp.zeros((16, 10)))
  assert shapley.estimator_for(v, 10, 512) == "odd_kernel_shap"
  assert shapley.estimator_for(v, 10, None) == "kernel_shap"                       # convergence mode
  assert shapley.estimator_for(stochastic, 10, 512) == "kernel_shap"              # few-row evaluations
  assert shapley.estimator_for(v, 10, shapley.ODD_MAX_SAMPLES) == "odd_kernel_shap"
  assert shapley.estimator_for(v, 10, shapley.ODD_MAX_SAMPLES + 2) == "kernel_shap"
  assert shapley.estimator_for(_additive(2), 2, 2) == "kernel_shap"               # d < 3
  assert shapley.estimator_for(_additive(30), 30, 40) == "kernel_shap"            # below odd's minimum
  with pytest.raises(ValueError, match="num_players"):
    shapley.estimator_for(v, 0, 512)


@pytest.mark.parametrize("num_samples", [64, None])
def test_it_returns_the_chosen_estimators_result(num_samples):
  d = 8
  v = smooth_game(d)
  got = shapley.estimate(v, d, KEY, num_samples=num_samples, batch_size=64)
  if num_samples is None:
    want = shapley.kernel_shap(v, d, KEY, num_samples=None, batch_size=64)
  else:
    want = shapley.odd_kernel_shap(v, d, KEY, num_samples=num_samples, batch_size=64)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_small_budgets_fall_back_to_the_unbiased_kernel_shap():
  d = 30
  v = _additive(d)
  got = shapley.estimate(v, d, KEY, num_samples=40)
  want = shapley.kernel_shap(v, d, KEY, num_samples=40, exact_a=True)
  np.testing.assert_array_equal(got.values, want.values)


def test_jit_vmap_and_accuracy_on_a_smooth_game():
  """Under jit + vmap over keys, at 128 evaluations on a smooth 10-player game, the default's error is below half
  of kernel_shap's (its former default) over 12 keys."""
  d = 10
  v = smooth_game(d)
  truth = shapley.exact(v, d)
  keys = jax.random.split(KEY, 12)
  run = lambda f: jax.jit(jax.vmap(lambda k: f(v, d, k, num_samples=126)))(keys)
  default = run(shapley.estimate)
  old = run(shapley.kernel_shap)
  err = lambda est: float(jnp.mean(jnp.sum((est.values - truth) ** 2, -1)))
  assert err(default) < 0.5 * err(old), (err(default), err(old))
  assert int(default.num_evals[0]) == 128


def test_registered_method_spends_the_budget():
  d = 8
  problem = methods.Problem(game=smooth_game(d), num_players=d)
  assert methods.settings_for("shapley", d, 100) == {"num_samples": 98}
  assert methods.evaluations("shapley", d, {"num_samples": 98}) == 100
  est = methods.attribute("shapley", problem, KEY, budget=100)
  want = shapley.odd_kernel_shap(problem.game, d, KEY, num_samples=98)
  np.testing.assert_array_equal(est.values, want.values)
  with pytest.raises(ValueError, match="budget must be >= 4"):
    methods.settings_for("shapley", d, 3)


def test_banzhaf_choice_and_results():
  d = 8
  v = smooth_game(d)
  assert banzhaf.estimator_for(d, 64) == "kernel_banzhaf"
  assert banzhaf.estimator_for(d, None) == "msr"
  assert banzhaf.estimator_for(d, 2 * (d + 2) - 2) == "msr"                       # below kernel_banzhaf's minimum
  assert banzhaf.estimator_for(d, 63) == "msr"                                    # odd: no complementary pairs
  assert banzhaf.estimator_for(14, banzhaf.MAX_FIT_SAMPLES + 2) == "msr"
  assert banzhaf.estimator_for(12, 2 ** 12 + 2) == "kernel_banzhaf"               # enumerates: exact
  assert banzhaf.estimator_for(2, 64) == "msr"
  got = banzhaf.estimate(v, d, KEY, num_samples=64, batch_size=32)
  want = banzhaf.kernel_banzhaf(v, d, KEY, num_samples=64, batch_size=32)
  np.testing.assert_array_equal(got.values, want.values)
  got = banzhaf.estimate(v, d, KEY, threshold=0.05, max_samples=2048)
  want = banzhaf.msr(v, d, KEY, threshold=0.05, max_samples=2048)
  np.testing.assert_array_equal(got.values, want.values)


def test_banzhaf_default_is_more_accurate_than_msr_under_jit():
  d = 10
  v = smooth_game(d)
  truth = banzhaf.exact(v, d)
  keys = jax.random.split(KEY, 12)
  run = lambda f: jax.jit(jax.vmap(lambda k: f(v, d, k, num_samples=128)))(keys)
  err = lambda est: float(jnp.mean(jnp.sum((est.values - truth) ** 2, -1)))
  assert err(run(banzhaf.estimate)) < 0.2 * err(run(banzhaf.msr))


def test_registered_banzhaf_method():
  d = 8
  problem = methods.Problem(game=smooth_game(d), num_players=d)
  est = methods.attribute("banzhaf", problem, KEY, budget=100)
  np.testing.assert_array_equal(est.values, banzhaf.kernel_banzhaf(problem.game, d, KEY, num_samples=100).values)
  assert methods.evaluations("banzhaf", d, {"num_samples": 100}) == 100
  assert methods.evaluations("banzhaf", d, {"num_samples": 1000}) == 256          # kernel_banzhaf enumerates
